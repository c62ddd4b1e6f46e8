"""`melanoma gbdt --tune N`: each library's parameters searched by Optuna, nested in the folds.

For each outer fold, each library gets N trials (Optuna's TPE sampler, seeded); a trial fits one
model on the training fold's rows less the patients held out to stop on (bagging.stopping_split),
on the run's sample of them, and is scored by pAUC above 80% TPR on those held-out patients. The
fold's bags then use the best trial's parameters. The fold being scored is never seen by a trial,
so its out-of-fold score stays out of fold (the 2nd place tuned with Optuna; tuning on the
validation fold flatters CV as stopping on it does).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from melanoma.metrics import partial_auc
from melanoma.tabular import boosters


def space(library: str, trial: object) -> dict:
    """One trial's parameters of a library (the ranges the top teams' tuned values lie in)."""
    common = {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, 4.0),
    }
    if library == "lightgbm":
        return {**common, "subsample_freq": 1, "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
                "max_depth": trial.suggest_int("max_depth", 3, 8),
                "min_child_samples": trial.suggest_int("min_child_samples", 10, 100, log=True),
                "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
                "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True)}  # fmt: skip
    if library == "xgboost":
        return {**common, "max_depth": trial.suggest_int("max_depth", 3, 8),
                "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
                "reg_lambda": trial.suggest_float("reg_lambda", 1e-2, 10.0, log=True),
                "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 1.0, log=True)}  # fmt: skip
    return {**common, "bootstrap_type": "Bernoulli", "depth": trial.suggest_int("depth", 4, 8),
            "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", 1.0, 10.0, log=True)}  # fmt: skip


def tune(
    library: str,
    settings: dict,
    fit: tuple[pd.DataFrame, np.ndarray],
    stop: tuple[pd.DataFrame, np.ndarray],
    categories: dict[str, list[str]],
    seed: int,
) -> tuple[dict, float]:
    """The best of settings["tune"] trials: (parameters, its pAUC on the held-out patients)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    positive = stop[1] == 1

    def objective(trial: optuna.Trial) -> float:
        model = boosters.fit(
            library, settings["params"], settings, fit, stop, categories, seed, space(library, trial)
        )
        return partial_auc(boosters.predict(library, model, stop[0], categories), positive)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=settings["tune"])
    return space(library, optuna.trial.FixedTrial(study.best_params)), float(study.best_value)
