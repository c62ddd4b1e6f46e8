"""Inputs the model should not score: image-quality flags and an out-of-distribution score.

`melanoma ood RUN --data DATA` fits, per fold model, what its training images look like to it:
the mean and the Ledoit-Wolf shrunk covariance of their pooled backbone features (up to FIT_ROWS
images of the fold's training rows). An image's Mahalanobis distance from them is its distance
score (Lee et al. 2018); its energy score is -logsumexp of its logits (Liu et al. 2020). Each
score is put on the scale of its threshold, the 95th percentile over that fold's own out-of-fold
images (1 there: the distance divided by it; the energy as 1 plus its excess over it in units of
the out-of-fold median-to-threshold spread), and averaged over the folds, so 95% of out-of-fold images score at most 1. `DEFAULT` is the one
the flag uses: benchmarks/ood_scores.py measured which separates non-dermoscopy photographs and
another clinic's images from held-out lesions better. Saved as RUN/ood.safetensors (the arrays)
and RUN/ood.json (thresholds and what they were fitted on).

predict and validate then add per image: `quality` (inputs/quality.py), `ood_distance`,
`ood_energy`, `ood` (the DEFAULT score above 1) and `flag` (a quality problem or ood): a column,
never a dropped row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.covariance import LedoitWolf

from melanoma import rundir
from melanoma.data.folds import fold_rows
from melanoma.inputs.loader import eval_loader
from melanoma.inputs.quality import file_flags
from melanoma.models.inference import pick_device
from melanoma.progress import progress_bar
from melanoma.run import Run

FIT_ROWS = 4000
PASS = 95.0  # percentile of out-of-fold images a threshold lets through
SCORES = ("distance", "energy")
DEFAULT = "distance"


def features_and_logits(run: Path, fold: int, rows: pd.DataFrame, meta: np.ndarray | None,
                        progress: bool = True) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Pooled backbone features and logits of `rows` under one fold model (no TTA)."""
    opened = Run(run)
    cfg = opened.settings
    device = pick_device(cfg.device)
    model = opened.model(fold).to(device).eval()
    feats, logits = [], []
    with torch.no_grad(), progress_bar(f"ood: fold {fold}", len(rows), progress) as advance:
        for batch in eval_loader(cfg, rows, meta, max(1, cfg.batch_size)):
            meta_batch = batch["meta"].to(device) if "meta" in batch else None
            pooled, full = model.embed(batch["image"].to(device), meta_batch)
            feats.append(pooled.float().cpu())
            logits.append(model.fc(full).float().cpu())
            advance(len(pooled))
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def mahalanobis(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = features - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, precision, centred), 0))


def energy(logits: np.ndarray) -> np.ndarray:
    """-logsumexp of the logits: higher for inputs unlike the training data."""
    top = logits.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))


def fit(
    run: Path, table: pd.DataFrame, meta: np.ndarray | None, seed: int = 0, progress: bool = True
) -> dict:
    """Fit and save the reference of every trained fold (see the module docstring); returns ood.json's content."""
    opened = Run(run)
    folds = opened.trained_folds("best")
    table = table.assign(fold=table.image_name.map(opened.folds).fillna(-1).astype(int))
    arrays, info = {}, {"folds": {}, "pass": PASS, "default": DEFAULT, "fit_rows": FIT_ROWS}
    rng = np.random.default_rng(seed)
    for k in folds:
        train_at, valid_at = fold_rows(table, k)
        train_at = np.sort(rng.choice(train_at, min(FIT_ROWS, len(train_at)), replace=False))
        pick = lambda at: (table.iloc[at], None if meta is None else meta[at])  # noqa: E731
        train_f, _ = features_and_logits(run, k, *pick(train_at), progress=progress)
        valid_f, valid_l = features_and_logits(run, k, *pick(valid_at), progress=progress)
        shrunk = LedoitWolf().fit(train_f)
        arrays[f"fold{k}.mean"] = shrunk.location_.astype(np.float32)
        arrays[f"fold{k}.precision"] = shrunk.precision_.astype(np.float32)
        distance, e = mahalanobis(valid_f, shrunk.location_, shrunk.precision_), energy(valid_l)
        info["folds"][str(k)] = {
            "distance": float(np.percentile(distance, PASS)), "energy": float(np.percentile(e, PASS)),
            "energy_spread": float(max(np.percentile(e, PASS) - np.median(e), 1e-6)),
            "fitted_on": len(train_at), "thresholds_from": len(valid_at),
        }  # fmt: skip
    rundir.save_ood(run, arrays, info)
    return info


def scores(
    run: Path, rows: pd.DataFrame, meta: np.ndarray | None, progress: bool = True
) -> pd.DataFrame | None:
    """ood_distance, ood_energy (each over its threshold, averaged over folds) and ood (DEFAULT above 1)
    of `rows`; None when the run has no reference (`melanoma ood` fits it)."""
    saved = rundir.load_ood(run)
    if saved is None:
        return None
    arrays, info = saved
    parts = {s: [] for s in SCORES}
    for k, thresholds in info["folds"].items():
        f, logits = features_and_logits(run, int(k), rows, meta, progress)
        d = mahalanobis(
            f, arrays[f"fold{k}.mean"].astype(np.float64), arrays[f"fold{k}.precision"].astype(np.float64)
        )
        parts["distance"].append(d / thresholds["distance"])
        # the energy has any sign: measured from its threshold in units of the OOF median-to-threshold spread
        e = energy(logits)
        parts["energy"].append(1 + (e - thresholds["energy"]) / thresholds["energy_spread"])
    out = pd.DataFrame({f"ood_{s}": np.mean(parts[s], axis=0) for s in SCORES}, index=rows.index)
    out["ood"] = out[f"ood_{info['default']}"] > 1
    return out


def input_checks(
    run: Path, rows: pd.DataFrame, meta: np.ndarray | None, progress: bool = True
) -> pd.DataFrame:
    """Per row: quality (flags, '' when it passes), the OOD scores (NaN without a reference), and flag."""
    size = Run(run).settings.image_size
    out = pd.DataFrame({"image_name": rows.image_name.to_numpy()}, index=rows.index)
    out["quality"] = [file_flags(p, size) for p in rows.image_path]
    found = scores(run, rows, meta, progress)
    if found is None:
        out[["ood_distance", "ood_energy"]], out["ood"] = np.nan, pd.NA
    else:
        out = out.join(found)
    out["flag"] = (out.quality != "") | out.ood.fillna(False).astype(bool)
    return out.reset_index(drop=True)
