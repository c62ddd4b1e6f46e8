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
