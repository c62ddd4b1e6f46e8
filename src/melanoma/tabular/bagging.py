"""One fold of `melanoma gbdt`: every library bagged over seeds, each bag on its own sample of the
fold's training rows, stopped early on patients held out inside the training fold.

The sampling is the top teams' (1st and 2nd place): positives oversampled (drawn again, with
replacement) until they are `pos_rate` of the negatives, then negatives undersampled (without
replacement) until the positives are `neg_rate` of them; on ISIC 2024's 0.1% malignant rows,
0.003 then 0.01 leaves each fit about a third of the rows, and the bags differ. A rate of 0
leaves that step out.

Early stopping watches a share of the training fold's patients (grouped, stratified by target)
that no bag fits on, never the fold being scored: two of the 2024 top teams stopped on the
validation fold, which picks each fold's best round on its own answers and flatters the CV.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from melanoma.tabular import boosters, tuning


@dataclass
class FoldModels:
    """What one fold's bags give: per library, the bag-averaged scores of the validation and
    test rows; the fitted models (library, bag, model) and the mean gain share of each feature."""

    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    models: list[tuple[str, int, object]]
    importance: pd.Series
    tuned: dict[str, tuple[dict, float]] = field(default_factory=dict)  # --tune: parameters, inner pAUC


def sample_rows(y: np.ndarray, pos_rate: float, neg_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of one bag's rows: positives oversampled to `pos_rate` x negatives, then
    negatives undersampled so the positives are `neg_rate` of them (0: that step left out)."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if pos_rate > 0 and len(pos) and len(pos) < pos_rate * len(neg):
        extra = rng.choice(pos, int(np.ceil(pos_rate * len(neg))) - len(pos), replace=True)
        pos = np.concatenate([pos, extra])
    if neg_rate > 0 and len(pos) / neg_rate < len(neg):
        neg = rng.choice(neg, int(np.ceil(len(pos) / neg_rate)), replace=False)
    return np.sort(np.concatenate([pos, neg]))


def stopping_split(
    y: np.ndarray, patients: np.ndarray, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, stop) positions within a training fold: about `share` of its patients, grouped and
    stratified by target, held out to stop on; all rows fit when the fold is too small to split."""
    from sklearn.model_selection import StratifiedGroupKFold

    splits = max(2, round(1 / share))
    if len(np.unique(patients)) < splits or y.sum() < splits:
        return np.arange(len(y)), np.array([], dtype=int)
    split = StratifiedGroupKFold(splits, shuffle=True, random_state=seed)
    fit, stop = next(split.split(np.zeros(len(y)), y, patients))
    return fit, stop


def fit_fold(
    settings: dict,
    features: pd.DataFrame,
    y: np.ndarray,
    patients: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    categories: dict[str, list[str]],
) -> FoldModels:
    """Bag every library of settings["models"] over settings["bags"] seeds on the fold's training
    rows; rows = (train, validation, test) positions in `features`."""
    train, val, test = rows
    seed = settings["seed"]
    held = settings["early_stopping"] > 0 or settings.get("tune", 0) > 0
    inner = stopping_split(y[train], patients[train], settings["stop_share"], seed) if held else None
    fit_rows, stop_rows = (train[inner[0]], train[inner[1]]) if inner else (train, train[:0])
    stop = (features.iloc[stop_rows], y[stop_rows]) if len(stop_rows) else None
    if settings.get("tune", 0) > 0 and (stop is None or not 0 < stop[1].sum() < len(stop[1])):
        raise ValueError(
            "--tune scores its trials on patients held out inside the training fold, and this fold is too "
            "small to hold out patients of both classes; more rows, fewer folds, or no --tune"
        )
    out = FoldModels({}, {}, [], pd.Series(0.0, index=features.columns))
    for index, library in enumerate(settings["models"]):
        chosen = None
        if settings.get("tune", 0) > 0:
            rng = np.random.default_rng([seed, 99, index])
            picked = fit_rows[sample_rows(y[fit_rows], settings["pos_rate"], settings["neg_rate"], rng)]
            chosen, value = tuning.tune(
                library, settings, (features.iloc[picked], y[picked]), stop, categories, seed
            )
            out.tuned[library] = (chosen, value)
        val_sum, test_sum = np.zeros(len(val)), np.zeros(len(test))
        for bag in range(settings["bags"]):
            rng = np.random.default_rng([seed, bag, index])  # every library's every bag its own sample
            picked = fit_rows[sample_rows(y[fit_rows], settings["pos_rate"], settings["neg_rate"], rng)]
            model = boosters.fit(
                library, settings["params"], settings, (features.iloc[picked], y[picked]), stop,
                categories, seed * 1000 + bag, chosen,
            )  # fmt: skip
            val_sum += boosters.predict(library, model, features.iloc[val], categories)
            if len(test):
                test_sum += boosters.predict(library, model, features.iloc[test], categories)
            out.models.append((library, bag, model))
            out.importance += boosters.importance(library, model, list(features.columns))
        out.val[library], out.test[library] = val_sum / settings["bags"], test_sum / settings["bags"]
    out.importance /= len(out.models)
    return out
