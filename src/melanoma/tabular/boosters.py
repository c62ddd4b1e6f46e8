"""The three tree libraries the 2024 top teams used, behind one interface: LightGBM, XGBoost and
CatBoost, each fitted with optional early stopping, saved in its own text or JSON format (never
pickled) and read back to predict exactly what it predicted when fitted.

Parameters come as named presets per library (PRESETS):
- default: the untuned settings this toolkit has always used for LightGBM (the learning rate,
  leaves, sampling and rounds of `melanoma gbdt`'s options), and XGBoost / CatBoost of the same
  depth and sampling; the rare class weighed by negatives / positives, at most 50x;
- tuned: the tuned values the public 2024 tabular notebooks shared (rounded), with
  scale_pos_weight about 2.6-3.3 as the top teams had it after their own over- and under-sampling.

Categories: every categorical column is coded against the categories fixed when the run was
trained (`categories`, saved with the run), so a value unseen then is a gap, in every library.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd

LIBRARIES = ("lightgbm", "xgboost", "catboost")
EXTENSIONS = {"lightgbm": "txt", "xgboost": "json", "catboost": "json"}
PRESETS = {
    "default": {
        "lightgbm": {"subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.6, "reg_lambda": 1.0,
                     "min_child_samples": 20},
        "xgboost": {"max_depth": 6, "subsample": 0.8, "colsample_bytree": 0.6, "reg_lambda": 1.0},
        "catboost": {"depth": 6, "l2_leaf_reg": 3.0, "subsample": 0.8, "bootstrap_type": "Bernoulli"},
    },
    "tuned": {
        "lightgbm": {"learning_rate": 0.032, "num_leaves": 103, "max_depth": 4, "reg_alpha": 0.088,
                     "reg_lambda": 0.004, "colsample_bytree": 0.83, "colsample_bynode": 0.40,
                     "subsample": 0.77, "subsample_freq": 4, "min_child_samples": 85,
                     "scale_pos_weight": 2.8},
        "xgboost": {"learning_rate": 0.085, "max_depth": 6, "reg_lambda": 8.9, "reg_alpha": 0.68,
                    "subsample": 0.60, "colsample_bytree": 0.84, "colsample_bylevel": 0.55,
                    "colsample_bynode": 0.99, "scale_pos_weight": 3.3},
        "catboost": {"learning_rate": 0.069, "depth": 7, "l2_leaf_reg": 6.2, "subsample": 0.62,
                     "bootstrap_type": "Bernoulli", "min_data_in_leaf": 24, "scale_pos_weight": 2.6},
    },
}  # fmt: skip


def check_models(models: list[str]) -> None:
    """At least one library, each known, none twice."""
    unknown = [m for m in models if m not in LIBRARIES]
    if not models or unknown or len(set(models)) != len(models):
        raise ValueError(
            f"models must be one or more of {', '.join(LIBRARIES)} (each once), got {','.join(models) or 'none'}"
        )


def booster_file(library: str, bag: int) -> str:
    """A fold's file of one library's bag: lightgbm.txt for the first LightGBM bag (as a run of
    one LightGBM always was), lightgbm_1.txt, xgboost.json, catboost_2.json and so on."""
    suffix = "" if bag == 0 else f"_{bag}"
    return f"{library}{suffix}.{EXTENSIONS[library]}"


def categories_of(features: pd.DataFrame) -> dict[str, list[str]]:
    """The categories of each categorical column, as fixed at training."""
    return {
        c: [str(v) for v in features[c].cat.categories]
        for c in features.columns
        if isinstance(features[c].dtype, pd.CategoricalDtype)
    }


def coded(features: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """The features with every categorical column re-coded against the training categories."""
    out = features.copy()
    for c, values in categories.items():
        text = out[c].astype("string").astype(object)
        out[c] = pd.Categorical(text.where(text.isin(values), None), categories=values)
    return out


def _catboost_frame(features: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """CatBoost reads categories as strings (no gaps): an unseen value becomes "missing"."""
    out = features.copy()
    for c in categories:
        out[c] = out[c].astype(object).where(out[c].notna(), "missing").astype(str)
    return out


def _params(
    library: str,
    preset: str,
    rounds: int,
    settings: dict,
    weight: float,
    seed: int,
    chosen: dict | None = None,
) -> dict:
    """One library's constructor arguments: the preset's (or `chosen`, tuned ones), with the run's
    rounds and seed."""
    params = dict(PRESETS[preset][library] if chosen is None else chosen)
    if preset == "default" and chosen is None:
        params.setdefault("scale_pos_weight", weight)
        params["learning_rate"] = settings["learning_rate"]
        if library == "lightgbm":
            params.update(num_leaves=settings["num_leaves"], min_child_samples=settings["min_child_samples"])
            params.update(subsample=settings["subsample"], colsample_bytree=settings["colsample_bytree"])
            params["reg_lambda"] = settings["reg_lambda"]
    if library == "lightgbm":
        params.update(n_estimators=rounds, random_state=seed, n_jobs=0, verbose=-1)
        params.update(deterministic=True, force_row_wise=True)
    elif library == "xgboost":
        params.update(n_estimators=rounds, random_state=seed, tree_method="hist", enable_categorical=True)
        params.update(n_jobs=0, eval_metric="logloss", max_cat_to_onehot=1)
    else:
        params.update(iterations=rounds, random_seed=seed, verbose=False, thread_count=-1)
        params.update(loss_function="Logloss", allow_writing_files=False)
    return params


def fit(
    library: str,
    preset: str,
    settings: dict,
    data: tuple[pd.DataFrame, np.ndarray],
    stop: tuple[pd.DataFrame, np.ndarray] | None,
    categories: dict[str, list[str]],
    seed: int,
    chosen: dict | None = None,
) -> object:
    """Fit one model on `data` (features, labels), stopping early on `stop` when given (after
    settings["early_stopping"] rounds without a better log loss), with the preset's parameters or
    `chosen` ones (tuning.py); returns the library's own predicting object (what load() returns)."""
    x, y = data
    rounds, patience = settings["n_estimators"], settings.get("early_stopping", 0)
    weight = min(50.0, (y == 0).sum() / max(int(y.sum()), 1))  # the rare class weighed up, at most 50x
    params = _params(library, preset, rounds, settings, weight, seed, chosen)
    stopping = stop is not None and patience > 0
    if library == "lightgbm":
        import lightgbm as lgb

        model = lgb.LGBMClassifier(**params)
        named = "eval_X" in inspect.signature(model.fit).parameters  # LightGBM 4.7 renamed eval_set
        extra = {"eval_X": (stop[0],), "eval_y": (stop[1],)} if named and stopping else {"eval_set": [stop]}
        extra["callbacks"] = [lgb.early_stopping(patience, verbose=False)]
        model.fit(x, y, **(extra if stopping else {}))
        return model.booster_
    if library == "xgboost":
        import xgboost as xgb

        model = xgb.XGBClassifier(**params, early_stopping_rounds=patience if stopping else None)
        model.fit(x, y, **({"eval_set": [stop], "verbose": False} if stopping else {}))
        booster = model.get_booster()
        return booster[: model.best_iteration + 1] if stopping else booster
    from catboost import CatBoostClassifier

    model = CatBoostClassifier(**params, cat_features=list(categories) or None)
    frame = _catboost_frame(x, categories)
    if stopping:
        eval_set = (_catboost_frame(stop[0], categories), stop[1])
        model.fit(frame, y, eval_set=eval_set, early_stopping_rounds=patience, use_best_model=True)
    else:
        model.fit(frame, y)
    return model


def predict(
    library: str, model: object, features: pd.DataFrame, categories: dict[str, list[str]]
) -> np.ndarray:
    """Malignant probabilities of the rows (features coded as at training)."""
    if library == "lightgbm":
        return np.asarray(model.predict(features), dtype="float64")
    if library == "xgboost":
        import xgboost as xgb

        return np.asarray(model.predict(xgb.DMatrix(features, enable_categorical=True)), dtype="float64")
    return np.asarray(model.predict_proba(_catboost_frame(features, categories))[:, 1], dtype="float64")


def save(library: str, model: object, path: Path) -> None:
    """Write the model in its library's own format (LightGBM text, XGBoost JSON, CatBoost JSON)."""
    if library == "lightgbm":
        model.save_model(str(path))
    elif library == "xgboost":  # as JSON whatever the file's name ends with (a temporary name does not)
        Path(path).write_bytes(bytes(model.save_raw(raw_format="json")))
    else:
        model.save_model(str(path), format="json")


def load(library: str, path: Path) -> object:
    """A saved model, read from its own format (nothing unpickled)."""
    if library == "lightgbm":
        import lightgbm as lgb

        return lgb.Booster(model_file=str(path))
    if library == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(path))
        return booster
    from catboost import CatBoostClassifier

    model = CatBoostClassifier()
    model.load_model(str(path), format="json")
    return model


def importance(library: str, model: object, columns: list[str]) -> pd.Series:
    """Each feature's share of the model's gain (summing to 1), so libraries can be averaged."""
    if library == "lightgbm":
        gain = pd.Series(model.feature_importance("gain"), index=columns, dtype="float64")
    elif library == "xgboost":
        gain = pd.Series(model.get_score(importance_type="total_gain"), dtype="float64").reindex(columns)
    else:
        gain = pd.Series(model.get_feature_importance(), index=columns, dtype="float64")
    gain = gain.fillna(0.0)
    return gain / gain.sum() if gain.sum() > 0 else gain


def versions(models: list[str]) -> dict[str, str]:
    """The versions of the libraries a run used."""
    import importlib

    return {m: importlib.import_module(m).__version__ for m in models}
