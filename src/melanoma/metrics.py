"""Scores: melanoma-vs-rest AUC, as the competition ranked submissions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve


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


def predicted_classes(probs: np.ndarray) -> np.ndarray:
    """Each row's most probable class; -1 where several classes share the top probability (the ISIC
    challenges' scoring calls such a row undecided and counts it wrong)."""
    probs = np.asarray(probs, dtype=np.float64)
    top = probs.max(axis=1, keepdims=True)
    return np.where((probs == top).sum(axis=1) > 1, -1, probs.argmax(axis=1))


def confusion(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Counts of (true class, predicted class), one row and column per class; undecided rows
    (predicted_classes -1) are in no column."""
    predicted, targets = predicted_classes(probs), np.asarray(targets, dtype=np.int64)
    n = np.asarray(probs).shape[1]
    counts = np.zeros((n, n), dtype=np.int64)
    decided = predicted >= 0
    np.add.at(counts, (targets[decided], predicted[decided]), 1)
    return counts


def balanced_accuracy(probs: np.ndarray, targets: np.ndarray) -> float:
    """The ISIC 2019 challenge's metric: the mean over the classes present of the share of their rows
    predicted as them (most probable class; a tie counts wrong). NaN with no rows."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return float("nan")
    counts = confusion(probs, targets)
    present = np.bincount(targets, minlength=counts.shape[0])
    at = present > 0
    return float(np.mean(counts.diagonal()[at] / present[at]))


def rank_within(score: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Percentile ranks (0..1] of a score computed separately within each group (fold): the
    winners' 'rank' AUC, which removes differences of scale between fold models."""
    score, groups = np.asarray(score, dtype=float), np.asarray(groups)
    out = np.empty(len(score))
    for g in np.unique(groups):
        at = groups == g
        out[at] = rankdata(score[at]) / at.sum()
    return out


def partial_auc(score: np.ndarray, is_melanoma: np.ndarray, min_tpr: float = 0.8) -> float:
    """Area under the ROC curve above a true-positive rate of min_tpr (the ISIC 2024 metric),
    unstandardised as the official scoring reports it: 0 to 1 - min_tpr (0.2 when perfect)."""
    is_melanoma = np.asarray(is_melanoma).astype(bool)
    if is_melanoma.all() or not is_melanoma.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(is_melanoma, np.asarray(score, dtype=float))
    area = 0.0
    for x0, x1, y0, y1 in zip(fpr[:-1], fpr[1:], tpr[:-1], tpr[1:], strict=True):
        if x1 == x0 or max(y0, y1) <= min_tpr:
            continue
        if min(y0, y1) >= min_tpr:  # whole segment above the line: a trapezoid
            area += (x1 - x0) * ((y0 + y1) / 2 - min_tpr)
        else:  # crosses the line: only the part above it, a triangle
            cross = x0 + (x1 - x0) * (min_tpr - y0) / (y1 - y0)
            area += (x1 - cross) * (y1 - min_tpr) / 2
    return float(area)


def top_k_sensitivity(score: np.ndarray, is_malignant: np.ndarray, patient: np.ndarray, k: int = 15) -> float:
    """ISIC 2024's per-patient retrieval sensitivity: for each patient with a malignant lesion, the
    share of their malignant lesions among their k highest-scored lesions (ties broken by the
    order given), averaged over those patients. NaN when no patient has a malignant lesion."""
    frame = pd.DataFrame({"score": np.asarray(score, dtype=float), "y": np.asarray(is_malignant).astype(bool),
                          "patient": np.asarray(patient)})  # fmt: skip
    frame["rank"] = frame.groupby("patient").score.rank(method="first", ascending=False)
    found = frame[frame.y].groupby("patient")["rank"].apply(lambda r: float(np.mean(r <= k)))
    return float(found.mean()) if len(found) else float("nan")


def interval_text(result: dict, key: str, digits: int = 3) -> str:
    """ "value (low-high)" from result[key], result[key_low] and result[key_high]; "-" without a value."""
    if result.get(key) is None:
        return "-"
    low, high = result[key + "_low"], result[key + "_high"]
    return f"{result[key]:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    score: np.ndarray,
    is_melanoma: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of metric(score, is_melanoma), resampling rows with
    replacement (resamples with one class only are skipped)."""
    score, is_melanoma = np.asarray(score, dtype=float), np.asarray(is_melanoma).astype(bool)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        at = rng.integers(0, len(score), len(score))
        value = metric(score[at], is_melanoma[at])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
