"""Training: one readable loop, fold by fold, keeping the best checkpoint by AUC.

A run directory holds everything needed to understand and reuse it: config.json (resolved
config), folds.csv, metrics.csv (one row per fold and epoch), log.txt, fold<k>/oof.csv
(out-of-fold probabilities of the best epoch) and fold<k>/{best,best_20,last}.safetensors.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_model
from torch.nn import functional as F
from torch.utils.data import DataLoader

from melanoma import __version__
from melanoma.dataset import LesionDataset, seed_worker
from melanoma.folds import patient_folds
from melanoma.metadata import meta_features
from melanoma.metrics import melanoma_auc
from melanoma.model import MelanomaNet
from melanoma.progress import console, progress_bar
from melanoma.targets import class_names, melanoma_index
from melanoma.transforms import eval_transform, train_transform
from melanoma.weights import normalization


@dataclass
class TrainConfig:
    """Every setting of a run; saved as config.json in the run directory."""

    out: str = "runs/default"
    backbone: str = "efficientnet_b3"
    pretrained: bool = False
    image_size: int = 384
    scheme: str = "9c"
    use_meta: bool = False
    meta_hidden: tuple[int, int] = (512, 128)
    n_dropout: int = 5
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-5
    warmup: bool = True
    cosine: bool = True
    augment: bool = True
    k_folds: int = 5
    folds: list[int] = field(default_factory=lambda: [0])
    num_workers: int = -1  # -1: one per core but one, at most 8
    seed: int = 0
    device: str = "auto"


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """LR of a 0-based epoch: one warm-up epoch at LR/10, then cosine over the rest."""
    if cfg.warmup and epoch == 0:
        return cfg.lr / 10
    if not cfg.cosine:
        return cfg.lr
    start = 1 if cfg.warmup else 0
    span = max(1, cfg.epochs - start)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - start) / span))


def seed_everything(seed: int) -> None:
    """Fix Python, NumPy and torch seeds."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """'auto' is CUDA when there is one, else the CPU; any other name is taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def auto_workers(n: int) -> int:
    """Data-loader workers: n, or for -1 one per core but one (at most 8)."""
    return n if n >= 0 else max(0, min(8, (os.cpu_count() or 1) - 1))


def build_model(cfg: TrainConfig, n_meta: int) -> MelanomaNet:
    """The network a config describes."""
    return MelanomaNet(
        cfg.backbone,
        len(class_names(cfg.scheme)),
        n_meta=n_meta if cfg.use_meta else 0,
        meta_hidden=tuple(cfg.meta_hidden),
        n_dropout=cfg.n_dropout,
        pretrained=cfg.pretrained,
    )


def _forward(model: MelanomaNet, batch: dict, device: torch.device) -> torch.Tensor:
    meta = batch["meta"].to(device) if "meta" in batch else None
    return model(batch["image"].to(device), meta)


@torch.no_grad()
def predict_probs(
    model: MelanomaNet, loader: DataLoader, device: torch.device, label: str, progress: bool = True
) -> np.ndarray:
    """Softmax probabilities over a loader, in its order."""
    model.eval()
    out = []
    with progress_bar(label, len(loader), progress) as advance:
        for batch in loader:
            out.append(torch.softmax(_forward(model, batch, device).float(), dim=1).cpu())
            advance()
    return torch.cat(out).numpy()


def _log(out: Path, text: str) -> None:
    console.print(text, markup=False)
    with open(out / "log.txt", "a") as f:
        f.write(text + "\n")


def _save(model: torch.nn.Module, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_model(model, str(tmp))
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint


def train(table: pd.DataFrame, cfg: TrainConfig, progress: bool = True) -> pd.DataFrame:
    """Train every fold in cfg.folds; returns the per-epoch metrics of all of them."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    table = table.copy()
    if "fold" not in table.columns:
        table["fold"] = patient_folds(table, cfg.k_folds, cfg.seed)
    env = {"melanoma": __version__, "torch": torch.__version__, "python": platform.python_version()}
    config = {**asdict(cfg), "versions": env, "classes": class_names(cfg.scheme)}
    _claim_run_dir(out, config, cfg.folds)
    table.loc[table.split == "train", ["image_name", "fold"]].to_csv(out / "folds.csv", index=False)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    meta = meta_features(table).to_numpy(np.float32) if cfg.use_meta else None
    rows = []
    for fold in cfg.folds:
        rows += train_fold(table, meta, fold, cfg, out, progress)
    return pd.DataFrame(rows)


def _claim_run_dir(out: Path, config: dict, training: list[int]) -> None:
    """Refuse to mix two different runs in one directory; retraining a fold replaces its rows."""
    old_path = out / "config.json"
    if old_path.is_file():
        old = json.loads(old_path.read_text())
        ignore = {"folds", "versions", "out", "num_workers", "device"}
        fresh = json.loads(json.dumps(config))  # tuples become lists, as in the saved file
        changed = sorted(k for k in fresh if k not in ignore and old.get(k) != fresh[k])
        if changed:
            raise ValueError(
                f"{out} holds a run with other settings ({', '.join(changed)}); "
                "choose another --out or remove the directory"
            )
        config["folds"] = sorted(set(old.get("folds", [])) | set(config["folds"]))
    metrics = out / "metrics.csv"
    if metrics.is_file():
        kept = pd.read_csv(metrics)
        kept = kept[~kept.fold.isin(training)]
        if len(kept):
            kept.to_csv(metrics, index=False)
        else:
            metrics.unlink()


def train_fold(
    table: pd.DataFrame,
    meta: np.ndarray | None,
    fold: int,
    cfg: TrainConfig,
    out: Path,
    progress: bool = True,
) -> list[dict]:
    """Train one fold; validation after every epoch; best / best_20 / last checkpoints."""
    seed_everything(cfg.seed + fold)
    device = pick_device(cfg.device)
    fold_dir = out / f"fold{fold}"
    fold_dir.mkdir(exist_ok=True)
    is_train = (table.split == "train").to_numpy()
    trn = np.flatnonzero(is_train & (table.fold != fold).to_numpy() & (table.fold >= 0).to_numpy())
    val = np.flatnonzero(is_train & (table.fold == fold).to_numpy())
    if len(val) == 0:
        raise ValueError(f"fold {fold} has no validation rows (folds are 0..{cfg.k_folds - 1})")

    def loader(rows: np.ndarray, tf: object, shuffle: bool) -> DataLoader:
        ds = LesionDataset(table.iloc[rows], tf, None if meta is None else meta[rows])
        gen = torch.Generator().manual_seed(cfg.seed + fold)
        return DataLoader(
            ds,
            cfg.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            generator=gen,
            worker_init_fn=seed_worker,
            num_workers=auto_workers(cfg.num_workers),
            pin_memory=device.type == "cuda",
        )

    mean, std = normalization(cfg.backbone, cfg.pretrained)
    train_loader = loader(trn, train_transform(cfg.image_size, cfg.augment, mean, std), True)
    val_loader = loader(val, eval_transform(cfg.image_size, mean, std), False)
    model = build_model(cfg, 0 if meta is None else meta.shape[1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    mel = melanoma_index(cfg.scheme)
    val_rows = table.iloc[val]
    val_targets = torch.tensor(val_rows.target.to_numpy(dtype=np.int64))
    is_mel = val_rows.target.to_numpy() == mel
    is_2020 = val_rows.is_ext.to_numpy() == 0
    best, best_20, history = -1.0, -1.0, []
    _log(out, f"fold {fold}: {len(trn)} train / {len(val)} validation images on {device}")
    for epoch in range(cfg.epochs):
        lr = lr_at(epoch, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        train_loader.dataset.reseed(cfg.seed + 1000 * fold + epoch)  # workers reseed in seed_worker
        start, losses = time.time(), []
        with progress_bar(
            f"fold {fold} epoch {epoch + 1}/{cfg.epochs}", len(train_loader), progress
        ) as advance:
            for batch in train_loader:
                loss = F.cross_entropy(_forward(model, batch, device), batch["target"].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                advance(loss=f"{np.mean(losses[-20:]):.4f}")
        seconds = time.time() - start
        probs = predict_probs(model, val_loader, device, f"fold {fold} validation", progress)
        row = {
            "fold": fold,
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_loss": float(F.nll_loss(torch.log(torch.as_tensor(probs) + 1e-12), val_targets)),
            "acc": float((probs.argmax(1) == val_targets.numpy()).mean()),
            "auc": melanoma_auc(probs[:, mel], is_mel),
            "auc_20": melanoma_auc(probs[is_2020, mel], is_mel[is_2020]),
            "images_per_s": len(trn) / max(seconds, 1e-9),
        }
        history.append(row)
        pd.DataFrame([row]).to_csv(
            out / "metrics.csv", mode="a", index=False, header=not (out / "metrics.csv").exists()
        )
        _save(model, fold_dir / "last.safetensors")
        # NaN (one class in validation) never counts as better, but epoch 1 always saves.
        if row["auc"] > best or epoch == 0:
            best = max(best, row["auc"]) if not math.isnan(row["auc"]) else best
            _save(model, fold_dir / "best.safetensors")
            _write_oof(fold_dir / "oof.csv", val_rows, fold, probs, cfg)
        if row["auc_20"] > best_20 or epoch == 0:
            best_20 = max(best_20, row["auc_20"]) if not math.isnan(row["auc_20"]) else best_20
            _save(model, fold_dir / "best_20.safetensors")
        _log(
            out,
            "fold {fold} epoch {epoch}: lr {lr:.2e} train_loss {train_loss:.4f} val_loss "
            "{val_loss:.4f} acc {acc:.4f} auc {auc:.4f} auc_20 {auc_20:.4f}".format(**row),
        )
    return history


def _write_oof(path: Path, rows: pd.DataFrame, fold: int, probs: np.ndarray, cfg: TrainConfig) -> None:
    oof = pd.DataFrame(
        {
            "image_name": rows.image_name.to_numpy(),
            "fold": fold,
            "is_ext": rows.is_ext.to_numpy(),
            "target": rows.target.to_numpy(),
        }
    )
    oof[class_names(cfg.scheme)] = probs
    oof.to_csv(path, index=False)
