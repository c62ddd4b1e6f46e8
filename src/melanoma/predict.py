"""Prediction: average the fold models' softmax over the test images and write a submission."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from melanoma.dataset import LesionDataset
from melanoma.loader import auto_workers
from melanoma.metadata import meta_features
from melanoma.model import load_weights
from melanoma.targets import melanoma_index
from melanoma.train import TrainConfig, build_model, pick_device, predict_probs
from melanoma.transforms import eval_transform
from melanoma.weights import normalization

Checkpoint = Literal["best", "best_20", "last"]


class SubmissionError(ValueError):
    """A submission that would be rejected; nothing is written."""


def load_config(run: Path) -> TrainConfig:
    """The TrainConfig a run directory was trained with."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {run} a run directory made by `melanoma train`?")
    raw = json.loads(path.read_text())
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in raw.items() if k in fields})


def trained_folds(run: Path, checkpoint: Checkpoint = "best") -> list[int]:
    """Folds of a run that have the chosen checkpoint."""
    folds = sorted(int(p.parent.name[4:]) for p in Path(run).glob(f"fold*/{checkpoint}.safetensors"))
    if not folds:
        raise FileNotFoundError(f"{run}: no fold*/{checkpoint}.safetensors; train the run first")
    return folds


def predict_test(
    run: Path, table: pd.DataFrame, checkpoint: Checkpoint = "best", progress: bool = True
) -> pd.DataFrame:
    """Melanoma probability of every test row, averaged over the run's fold models."""
    run = Path(run)
    cfg = load_config(run)
    device = pick_device(cfg.device)
    test = table.split.to_numpy() == "test"
    if not test.any():
        raise ValueError("the table has no test rows to predict")
    meta = meta_features(table).to_numpy(np.float32) if cfg.use_meta else None
    rows = table[test]
    transform = eval_transform(cfg.image_size, *normalization(cfg.backbone, cfg.pretrained))
    ds = LesionDataset(rows, transform, None if meta is None else meta[test])
    loader = DataLoader(ds, cfg.batch_size, num_workers=auto_workers(cfg.num_workers))
    probs = []
    for fold in trained_folds(run, checkpoint):
        # The weights come from the run: never fetch pretrained ones to overwrite.
        model = build_model(
            replace(cfg, pretrained=False, weights=None), 0 if meta is None else meta.shape[1]
        )
        load_weights(model, run / f"fold{fold}" / f"{checkpoint}.safetensors")
        probs.append(predict_probs(model.to(device), loader, device, f"predict fold {fold}", progress))
    mean = np.mean(probs, axis=0)
    return pd.DataFrame(
        {"image_name": rows.image_name.to_numpy(), "target": mean[:, melanoma_index(cfg.scheme)]}
    )


def validate_submission(sub: pd.DataFrame, test_names: pd.Series) -> None:
    """Every test image exactly once, no NaN, scores in [0, 1]; raise SubmissionError otherwise."""
    if list(sub.columns) != ["image_name", "target"]:
        raise SubmissionError(f"columns must be image_name,target, got {','.join(map(str, sub.columns))}")
    problems = []
    dup = sub.image_name[sub.image_name.duplicated()]
    if len(dup):
        problems.append(f"{len(dup)} repeated image(s), e.g. {', '.join(dup.head(3))}")
    missing = set(test_names) - set(sub.image_name)
    if missing:
        problems.append(f"{len(missing)} test image(s) missing, e.g. {', '.join(sorted(missing)[:3])}")
    extra = set(sub.image_name) - set(test_names)
    if extra:
        problems.append(f"{len(extra)} image(s) not in the test set, e.g. {', '.join(sorted(extra)[:3])}")
    target = pd.to_numeric(sub.target, errors="coerce")
    if target.isna().any():
        problems.append(f"{int(target.isna().sum())} NaN or non-numeric target(s)")
    if ((target < 0) | (target > 1)).any():
        problems.append(f"{int(((target < 0) | (target > 1)).sum())} target(s) outside [0, 1]")
    if problems:
        raise SubmissionError("invalid submission: " + "; ".join(problems))


def write_submission(sub: pd.DataFrame, test_names: pd.Series, path: Path) -> Path:
    """Validate, then write a submission CSV."""
    validate_submission(sub, test_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sub.to_csv(path, index=False)
    return path
