"""External validation: a run scored on labelled data it did not train on (`melanoma validate`).

Out-of-fold figures are measured on the population the model trained on. Here a data folder from
elsewhere (another clinic, a later year; any layout the toolkit reads) is scored as `predict`
scores (every fold model, averaged, with 8-way TTA by default; a tree run on ISIC 2024: every
fold's booster on the folder's features, tabular/gbdt.score_rows), and judged by what was fixed
before looking at it:

- Images that were in the training data are found by name and by content (SHA-256 of the file's
  bytes, compared among files of equal size) and left out, or refused with `refuse_overlap`.
- AUC and the partial AUC above 80% sensitivity with bootstrap 95% intervals, beside the
  out-of-fold AUC.
- At each threshold frozen from the run's out-of-fold scores (its saved operating points, else
  the 90% and 95% points found now): sensitivity, specificity, PPV and NPV with intervals. A point
  whose external sensitivity interval lies wholly below its target (the 95% point below 95%) is
  flagged. The thresholds were found on single-fold out-of-fold scores and are applied here to
  fold-averaged scores: each point also records the sensitivity each fold model alone reaches at
  it, which measures how far that moves the point.
- Calibration with the run's saved temperature: ECE and Brier before and after, and the drift of
  the calibrated ECE from out-of-fold.
- The subgroups of `melanoma subgroups` (sex, age band, site, estimated skin tone, a recorded
  Fitzpatrick type) at the frozen 95% threshold, with the equity gaps.
- The input checks of evaluation/ood.py on every image (quality flags; the out-of-distribution
  score where the run has a reference): counted, and the flagged images listed (none dropped).

Saved as RUN/validation_<NAME>.json (results.External), shown by report and card.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.skin_tone import skin_tones
from melanoma.evaluation.calibration import apply_temperature, scores
from melanoma.evaluation.ood import input_checks
from melanoma.evaluation.operating_points import (
    SENSITIVITIES,
    at_threshold,
    frozen_point,
    oof_melanoma,
    threshold_at,
)
from melanoma.evaluation.predict import meta_matrix, predict_rows
from melanoma.evaluation.subgroups import MIN_EACH, equity_gaps, group_frame, subgroup_table
from melanoma.inputs.decode import read_bytes, split_hdf5
from melanoma.metrics import bootstrap_ci, melanoma_auc, partial_auc
from melanoma.results import Calibration, External, OperatingPoints
from melanoma.run import Run
from melanoma.targets import class_names, melanoma_index

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _size(path: str) -> int:
    return len(read_bytes(path)) if split_hdf5(path) else Path(path).stat().st_size


def _digest(path: str) -> str:
    return hashlib.sha256(read_bytes(path)).hexdigest()


def training_overlap(run: Run, rows: pd.DataFrame, train_data: Path | None) -> tuple[np.ndarray, dict]:
    """Which of `rows` were in the run's training data: by image name (the run's folds.csv), and by
    content when the training data folder is known (`train_data`, else the one config.json records).
    Returns the mask and what was checked."""
    by_name = rows.image_name.isin(set(run.folds.index)).to_numpy()
    folder = Path(train_data) if train_data else run.config.get("data_folder")
    checked = {"by_name": int(by_name.sum()), "by_content": 0, "content_checked_against": None}
    if folder is None or not Path(folder).is_dir():
        checked["note"] = "content not checked: the training data folder is unknown (pass --train-data)"
        return by_name, checked
    from melanoma.data.ingest import ingest

    trained = ingest(Path(folder), run.settings.data_size, verify="none", progress=False, image_types=None)
    trained = trained[trained.image_name.isin(set(run.folds.index))]
    sizes: dict[int, list[str]] = {}
    for path in trained.image_path:
        sizes.setdefault(_size(path), []).append(path)
    digests: dict[int, set[str]] = {}  # per size, the training files' hashes: each file read once
    by_content = np.zeros(len(rows), bool)
    for i, path in enumerate(rows.image_path):
        size = _size(path)
        if size in sizes:
            if size not in digests:
                digests[size] = {_digest(p) for p in sizes[size]}
            by_content[i] = _digest(path) in digests[size]
    checked.update(by_content=int((by_content & ~by_name).sum()), content_checked_against=str(folder))
    return by_name | by_content, checked


def _with_interval(
    fn: Callable[[np.ndarray, np.ndarray], float], score: np.ndarray, y: np.ndarray, n_boot: int, seed: int
) -> dict:
    low, high = bootstrap_ci(fn, score, y, n_boot, seed)
    return {"value": fn(score, y), "low": low, "high": high}


def held_point(
    score: np.ndarray,
    y: np.ndarray,
    per_fold: np.ndarray,
    target: float,
    threshold: float,
    n_boot: int,
    seed: int,
) -> dict:
    """operating_points.frozen_point at a threshold fixed out of fold, whether its sensitivity
    interval lies wholly below the target, and each fold model's own sensitivity at it."""
    point = {"target_sensitivity": target, **frozen_point(score, y, threshold, n_boot, seed)}
    point["flagged"] = bool(point["sensitivity_high"] < target)
    single = [at_threshold(s, y, threshold)["sensitivity"] for s in per_fold]
    point["single_fold_sensitivity"] = float(np.mean(single))
    point["single_fold_range"] = [float(np.min(single)), float(np.max(single))]
    return point


def _thresholds(run: Path) -> tuple[list[tuple[float, float]], str]:
    """(target sensitivity, threshold) of every saved operating point, else of the 90% and 95%
    points of the latest out-of-fold scores; and where they come from."""
    saved = OperatingPoints.load(run)
    if saved is not None:
        return [
            (p.target_sensitivity, p.threshold) for p in saved.points
        ], f"run's operating points ({saved.fitted_on})"
    score, y, name = oof_melanoma(run)
    return [(s, threshold_at(score, y, s)) for s in SENSITIVITIES], f"90% and 95% points of {name}"


def _calibration(run: Path, score: np.ndarray, y: np.ndarray) -> dict | None:
    fit = Calibration.load(run)
    if fit is None:
        return None
    after = scores(apply_temperature(score, fit.temperature), y)
    return {"temperature": fit.temperature, "before": scores(score, y), "after": after,
            "oof_after": {"ece": fit.after.ece, "brier": fit.after.brier},
            "ece_drift": after["ece"] - fit.after.ece}  # fmt: skip


def _subgroups(data: Path, rows: pd.DataFrame, score: np.ndarray, y: np.ndarray, threshold: float,
               n_boot: int, seed: int) -> tuple[list[dict], list[dict], dict]:  # fmt: skip
    frame, columns, estimated = group_frame(rows, score, y, skin_tones(data, rows, progress=False))
    groups = subgroup_table(frame, tuple(columns), threshold, n_boot, seed)
    gaps = equity_gaps(frame, groups, threshold, n_boot, seed)
    return groups.replace({np.nan: None}).to_dict(orient="records"), gaps, estimated


def _checked(checks: pd.DataFrame, rows: pd.DataFrame, y: np.ndarray) -> dict:
    """What the input checks flagged among the external images: counts, and the flagged images."""
    flagged = checks[checks.flag.to_numpy()]
    return {
        "images": len(checks), "flagged": int(checks.flag.sum()), "quality": int((checks.quality != "").sum()),
        "ood": None if checks.ood.isna().all() else int(checks.ood.fillna(False).astype(bool).sum()),
        "flagged_images": [{"image_name": r.image_name, "image_path": p, "quality": r.quality,
                            "ood_distance": None if pd.isna(r.ood_distance) else float(r.ood_distance),
                            "melanoma": bool(m)}
                           for r, p, m in zip(flagged.itertuples(), rows.image_path[checks.flag.to_numpy()],
                                              y[checks.flag.to_numpy()], strict=True)],
    }  # fmt: skip


def validate(
    run: Path,
    data: Path,
    table: pd.DataFrame,
    name: str,
    checkpoint: str = "best",
    tta: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    train_data: Path | None = None,
    refuse_overlap: bool = False,
    progress: bool = True,
    trees: Callable[[pd.DataFrame], np.ndarray] | None = None,
) -> External:
    """Score the labelled rows of `table` (the external data folder `data`, ingested for the run)
    with the run, as the module docstring says; saved in the run under `name` and returned. A tree
    run is scored by `trees` (rows -> per-fold probabilities: tabular.gbdt.score_rows, which the
    command passes; the trees' stage sits above this one)."""
    if not NAME.match(name):
        raise ValueError(
            f"{name!r}: a validation's name is letters, digits, '.', '_' or '-' (up to 64), e.g. clinic-b"
        )
    opened = Run(run)
    labelled = table[table.split == "train"]
    if labelled.empty:
        raise ValueError(f"{data}: no labelled images to validate on (every row is a test row)")
    overlap, checked = training_overlap(opened, labelled, train_data)
    if overlap.any():
        shown = ", ".join(labelled.image_name[overlap].head(5))
        if refuse_overlap or overlap.all():
            raise ValueError(f"{data}: {int(overlap.sum())} image(s) the run trained on, e.g. {shown}: external "
                             "validation needs images it has not seen")  # fmt: skip
        checked["left_out"] = labelled.image_name[overlap].tolist()
    rows = labelled[~overlap]
    scheme, mel = opened.scheme, melanoma_index(opened.scheme)
    y = (rows.target == mel).to_numpy()
    if y.all() or not y.any():
        raise ValueError(
            f"{data}: the images left hold {'only' if y.all() else 'no'} {class_names(scheme)[mel]} cases; AUC needs both"
        )
    if opened.is_tree:  # the boosters on the folder's features (and the stacked image run's scores)
        if trees is None:
            raise ValueError(f"{run} is a tree run: pass `trees`, its scorer (tabular.gbdt.score_rows)")
        folds, checkpoint = list(opened.config["folds"]), "best"
        per_fold = trees(rows)
        checks = None  # no image goes through the trees: the image run's own validation checks its inputs
    else:
        meta = meta_matrix(table, run)
        meta = None if meta is None else meta[table.index.get_indexer(rows.index)]
        folds = opened.trained_folds(checkpoint)
        per_fold = predict_rows(run, rows, meta, folds, checkpoint, tta, progress)[:, :, mel]
        checks = input_checks(run, rows, meta, progress)
    score = per_fold.mean(0)
    thresholds, fitted = _thresholds(Path(run))
    points = [held_point(score, y, per_fold, t, th, n_boot, seed) for t, th in thresholds]
    at_95 = next((th for t, th in thresholds if t >= 0.95), thresholds[-1][1])
    groups, gaps, estimated = _subgroups(Path(data), rows, score, y, at_95, n_boot, seed)
    oof_score, oof_y, oof_name = oof_melanoma(Path(run))
    result = {
        "name": name, "data": str(data), "checkpoint": checkpoint, "tta": bool(tta), "folds": folds,
        "images": len(rows), "positives": int(y.sum()), "overlap": checked,
        "bootstrap": {"resamples": n_boot, "seed": seed, "level": 0.95},
        "auc": _with_interval(melanoma_auc, score, y, n_boot, seed),
        "pauc_80": _with_interval(partial_auc, score, y, n_boot, seed),
        "oof": {"file": oof_name, "auc": melanoma_auc(oof_score, oof_y), "pauc_80": partial_auc(oof_score, oof_y)},
        "thresholds_from": fitted, "points": points, "calibration": _calibration(Path(run), score, y),
        "subgroups": groups, "gaps": gaps, "estimated": estimated, "min_each": MIN_EACH, "input_checks": {} if checks is None else _checked(checks, rows, y),
    }  # fmt: skip
    return External.from_json({**result, "file": str(External.save(Path(run), name, result))})
