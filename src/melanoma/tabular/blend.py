"""Blending the libraries of a tree run into one score per row.

- mean: the libraries' probabilities averaged (the top teams' soft vote); stays a probability,
  so calibration and operating points read it as they read one model's;
- rank: the libraries' percentile ranks averaged, ranked among the rows scored together (one
  fold's validation rows; the test rows); removes differences of scale, but the result is a rank,
  not a probability;
- fitted: a weighted mean of probabilities, the weights (a grid over the simplex, steps of 0.1)
  chosen by pAUC on the out-of-fold scores of the OTHER folds: fold k's weights never see fold
  k's rows, so its out-of-fold score stays out of fold. Test rows take each fold model's own
  weights (the test score is the mean over folds of each fold's blend).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from melanoma.evaluation.ensemble import percentile_ranks
from melanoma.metrics import partial_auc

BLENDS = ("mean", "rank", "fitted")
STEP = 10  # the grid's steps per unit weight: 0.1


def combine(scores: dict[str, np.ndarray], weights: dict[str, float], method: str) -> np.ndarray:
    """One score per row from each library's (weights need not sum to 1)."""
    total = sum(weights.values())
    if method == "rank":
        return sum(weights[m] * percentile_ranks(s) for m, s in scores.items()) / total
    return sum(weights[m] * s for m, s in scores.items()) / total


def simplex(models: list[str]) -> list[dict[str, float]]:
    """Every weighting of the models on the grid (non-negative, summing to 1)."""
    out = []
    for parts in itertools.product(range(STEP + 1), repeat=len(models)):
        if sum(parts) == STEP:
            out.append({m: p / STEP for m, p in zip(models, parts, strict=True)})
    return out


def fit_weights(oof: pd.DataFrame, models: list[str], leave_out: int | None) -> dict[str, float]:
    """The grid weighting with the best pAUC on the out-of-fold rows of every fold but
    `leave_out` (oof: fold, target and one score column per model); ties go to the weighting
    nearest equal weights."""
    rows = oof if leave_out is None else oof[oof.fold != leave_out]
    positive = rows.target.to_numpy() == 1
    if len(models) == 1 or positive.all() or not positive.any():
        return {m: 1.0 / len(models) for m in models}
    scores = {m: rows[m].to_numpy() for m in models}

    def quality(w: dict[str, float]) -> tuple[float, float]:
        spread = -sum((v - 1 / len(models)) ** 2 for v in w.values())
        return round(partial_auc(combine(scores, w, "mean"), positive), 12), spread

    return max(simplex(models), key=quality)


def fold_weights(oof: pd.DataFrame, models: list[str], folds: list[int], method: str) -> dict[int, dict]:
    """Each fold model's weights: equal for mean and rank, fitted on the other folds for fitted."""
    if method == "fitted":
        return {k: fit_weights(oof, models, k) for k in folds}
    return {k: {m: 1.0 for m in models} for k in folds}
