"""Operating points: what the model does at a sensitivity a clinic would accept.

A threshold t flags every image scored at or above it. For a wanted sensitivity s, t is the
highest threshold that still flags at least s of the melanomas (the ceil(s x melanomas)-th highest
melanoma score). At t: sensitivity, specificity, positive and negative predictive value, and the
number of biopsies per melanoma found ((true + false positives) / true positives, i.e. 1 / PPV).
Each with a bootstrap 95% interval (rows resampled with replacement, the threshold found again
in every resample, percentile interval).

PPV, NPV and biopsies per melanoma depend on how common melanoma is in the rows scored (1.8% in
ISIC 2020 train, 18% in ISIC 2019): they hold for a population like the out-of-fold rows only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from melanoma import rundir
from melanoma.results import MEASURES, Calibration, OperatingPoint, OperatingPoints
from melanoma.run import Run
from melanoma.targets import class_names, melanoma_index

SENSITIVITIES = (0.90, 0.95)


def threshold_at(score: np.ndarray, is_melanoma: np.ndarray, sensitivity: float) -> float:
    """The highest threshold that flags (score >= t) at least `sensitivity` of the melanomas."""
    if not 0 < sensitivity <= 1:
        raise ValueError(f"sensitivity must lie in (0, 1], got {sensitivity}")
    positives = np.sort(np.asarray(score, dtype=np.float64)[np.asarray(is_melanoma, dtype=bool)])[::-1]
    if len(positives) == 0:
        raise ValueError("no melanoma among the rows: no sensitivity can be reached")
    return float(positives[math.ceil(sensitivity * len(positives) - 1e-9) - 1])


def at_threshold(score: np.ndarray, is_melanoma: np.ndarray, threshold: float) -> dict[str, float]:
    """Counts and rates when every image scored >= threshold is flagged."""
    flagged = np.asarray(score, dtype=np.float64) >= threshold
    y = np.asarray(is_melanoma, dtype=bool)
    tp, fp = int(np.sum(flagged & y)), int(np.sum(flagged & ~y))
    fn, tn = int(np.sum(~flagged & y)), int(np.sum(~flagged & ~y))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "threshold": float(threshold),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "biopsies_per_melanoma": ratio(tp + fp, tp),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def operating_point(
    score: np.ndarray, is_melanoma: np.ndarray, sensitivity: float, n_boot: int = 1000, seed: int = 0
) -> dict:
    """The point at a wanted sensitivity, each measure with its bootstrap 95% interval
    (<measure>_low, <measure>_high)."""
    score, y = np.asarray(score, dtype=np.float64), np.asarray(is_melanoma, dtype=bool)
    point = {"target_sensitivity": sensitivity, **at_threshold(score, y, threshold_at(score, y, sensitivity))}
    return {**point, **_intervals(score, y, lambda s, t: threshold_at(s, t, sensitivity), n_boot, seed)}


def frozen_point(
    score: np.ndarray, is_melanoma: np.ndarray, threshold: float, n_boot: int = 1000, seed: int = 0
) -> dict:
    """The measures at a threshold fixed beforehand (not found again in the resamples: external
    validation's question is whether it holds), each with its bootstrap 95% interval."""
    score, y = np.asarray(score, dtype=np.float64), np.asarray(is_melanoma, dtype=bool)
    return {**at_threshold(score, y, threshold), **_intervals(score, y, lambda s, t: threshold, n_boot, seed)}


def _intervals(
    score: np.ndarray, y: np.ndarray, threshold_of: Callable[[np.ndarray, np.ndarray], float], n_boot: int,
    seed: int,
) -> dict[str, float]:  # fmt: skip
    """<measure>_low and <measure>_high: percentile bootstrap intervals of every measure at the
    threshold `threshold_of` gives each resample (rows resampled with replacement; resamples
    without a melanoma are skipped)."""
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in MEASURES}
    for _ in range(n_boot):
        i = rng.integers(0, len(score), len(score))
        if not y[i].any():
            continue
        got = at_threshold(score[i], y[i], threshold_of(score[i], y[i]))
        for m in MEASURES:
            draws[m].append(got[m])
    out = {}
    for m in MEASURES:
        values = np.asarray(draws[m], dtype=np.float64)
        values = values[~np.isnan(values)]
        low, high = np.percentile(values, [2.5, 97.5]) if len(values) else (float("nan"), float("nan"))
        out[f"{m}_low"], out[f"{m}_high"] = float(low), float(high)
    return out


def oof_melanoma(run: Path, checkpoint: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The run's out-of-fold melanoma scores, whether each row is a melanoma, and the file: the
    latest ones, or those of one checkpoint (rundir.checkpoint_oof)."""
    opened = Run(run)
    cfg = opened.settings
    if checkpoint is None:
        oof, name = opened.latest_oof(), opened.latest_oof_name
    else:
        oof, name = opened.checkpoint_oof(checkpoint)
    mel = melanoma_index(cfg.scheme)
    return oof[class_names(cfg.scheme)[mel]].to_numpy(np.float64), (oof.target == mel).to_numpy(), name


def operating_points(
    run: Path, sensitivities: tuple[float, ...] = SENSITIVITIES, n_boot: int = 1000, seed: int = 0
) -> OperatingPoints:
    """The run's operating points from its latest out-of-fold predictions; saved in the run.

    Thresholds are on the uncalibrated melanoma probability (the scale of the out-of-fold files
    and of the test scores before calibration; calibration keeps the order, so the same images
    are flagged either way)."""
    run = Path(run)
    score, y, source = oof_melanoma(run)
    points = [operating_point(score, y, s, n_boot, seed) for s in sorted(set(sensitivities))]
    fit = Calibration.load(run)
    if fit is not None:
        from melanoma.evaluation.calibration import apply_temperature

        for p in points:
            p["threshold_calibrated"] = float(
                apply_temperature(np.array([p["threshold"]]), fit.temperature)[0]
            )
    bootstrap = {"resamples": n_boot, "seed": seed, "level": 0.95}
    result = OperatingPoints(source, len(score), int(y.sum()), float(y.mean()), bootstrap,
                             [OperatingPoint.from_json(p) for p in points])  # fmt: skip
    result.save(run)
    return result


def threshold_for(run: Path, sensitivity: float, checkpoint: str = "best") -> float:
    """The threshold of a saved operating point (RUN/operating_points.json) fitted on this
    checkpoint's out-of-fold scores, or of a new one from them (a threshold of `best` would not
    hold for the scores of `best_20`)."""
    saved = OperatingPoints.load(run)
    if saved is not None and rundir.oof_checkpoint(saved.fitted_on) == rundir.checkpoint_name(checkpoint):
        point = saved.at(sensitivity)
        if point is not None:
            return float(point.threshold)
    score, y, _ = oof_melanoma(Path(run), checkpoint)
    return threshold_at(score, y, sensitivity)
