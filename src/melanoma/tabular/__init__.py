"""ISIC 2024's tabular model: features (engineered, per patient, the leak guard) and gbdt (LightGBM
over folds, saved as a run directory the evaluation reads)."""
