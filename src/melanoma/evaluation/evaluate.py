"""Out-of-fold evaluation as the winners reported it, with intervals: the number to trust.

Each fold's model predicts its own validation rows (by default with 8-way test-time augmentation);
the out-of-fold table then gives AUC "raw" (all rows pooled) and "rank" (predictions turned into
percentile ranks within each fold first), on all rows and on 2020 rows, plus the ISIC 2024 partial
AUC above 80% sensitivity, each with a bootstrap 95% interval; for more than two classes also the
ISIC 2019 challenge's balanced multi-class accuracy and the confusion matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.evaluation.predict import meta_matrix, predict_rows
from melanoma.metrics import (
    balanced_accuracy,
    bootstrap_ci,
    confusion,
    melanoma_auc,
    partial_auc,
    predicted_classes,
    rank_within,
)
from melanoma.results import Evaluation
from melanoma.run import Run
from melanoma.rundir import (
    checkpoint_name,
    save_evaluation,
)
from melanoma.targets import class_names, melanoma_index


def predict_oof(
    run: Path,
    table: pd.DataFrame,
    checkpoint: str = "best",
    tta: bool = True,
    progress: bool = True,
    allow_unfinished: bool = False,
) -> pd.DataFrame:
    """Each trained fold's model on its validation rows: image_name, fold, is_ext, target and one
    column per class."""
    opened = Run(run)
    cfg, folds = opened.settings, opened.folds
    train = table[table.split == "train"]
    unknown = ~train.image_name.isin(folds.index)
    if unknown.all():
        raise ValueError(f"none of the data's train images are in {run}/folds.csv; is it the run's data?")
    fold_of = train.image_name.map(folds)
    opened.check_data(train.assign(fold=fold_of)[~unknown.to_numpy()])
    meta = meta_matrix(table, run)
    parts = []
    for k in opened.trained_folds(checkpoint, allow_unfinished):
        rows = train[(fold_of == k).to_numpy()]
        if len(rows) == 0:
            raise ValueError(f"fold {k}: none of its validation images are in the data")
        m = None if meta is None else meta[table.index.get_indexer(rows.index)]
        probs = predict_rows(run, rows, m, [k], checkpoint, tta, progress)[0]
        part = pd.DataFrame(
            {"image_name": rows.image_name.to_numpy(), "fold": k, "is_ext": rows.is_ext.to_numpy(),
             "target": rows.target.to_numpy()}
        )  # fmt: skip
        part[class_names(cfg.scheme)] = probs
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def oof_scores(oof: pd.DataFrame, scheme: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """AUC raw and rank, and partial AUC above 80% sensitivity, on all rows and on 2020 rows (ISIC
    2024, scheme mb: all rows only), each with a bootstrap 95% interval; one row per (metric, rows)."""
    melanoma = class_names(scheme)[melanoma_index(scheme)]
    score = oof[melanoma].to_numpy(dtype=float)
    folds = oof.fold.to_numpy()
    is_mel = (oof.target == melanoma_index(scheme)).to_numpy()
    out = []
    subsets = [("all", np.ones(len(oof), bool)), ("2020", (oof.is_ext == 0).to_numpy())]
    for rows_name, at in subsets[:1] if scheme == "mb" else subsets:  # ISIC 2024 has no 2020 rows
        ranked = rank_within(score[at], folds[at])  # ranks among these rows only, as the winners did
        for metric, values, fn in [
            ("auc", score[at], melanoma_auc),
            ("auc_rank", ranked, melanoma_auc),
            ("pauc_80", score[at], partial_auc),
        ]:
            low, high = bootstrap_ci(fn, values, is_mel[at], n_boot, seed)
            out.append(
                {"metric": metric, "rows": rows_name, "value": fn(values, is_mel[at]), "low": low,
                 "high": high, "images": int(at.sum()), "melanomas": int(is_mel[at].sum())}
            )  # fmt: skip
    return pd.DataFrame(out)


def multiclass_scores(oof: pd.DataFrame, scheme: str, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """For more than two classes: the balanced multi-class accuracy with a bootstrap 95% interval,
    the undecided rows (tied top probability) and the confusion matrix; None otherwise."""
    names = class_names(scheme)
    if len(names) <= 2:
        return None
    probs, targets = oof[names].to_numpy(dtype=float), oof.target.to_numpy(dtype=np.int64)

    def resampled(rows: np.ndarray, _: np.ndarray) -> float:
        at = rows.astype(np.int64)
        return balanced_accuracy(probs[at], targets[at])

    low, high = bootstrap_ci(resampled, np.arange(len(oof), dtype=float), np.zeros(len(oof)), n_boot, seed)
    return {
        "classes": names, "balanced_accuracy": balanced_accuracy(probs, targets), "low": low, "high": high,
        "images": len(oof), "undecided": int((predicted_classes(probs) < 0).sum()),
        "confusion": confusion(probs, targets).tolist(),
    }  # fmt: skip


def per_fold(oof: pd.DataFrame, scheme: str) -> pd.DataFrame:
    """AUC and AUC_20 of each fold's own validation rows."""
    melanoma = class_names(scheme)[melanoma_index(scheme)]
    rows = []
    for k, part in oof.groupby("fold"):
        is_mel = (part.target == melanoma_index(scheme)).to_numpy()
        old = (part.is_ext == 0).to_numpy()
        rows.append(
            {"fold": int(k), "images": len(part), "auc": melanoma_auc(part[melanoma], is_mel),
             "auc_20": melanoma_auc(part[melanoma][old], is_mel[old])}
        )  # fmt: skip
    return pd.DataFrame(rows)


def evaluate(
    run: Path,
    table: pd.DataFrame | None = None,
    checkpoint: str = "best",
    tta: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
    allow_unfinished: bool = False,
) -> Evaluation:
    """Score a run out of fold; writes RUN/oof_<checkpoint>[_tta].csv (re-predicted) and
    RUN/evaluation_<checkpoint>[_tta].json (the result, also returned; its path in `file`).

    With a table (the run's data), each fold model predicts its validation rows again (with
    8-way TTA by default); without one, training's own oof.csv files are scored (best checkpoint,
    no TTA).
    """
    opened = Run(run)
    scheme, checkpoint = opened.scheme, checkpoint_name(checkpoint)
    if opened.is_tree:  # a tree model's out-of-fold scores are final: no images, no TTA
        table, tta, checkpoint = None, False, "best"
    if table is None:
        if tta or checkpoint != "best":
            raise ValueError("test-time augmentation and other checkpoints need the data (--data DIR)")
        if not opened.is_tree:  # oof() itself checks a tree run's folds
            opened.trained_folds("best", allow_unfinished)  # refuses (or names) unfinished folds
        oof, predicted = opened.oof(allow_unfinished), None
    else:
        oof = predicted = predict_oof(run, table, checkpoint, tta, progress, allow_unfinished)
    result = {
        "run": str(run),
        "checkpoint": checkpoint,
        "tta": bool(tta and table is not None),
        "bootstrap": {"resamples": n_boot, "seed": seed, "level": 0.95},
        "scores": oof_scores(oof, scheme, n_boot, seed).to_dict(orient="records"),
        "folds": per_fold(oof, scheme).to_dict(orient="records"),
        "data_identity": opened.data_identity,
        "unfinished_folds": sorted(opened.unfinished_folds(sorted(oof.fold.unique().tolist()))),
        "multiclass": None if opened.is_tree else multiclass_scores(oof, scheme, n_boot, seed),
    }
    return Evaluation.from_json(
        save_evaluation(opened.path, checkpoint, tta and table is not None, predicted, result)
    )
