"""Noisy Student: a teacher labels unlabelled images, a noised student learns from both, repeat.

Iteration 0 trains the teacher as usual. Each iteration then: the current teacher (its fold models,
8-way TTA) predicts the unlabelled images (the test set, or a folder); predictions below a
confidence threshold are dropped; the rest become soft (class probabilities) or hard (one-hot)
labels; rare classes are repeated towards the most common one (at most `max_repeat` times); and a
student of equal or larger size trains on the labelled rows plus the pseudo-labelled ones, with
noise: the augmentation recipe, dropout in the head and stochastic depth in the backbone. The
student becomes the next teacher. Pseudo-labelled rows train every fold and never enter a
validation fold, so each iteration's out-of-fold AUC is measured on labelled images only.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.config import TrainConfig
from melanoma.evaluation.predict import predict_rows
from melanoma.metrics import melanoma_auc
from melanoma.progress import console
from melanoma.run import Run
from melanoma.targets import class_names, melanoma_index
from melanoma.training.train import train


def _parameters(backbone: str) -> int:
    """A backbone's parameter count, built on the meta device (no memory, no download)."""
    import torch

    from melanoma.models.model import create_backbone

    with torch.device("meta"):
        return sum(p.numel() for p in create_backbone(backbone, pretrained=False).parameters())


def student_of(teacher: TrainConfig, backbone: str | None = None, drop_path: float = 0.2) -> TrainConfig:
    """The student's settings: the teacher's, with its own backbone (as large or larger; default the
    teacher's) and noise: the augmentation recipe on and stochastic depth `drop_path`."""
    return replace(teacher, backbone=backbone or teacher.backbone, drop_path=drop_path, augment=True)


def pseudo_labels(
    probs: np.ndarray, threshold: float = 0.0, soft: bool = True, max_repeat: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Which unlabelled rows to use (indices, repeats included) and their label vectors.

    Rows whose largest class probability is below `threshold` are dropped. Labels are the
    probabilities (soft) or one-hot of the most likely class (hard). Each class's rows are then
    repeated round(largest class count / its count) times, capped at max_repeat.
    """
    probs = np.asarray(probs, dtype=np.float32)
    keep = np.flatnonzero(probs.max(1) >= threshold)
    top = probs[keep].argmax(1)
    counts = np.bincount(top, minlength=probs.shape[1])
    largest = counts.max() if len(keep) else 0
    rows = []
    for c in np.flatnonzero(counts):
        repeat = int(min(max_repeat, max(1, round(largest / counts[c]))))
        rows += list(np.repeat(keep[top == c], repeat))
    rows = np.asarray(sorted(rows), dtype=np.int64)
    labels = probs[rows] if soft else np.eye(probs.shape[1], dtype=np.float32)[probs[rows].argmax(1)]
    return rows, labels


def with_pseudo(
    table: pd.DataFrame, unlabelled: pd.DataFrame, rows: np.ndarray, labels: np.ndarray, scheme: str
) -> pd.DataFrame:
    """The labelled table plus pseudo-labelled copies of `unlabelled` rows (split train, fold -1,
    pseudo True), with soft_<class> label columns (one-hot of the true class on labelled rows)."""
    names = class_names(scheme)
    base = table.copy()
    base["pseudo"] = False
    onehot = np.zeros((len(base), len(names)), np.float32)
    labelled = base.target.to_numpy() >= 0
    onehot[np.flatnonzero(labelled), base.target.to_numpy()[labelled]] = 1
    extra = unlabelled.iloc[rows].copy()
    extra["split"], extra["fold"], extra["pseudo"] = "train", -1, True
    extra["target"] = labels.argmax(1)
    both = pd.concat([base, extra], ignore_index=True)
    both[[f"soft_{n}" for n in names]] = np.vstack([onehot, labels])
    return both


def oof_auc(run: Path, scheme: str) -> tuple[float, float]:
    """Out-of-fold AUC and AUC_20 of a run's best epochs (training's oof.csv files)."""
    oof = Run(run).oof()
    mel = class_names(scheme)[melanoma_index(scheme)]
    is_mel = (oof.target == melanoma_index(scheme)).to_numpy()
    old = (oof.is_ext == 0).to_numpy()
    return melanoma_auc(oof[mel], is_mel), melanoma_auc(oof[mel][old], is_mel[old])


def noisy_student(
    table: pd.DataFrame,
    teacher: TrainConfig,
    student: TrainConfig,
    out: Path,
    unlabelled: pd.DataFrame | None = None,
    iterations: int = 1,
    soft: bool = True,
    threshold: float = 0.5,
    max_repeat: int = 5,
    progress: bool = True,
) -> pd.DataFrame:
    """Teacher (OUT/iter0), then `iterations` students (OUT/iter<i>); returns and writes
    OUT/noisy_student.csv: per iteration its backbone, pseudo-labelled rows and OOF AUC / AUC_20.
    `unlabelled` defaults to the table's test rows. The table must carry its folds."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if "fold" not in table:
        raise ValueError("the table needs its folds (a fold column) so every iteration uses the same ones")
    if teacher.use_meta or student.use_meta:
        raise ValueError(
            "Noisy Student here trains image-only models (pseudo-labelled copies would skew n_images)"
        )
    if teacher.scheme != student.scheme:
        raise ValueError("teacher and student must predict the same classes (scheme)")
    sizes = {name: _parameters(name) for name in (teacher.backbone, student.backbone)}
    if sizes[student.backbone] < sizes[teacher.backbone]:
        raise ValueError(
            f"the student ({student.backbone}, {sizes[student.backbone]:,} parameters) must be as large as the "
            f"teacher ({teacher.backbone}, {sizes[teacher.backbone]:,})"
        )
    unlabelled = table[table.split == "test"] if unlabelled is None else unlabelled
    if len(unlabelled) == 0:
        raise ValueError("no unlabelled images to pseudo-label")
    records = []
    run = out / "iter0"
    train(table, replace(teacher, out=str(run)), progress=progress, resume=True)
    auc, auc_20 = oof_auc(run, teacher.scheme)
    records.append({"iteration": 0, "role": "teacher", "backbone": teacher.backbone, "pseudo_rows": 0,
                    "oof_auc": auc, "oof_auc_20": auc_20})  # fmt: skip
    console.print(f"noisy student: teacher OOF AUC {auc:.4f}")
    for i in range(1, iterations + 1):
        probs = predict_rows(run, unlabelled, None, Run(run).trained_folds(), "best", True, progress).mean(0)
        rows, labels = pseudo_labels(probs, threshold, soft, max_repeat)
        if len(rows) == 0:  # a student on the labelled rows alone is the teacher again, not a student
            raise ValueError(
                f"iteration {i}: no unlabelled image reaches the pseudo-label threshold {threshold} (the most "
                f"confident is {probs.max(1).max():.3f}); lower --threshold"
            )
        mixed = with_pseudo(table, unlabelled, rows, labels, student.scheme)
        run = out / f"iter{i}"
        train(mixed, replace(student, out=str(run)), progress=progress, resume=True)
        auc, auc_20 = oof_auc(run, student.scheme)
        records.append({"iteration": i, "role": "student", "backbone": student.backbone, "pseudo_rows": len(rows),
                        "oof_auc": auc, "oof_auc_20": auc_20})  # fmt: skip
        console.print(f"noisy student: iteration {i}, {len(rows)} pseudo-labelled rows, OOF AUC {auc:.4f}")
    result = pd.DataFrame(records)
    result.to_csv(out / "noisy_student.csv", index=False)
    settings = {"soft": soft, "threshold": threshold, "max_repeat": max_repeat, "iterations": iterations}
    (out / "noisy_student.json").write_text(json.dumps(settings, indent=2) + "\n")
    return result
