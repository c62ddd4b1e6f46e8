"""Calibration: can the melanoma probability be read as a probability?

Temperature scaling (Guo et al., 2017) on the melanoma-vs-rest logit: p' = sigmoid(logit(p) / T),
with one T per run fitted on its out-of-fold rows by minimising the log loss. A single positive
number and a monotone map: the order of the scores, hence every AUC, never changes. T > 1 means the
model was over-confident (its probabilities were too close to 0 and 1).

Reported before and after: expected calibration error (15 equal-mass bins: each bin holds the same
number of rows, sorted by score), Brier score and log loss, and a reliability diagram. The fit is
saved in the run (RUN/calibration.json, RUN/calibration.png), and `predict` applies it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import brier_score_loss, log_loss

from melanoma import rundir
from melanoma.results import Calibration, Scores
from melanoma.run import Run
from melanoma.targets import class_names, melanoma_index, positive_words

ECE_BINS = 15
_LOG_T = (math.log(0.05), math.log(20.0))  # the temperatures searched


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)); 0 and 1 give -inf and inf (no clipping, which would tie the extremes
    and change the order of the scores)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def apply_temperature_to_logit(z: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(z / T)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z / float(temperature)))


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """Melanoma probabilities scaled by a temperature on the logit."""
    return apply_temperature_to_logit(logit(p), temperature)


def equal_mass_bins(p: np.ndarray, bins: int = ECE_BINS) -> list[np.ndarray]:
    """Row indices in `bins` groups of (nearly) equal size, by increasing probability."""
    order = np.argsort(np.asarray(p, dtype=np.float64), kind="stable")
    return [b for b in np.array_split(order, min(bins, len(order))) if len(b)]


def ece(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over equal-mass bins: the row-weighted mean of
    |observed melanoma rate - mean predicted probability| per bin."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(sum(len(b) / len(p) * abs(y[b].mean() - p[b].mean()) for b in equal_mass_bins(p, bins)))


def scores(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """ECE (15 equal-mass bins), Brier score and log loss."""
    y = np.asarray(y, dtype=bool)
    return {"ece": ece(p, y), "brier": float(brier_score_loss(y, p)), "log_loss": _log_loss(p, y)}


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(log_loss(y, p, labels=[False, True]))


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The temperature (0.05 to 20) that minimises the log loss of apply_temperature(p, T)."""
    z, y = logit(p), np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("calibration needs melanomas and other lesions among the rows")

    def loss(log_t: float) -> float:
        return _log_loss(apply_temperature_to_logit(z, math.exp(log_t)), y)

    best = minimize_scalar(loss, bounds=_LOG_T, method="bounded", options={"xatol": 1e-6})
    return float(math.exp(best.x))


def reliability_diagram(
    p: np.ndarray,
    calibrated: np.ndarray,
    y: np.ndarray,
    temperature: float,
    path: Path,
    word: str = "melanoma",
) -> Path:
    """Observed melanoma rate against mean predicted probability per equal-mass bin, before and
    after scaling, with the diagonal of perfect calibration; saved as PNG. Both axes end a little
    above the largest point (probabilities of a rare class sit near 0: a 0-1 square would
    crowd every point into one corner), and the title says where they end."""
    from melanoma.plots import COLOURS, pyplot, save

    plt = pyplot()
    y = np.asarray(y, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5.2, 5), constrained_layout=True)
    points = []
    for probs, label, style, colour in [(p, "before", "o--", COLOURS["before"]),
                                        (calibrated, f"after (T = {temperature:.2f})", "s-", COLOURS["after"])]:  # fmt: skip
        bins = equal_mass_bins(probs)
        xs, ys = [probs[b].mean() for b in bins], [y[b].mean() for b in bins]
        ax.plot(xs, ys, style, label=label, markersize=4, color=colour)
        points += xs + ys
    top = axis_end(max(points, default=1.0))
    ax.plot([0, top], [0, top], color=COLOURS["reference"], linewidth=1, label="perfect")
    ax.set(xlabel=f"mean predicted {word} probability", ylabel=f"observed {word} rate",
           xlim=(0, top), ylim=(0, top))  # fmt: skip
    shown = "" if top >= 1 else f"; axes end at {top:g}"
    ax.set_title(f"Reliability ({ECE_BINS} equal-mass bins{shown})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    save(fig, path, dpi=100)
    return path


def axis_end(largest: float) -> float:
    """The first round value (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, ..., 1) at least 10% above the largest."""
    for end in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        if largest * 1.1 <= end:
            return end
    return 1.0


def calibrate(run: Path) -> Calibration:
    """Fit the run's temperature on its latest out-of-fold predictions; save and return the
    result (temperature; ECE, Brier and log loss before and after; rows used)."""
    opened = Run(run)
    cfg = opened.settings
    oof, source = opened.latest_oof(), opened.latest_oof_name
    y = (oof.target == melanoma_index(cfg.scheme)).to_numpy()
    p = oof[class_names(cfg.scheme)[melanoma_index(cfg.scheme)]].to_numpy(dtype=np.float64)
    temperature = fit_temperature(p, y)
    q = apply_temperature(p, temperature)
    result = Calibration(temperature, source, len(oof), int(y.sum()), ECE_BINS, Scores(**scores(p, y)),
                         Scores(**scores(q, y)))  # fmt: skip
    word = positive_words(cfg.scheme)[0]
    reliability_diagram(p, q, y, temperature, run / rundir.CALIBRATION_PNG, word)
    result.save(run)
    return result
