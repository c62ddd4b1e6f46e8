"""ISIC 2024's tabular models: features (feature groups, the leak guard), boosters (LightGBM, XGBoost,
CatBoost behind one interface), bagging (samples, early stopping inside a fold), blend, and gbdt
(the folds, saved as a run directory the evaluation reads)."""
