"""Training: one readable loop, fold by fold, keeping the best checkpoints by AUC and AUC_20.

Everything it writes goes into a run directory through rundir.py (config.json, folds.csv,
metrics.csv, log.txt, and per fold the best / best_20 / last weights, the out-of-fold file of the
best epoch and the resume state, readable with torch.load(weights_only=True)).

The same code runs on one CPU, one GPU, or one process per device under torchrun (DDP).
Every epoch is seeded from (seed, fold, epoch), so a run resumed from its last complete epoch
continues exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from melanoma import __version__, rundir
from melanoma.config import TrainConfig
from melanoma.data.folds import make_folds
from melanoma.data.metadata import dropped_rows, meta_features
from melanoma.fileio import check_output
from melanoma.inputs.dataset import LesionDataset
from melanoma.inputs.decode import split_hdf5
from melanoma.inputs.loader import Timed, choose_workers, cores_available, fit_workers, make_loader
from melanoma.inputs.transforms import pipeline_transforms
from melanoma.metrics import validation_metrics
from melanoma.models.checkpoint import load_state, save_state, save_weights, weights_of
from melanoma.models.inference import autocast, pick_device, predict_probs
from melanoma.models.model import build_model
from melanoma.models.weights import normalization
from melanoma.progress import progress_bar
from melanoma.targets import class_names, melanoma_index
from melanoma.training import distributed as ddp
from melanoma.training.sampling import EpochSampler
from melanoma.training.tracking import WandB

WARMUP_MULTIPLIER = 10  # the warm-up scheduler's multiplier: the peak LR over the init LR
WAIT_WARNING = 0.10  # share of step time waiting for data above which an epoch warns


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """LR of a 0-based epoch, as the winners' code ran it (winning-solution.md, "Training"): the
    first epoch at cfg.lr (their "init LR"), then cosine from WARMUP_MULTIPLIER x cfg.lr over
    the remaining epochs. Without warm-up: no schedule, cfg.lr throughout (the reproduction's
    switch); without cosine: cfg.lr, then the peak constant."""
    if not cfg.warmup or epoch == 0:
        return cfg.lr
    peak = WARMUP_MULTIPLIER * cfg.lr
    if not cfg.cosine:
        return peak
    return peak * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / max(1, cfg.epochs - 1)))


def seed_everything(seed: int) -> None:
    """Fix Python, NumPy and torch (CPU and CUDA) seeds."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _forward(
    model: torch.nn.Module, batch: dict, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    image = batch["image"].to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    meta = batch["meta"].to(device, non_blocking=True) if "meta" in batch else None
    return model(image, meta)


def train_step(
    net: torch.nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    device: torch.device,
) -> float:
    """One optimiser step on a batch (mixed precision, loss scaling and clipping as configured);
    returns the loss."""
    with autocast(device, cfg.amp):
        logits = _forward(net, batch, device, cfg.channels_last)
    if "soft" in batch:  # pseudo-labels: cross-entropy against class probabilities
        loss = -(batch["soft"].to(device) * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
    else:
        loss = F.cross_entropy(logits.float(), batch["target"].to(device))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


def is_better(value: float, best: float | None) -> bool:
    """Checkpoint selection: the first epoch always counts; later, only a higher non-NaN score
    (an epoch whose AUC is NaN, one class in validation, never replaces a real score)."""
    if best is None:
        return True
    return not math.isnan(value) and (math.isnan(best) or value > best)


def training_table(
    data: Path, cfg: TrainConfig, progress: bool = True, table: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The ingested data a config trains on: its data folder size and class scheme, with
    DATA/folds.csv when there is one and the config asks for our (triple) folds (its number of
    folds must be the config's k). Refuses a run directory (cfg.out) that would write over the
    data."""
    from melanoma.data.folds import load_folds
    from melanoma.data.ingest import ingest, input_paths

    data = Path(data)
    if table is None:  # else: this data folder's table at cfg's data size and scheme, ingested already
        table = ingest(data, cfg.data_size, scheme=cfg.scheme, verify="header", progress=progress)
    table = table.copy()
    check_output(Path(cfg.out), folder=True, inputs=input_paths(data, table, cfg.data_size))
    if cfg.fold_method == "triple" and (data / "folds.csv").is_file():
        table["fold"] = load_folds(table, data / "folds.csv")
        k = int(table.fold.max()) + 1
        if k != cfg.k_folds:
            raise ValueError(
                f"{data / 'folds.csv'} splits the patients into {k} folds, and this run asks for "
                f"{cfg.k_folds} (--k-folds): pass --k-folds {k}, or rewrite the file with "
                f"`melanoma folds {data} --k {cfg.k_folds}`"
            )
    return table


def training_rows(table: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """The rows a config trains on, with folds: 2019 rows dropped unless cfg.external; the
    table's own `fold` column when it has one, else folds by cfg.fold_method."""
    table = table.copy()
    if not cfg.external:
        table = table[table.is_ext == 0].reset_index(drop=True)
    if "fold" not in table.columns:
        table["fold"] = make_folds(table, cfg.fold_method, cfg.k_folds, cfg.seed)
    return table


def config_record(
    cfg: TrainConfig, labelled: pd.DataFrame, features: pd.DataFrame | None, world_size: int
) -> dict:
    """What config.json records: the settings, versions, class names, the metadata columns
    (prediction aligns to these), the process count and the data (the run refuses other data)."""
    env = {"melanoma": __version__, "torch": torch.__version__, "python": platform.python_version()}
    config = {
        **asdict(cfg),
        "versions": env,
        "classes": class_names(cfg.scheme),
        "meta_columns": [] if features is None else list(features.columns),
        "world_size": world_size,
        "data": rundir.data_identity(labelled),
    }
    return json.loads(json.dumps(config))  # tuples become lists, as in the saved file


def train(table: pd.DataFrame, cfg: TrainConfig, progress: bool = True, resume: bool = False) -> pd.DataFrame:
    """Train every fold in cfg.folds; returns the per-epoch metrics of all of them.

    With resume=True, folds with a resume state continue from their last complete epoch and
    finished folds are kept as they are; without it, a fold left unfinished is an error.
    """
    d, device = ddp.setup(cfg.device)
    try:
        with contextlib.ExitStack() as stack:  # the fold locks, and undoing a failed start
            if cfg.batch_size % d.world_size or cfg.batch_size // d.world_size < 2:  # before any write
                raise ValueError(
                    f"batch size {cfg.batch_size} must split evenly over {d.world_size} process(es), "
                    "at least 2 images each (BatchNorm needs two)"
                )
            out = Path(cfg.out)
            table = training_rows(table, cfg)
            features = meta_features(table, dropped_rows(table)) if cfg.use_meta else None
            labelled = table.split == "train"
            if "pseudo" in table:  # pseudo-labelled copies belong to no fold
                labelled &= ~table.pseudo.astype(bool)
            config = config_record(cfg, table[labelled], features, d.world_size)
            rundir.refuse_foreign(out)  # before the fold locks are made in it
            problem = None
            if d.is_main:  # one holder per job: the main process, for as long as the folds train
                # entered first, so it runs last: a start that fails before an epoch is saved
                # leaves nothing behind, lock files included
                stack.enter_context(rundir.undone_if_failed(out, cfg.folds))
                try:
                    stack.enter_context(rundir.fold_locks(out, cfg.folds))
                except ValueError as err:
                    problem = str(err)
            problem = ddp.broadcast_object(problem, d)
            if problem:
                raise ValueError(problem)
            rundir.check(out, config, cfg.folds, resume)  # every rank checks; none writes yet
            ddp.barrier(d)
            if d.is_main:
                out.mkdir(parents=True, exist_ok=True)
                with rundir.lock(out):  # several folds of one run may train at once (ablate units)
                    rundir.claim(out, config, cfg.folds, resume, table[labelled])
            ddp.barrier(d)
            meta = None if features is None else features.to_numpy(np.float32)
            rows = []
            for fold in cfg.folds:
                rows += train_fold(table, meta, fold, cfg, out, progress, resume, d, device)
            return pd.DataFrame(rows)
    finally:
        ddp.teardown()


def auc_defined(is_melanoma: np.ndarray) -> bool:
    """AUC needs both classes among the validation rows."""
    return bool(np.any(is_melanoma)) and not bool(np.all(is_melanoma))


def selection_score(row: dict, key: str, defined: bool) -> float:
    """What a checkpoint is chosen by: the AUC (`key`: auc or auc_20), or, where the fold's
    validation rows make it undefined (no melanoma, or nothing else), the lowest validation loss."""
    return row[key] if defined else -row["val_loss"]


def _undefined_auc_notes(fold: int, is_mel: np.ndarray, is_2020: np.ndarray) -> list[str]:
    notes = []
    for key, name, rows in [("auc", "best", is_mel), ("auc_20", "best_20", is_mel[is_2020])]:
        if not auc_defined(rows):
            held = "no melanoma" if not rows.any() else "only melanomas"
            among = " among their 2020 images" if key == "auc_20" else ""
            notes.append(
                f"fold {fold}: the validation rows hold {held}{among}, so {key.upper()} is undefined "
                f"for this fold; its {name} checkpoint is the epoch with the lowest validation loss"
            )
    return notes


def _epoch_seed(cfg: TrainConfig, fold: int, epoch: int) -> int:
    return cfg.seed + 1000 * fold + epoch


def train_fold(
    table: pd.DataFrame,
    meta: np.ndarray | None,
    fold: int,
    cfg: TrainConfig,
    out: Path,
    progress: bool = True,
    resume: bool = False,
    d: ddp.Dist | None = None,
    device: torch.device | None = None,
) -> list[dict]:
    """Train one fold; validation after every epoch; best / best_20 / last checkpoints; resume state."""
    d = d or ddp.Dist()
    device = device or pick_device(cfg.device)
    main = d.is_main
    show = progress and main
    seed_everything(cfg.seed + fold)
    fold_dir = rundir.fold_dir(out, fold)
    fold_dir.mkdir(parents=True, exist_ok=True)
    state_path = rundir.state_path(out, fold)
    if resume and state_path.is_file():
        done = load_state(state_path, mmap=True)
        if done["epoch"] >= cfg.epochs:  # nothing to build or measure
            if main:
                rundir.record_history(out, fold, done["history"])  # metrics.csv as the state has it
            rundir.log(out, f"fold {fold}: finished earlier; kept as it is", main)
            return list(done["history"])
    is_train = (table.split == "train").to_numpy()
    # Pseudo-labelled rows (noisy_student.py) train every fold and never validate one.
    pseudo = table.pseudo.to_numpy(bool) if "pseudo" in table else np.zeros(len(table), bool)
    trn = np.flatnonzero(is_train & (((table.fold != fold) & (table.fold >= 0)).to_numpy() | pseudo))
    val = np.flatnonzero(is_train & (table.fold == fold).to_numpy() & ~pseudo)
    soft_columns = [c for c in table.columns if c.startswith("soft_")]
    soft = table[soft_columns].to_numpy(np.float32) if soft_columns else None
    if len(val) == 0:
        raise ValueError(f"fold {fold} has no validation rows (folds are 0..{cfg.k_folds - 1})")
    batch = cfg.batch_size // d.world_size  # train() checked that it splits evenly

    mean, std = normalization(cfg.backbone, cfg.pretrained)

    def dataset(rows: np.ndarray, transform: object, targets: np.ndarray | None = None) -> LesionDataset:
        return LesionDataset(table.iloc[rows], transform, None if meta is None else meta[rows], targets)

    train_tf, val_tf = pipeline_transforms(cfg.image_size, cfg.augment, mean, std, cfg.pipeline)
    train_ds = dataset(trn, train_tf, None if soft is None else soft[trn])
    if cfg.pos_oversample > 1 or cfg.neg_per_epoch is not None:  # ISIC 2024: few positives
        positive = table.target.to_numpy()[trn] == melanoma_index(cfg.scheme)
        sampler = EpochSampler(
            positive, cfg.pos_oversample, cfg.neg_per_epoch, cfg.seed + fold, d.rank, d.world_size
        )
    elif d.enabled:
        sampler = DistributedSampler(
            train_ds, d.world_size, d.rank, shuffle=True, seed=cfg.seed + fold, drop_last=True
        )
    else:
        sampler = None
    model = build_model(cfg, 0 if meta is None else meta.shape[1]).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    workers, why = cfg.num_workers, "as asked"
    if workers < 0:
        n_meta = 0 if meta is None else meta.shape[1]
        workers, why = choose_workers(
            train_ds, model, batch, cfg.image_size, device, cfg.amp, n_meta, d.local_world_size
        )
    itemsize = 1 if cfg.pipeline == "fast" else 4  # uint8 or float32 batches
    workers = fit_workers(
        workers, batch, cfg.image_size, d.local_world_size, announce=main, itemsize=itemsize
    )
    generator = torch.Generator()
    pin = device.type == "cuda"
    train_loader = make_loader(
        train_ds,
        batch,
        workers,
        sampler=sampler,
        shuffle=True,
        drop_last=True,
        generator=generator,
        pin_memory=pin,
    )
    own_val = val[ddp.shard(len(val), d)]  # this rank's share of validation, never padded
    val_loader = make_loader(dataset(own_val, val_tf), batch, workers, pin_memory=pin)

    if d.enabled and cfg.sync_bn:  # after measuring the step rate: synchronized layers need every rank
        model = ddp.sync_batchnorm(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    start, best, best_20, history = 0, None, None, []
    if resume and state_path.is_file():
        state = load_state(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        start, best, best_20, history = state["epoch"], state["best"], state["best_20"], state["history"]
        if main:
            rundir.record_history(out, fold, history)
        rundir.log(out, f"fold {fold}: resuming after epoch {start} of {cfg.epochs}", main)
    elif main:
        state_path.unlink(missing_ok=True)  # a fresh start: a crash now must not revive the old run
    net: torch.nn.Module = model
    if d.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    mel = melanoma_index(cfg.scheme)
    val_rows = table.iloc[val]
    val_targets, val_is_ext = val_rows.target.to_numpy(), val_rows.is_ext.to_numpy()
    tracker = WandB(cfg, out, fold) if main and cfg.wandb != "off" else None
    is_mel = val_targets == mel
    by_auc = {"auc": auc_defined(is_mel), "auc_20": auc_defined(is_mel[val_is_ext == 0])}
    rundir.log(
        out,
        f"fold {fold}: {len(trn)} train / {len(val)} validation images on {device} x {d.world_size}"
        f"{' (synchronized BatchNorm)' if d.enabled and cfg.sync_bn else ''}, "
        f"{workers} loader worker(s) per process ({why})",
        main,
    )
    for note in _undefined_auc_notes(fold, is_mel, val_is_ext == 0):
        rundir.log(out, note, main)
    for epoch in range(start, cfg.epochs):
        lr = lr_at(epoch, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        seed = _epoch_seed(cfg, fold, epoch)
        torch.manual_seed(seed + 7919 * d.rank)  # dropout masks
        generator.manual_seed(seed)  # shuffling
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_ds.reseed(seed)  # augmentation, per image: the same for any worker or process count
        net.train()
        timed, losses = Timed(train_loader), []
        with progress_bar(f"fold {fold} epoch {epoch + 1}/{cfg.epochs}", len(train_loader), show) as advance:
            for item in timed:
                losses.append(train_step(net, item, optimizer, scaler, cfg, device))
                advance(loss=f"{np.mean(losses[-20:]):.4f}")
        train_loss, wait_share = _reduce_epoch(losses, timed.wait_share, d)
        ddp.sync_buffers(model, d)
        own = predict_probs(
            model, val_loader, device, f"fold {fold} validation", show, cfg.amp, cfg.channels_last
        )
        probs = ddp.gather_shards(own, len(val), d)
        row = {
            "fold": fold,
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": train_loss,
            **validation_metrics(probs, val_targets, val_is_ext, mel),
            "images_per_s": timed.batches * batch * d.world_size / max(timed.total, 1e-9),
            "data_wait": wait_share,
        }
        history.append(row)
        if main:
            save_weights(model, rundir.weights_path(out, fold, "last"))
            if is_better(score := selection_score(row, "auc", by_auc["auc"]), best):
                best = score
                save_weights(model, rundir.weights_path(out, fold, "best"))
                rundir.write_oof(out, fold, val_rows, probs, cfg.scheme)
            if is_better(score := selection_score(row, "auc_20", by_auc["auc_20"]), best_20):
                best_20 = score
                save_weights(model, rundir.weights_path(out, fold, "best_20"))
            state = {
                "model": weights_of(model),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "epoch": epoch + 1,
                "epochs": cfg.epochs,
                "best": best,
                "best_20": best_20,
                "history": history,
            }
            save_state(state_path, state)  # the commit point of the epoch
            rundir.record_history(out, fold, history)
            if tracker:
                tracker.log(row)
        rundir.log(
            out,
            "fold {fold} epoch {epoch}: lr {lr:.2e} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
            "acc {acc:.4f} auc {auc:.4f} auc_20 {auc_20:.4f} | {images_per_s:.1f} img/s, "
            "{data_wait:.0%} waiting for data".format(**row),
            main,
        )
        if wait_share > WAIT_WARNING:
            hdf5 = split_hdf5(table.image_path.iloc[0]) is not None
            rundir.log(out, _wait_advice(wait_share, workers, cfg, hdf5), main)
        ddp.barrier(d)
    if tracker:
        tracker.finish()
    return history


def _reduce_epoch(losses: list[float], wait_share: float, d: ddp.Dist) -> tuple[float, float]:
    """Mean training loss over all processes, and the largest share of time spent waiting."""
    loss_sum = torch.tensor([float(np.sum(losses)), float(len(losses))], dtype=torch.float64)
    wait = torch.tensor([wait_share], dtype=torch.float64)
    if d.enabled:
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(wait, op=torch.distributed.ReduceOp.MAX)
    mean = loss_sum[0].item() / loss_sum[1].item() if loss_sum[1] > 0 else float("nan")
    return mean, float(wait.item())


def _wait_advice(share: float, workers: int, cfg: TrainConfig, hdf5: bool) -> str:
    """What to try when the loader starves the model; `prepare` only where it would help (not on
    data already prepared, nor on ISIC 2024's small crops in HDF5)."""
    cores = cores_available()
    prepare = (
        ""
        if cfg.data_size is not None or hdf5
        else "train from a prepared folder close to the input size (melanoma prepare, --data-size), "
    )
    return (
        f"warning: {share:.0%} of step time went to waiting for data with {workers} loader worker(s). "
        f"Try more workers (--workers; this machine has {cores} cores), {prepare}"
        "or put the images on a faster disk."
    )
