"""Scores: melanoma-vs-rest AUC, as the competition ranked submissions."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def melanoma_auc(score: np.ndarray, is_melanoma: np.ndarray) -> float:
    """ROC AUC of a melanoma score; NaN when only one class is present."""
    is_melanoma = np.asarray(is_melanoma).astype(bool)
    if is_melanoma.all() or not is_melanoma.any():
        return float("nan")
    return float(roc_auc_score(is_melanoma, np.asarray(score, dtype=float)))


def validation_metrics(
    probs: np.ndarray, targets: np.ndarray, is_ext: np.ndarray, mel: int
) -> dict[str, float]:
    """An epoch's validation scores from class probabilities: cross-entropy loss, accuracy, AUC
    (melanoma vs rest on all rows) and AUC_20 (2020 rows only, is_ext == 0)."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    is_mel, is_2020 = targets == mel, np.asarray(is_ext) == 0
    picked = probs[np.arange(len(targets)), targets]
    return {
        "val_loss": float(-np.mean(np.log(picked + 1e-12))),
        "acc": float(np.mean(probs.argmax(1) == targets)),
        "auc": melanoma_auc(probs[:, mel], is_mel),
        "auc_20": melanoma_auc(probs[is_2020, mel], is_mel[is_2020]),
    }
