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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from melanoma import __version__, rundir
from melanoma.config import TrainConfig, resolve
from melanoma.data.folder import DataFolder
from melanoma.data.folds import fold_rows, make_folds, saved_k
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
from melanoma.run import Run
from melanoma.targets import IGNORE, class_names, iddx_1_index, melanoma_index
from melanoma.training import distributed as ddp
from melanoma.training.sampling import EpochSampler
from melanoma.training.tracking import WandB

WARMUP_MULTIPLIER = 10  # the warm-up scheduler's multiplier: the peak LR over the init LR
WAIT_WARNING = 0.10  # share of step time waiting for data above which an epoch warns


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """LR of a 0-based epoch, as the winners' code ran it (docs/recipe.md, "Training"): the
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
    model: torch.nn.Module,
    batch: dict,
    device: torch.device,
    channels_last: bool = False,
    with_aux: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    image = batch["image"].to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    meta = batch["meta"].to(device, non_blocking=True) if "meta" in batch else None
    return model(image, meta, with_aux=True) if with_aux else model(image, meta)


def _loss(net: torch.nn.Module, batch: dict, cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    """The batch's cross-entropy (against pseudo-labels' probabilities where given), plus
    aux_weight x the auxiliary head's (rows without an auxiliary label left out of it)."""
    aux_logits = None
    with autocast(device, cfg.amp):
        logits = _forward(net, batch, device, cfg.channels_last, with_aux="aux" in batch)
    if isinstance(logits, tuple):
        logits, aux_logits = logits
    if "soft" in batch:  # pseudo-labels: cross-entropy against class probabilities
        loss = -(batch["soft"].to(device) * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
    else:
        loss = F.cross_entropy(logits.float(), batch["target"].to(device))
    if aux_logits is not None:
        aux = batch["aux"].to(device)
        if (aux != IGNORE).any():  # else the mean over no rows is NaN
            loss = loss + cfg.aux_weight * F.cross_entropy(aux_logits.float(), aux, ignore_index=IGNORE)
    return loss


def train_step(
    net: torch.nn.Module,
    batch: dict | list[dict],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    device: torch.device,
) -> float:
    """One optimiser step on a batch, or on the micro-batches of one (gradient accumulation: each
    micro-batch's mean loss weighed by its share of the images, so the gradient is the whole
    batch's; under DDP only the last one all-reduces); mixed precision, loss scaling and clipping
    as configured. Returns the batch's loss."""
    parts = batch if isinstance(batch, list) else [batch]
    total = sum(len(p["target"]) for p in parts)
    optimizer.zero_grad(set_to_none=True)
    loss = 0.0
    for i, part in enumerate(parts):
        quiet = isinstance(net, DistributedDataParallel) and i < len(parts) - 1
        with net.no_sync() if quiet else contextlib.nullcontext():
            share = _loss(net, part, cfg, device) * (len(part["target"]) / total)
            scaler.scale(share).backward()
        loss += share.item()
    if cfg.grad_clip:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss


def set_grad_checkpointing(model: torch.nn.Module, backbone: str) -> None:
    """timm's activation checkpointing in the backbone (recomputed in the backward pass); a
    backbone timm gives none refuses, rather than train without the saving asked for."""
    try:
        model.backbone.set_grad_checkpointing(True)
    except (AssertionError, NotImplementedError, AttributeError) as err:
        raise ValueError(
            f"{backbone} has no gradient checkpointing in timm ({type(err).__name__}); leave --grad-checkpointing off"
        ) from None


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
        table = ingest(
            data,
            cfg.data_size,
            scheme=cfg.scheme,
            verify="header",
            progress=progress,
            image_types=cfg.image_types,
        )
    table = table.copy()
    table.attrs["data_folder"] = str(data.resolve())  # recorded in config.json (validate looks there)
    check_output(Path(cfg.out), folder=True, inputs=input_paths(data, table, cfg.data_size))
    if cfg.fold_method == "triple" and DataFolder(data).folds.is_file():
        table["fold"] = load_folds(table, DataFolder(data).folds)
        k = int(table.fold.max()) + 1
        if k != cfg.k_folds:
            raise ValueError(
                f"{DataFolder(data).folds} splits the patients into {k} folds, and this run asks for "
                f"{cfg.k_folds} (--k-folds): pass --k-folds {k}, or rewrite the file with "
                f"`melanoma folds {data} --k {cfg.k_folds}`"
            )
    return table


def settings_for(data: Path, given: dict, resume: bool = False) -> tuple[TrainConfig, str]:
    """What a `train` call means: defaults < the preset < the settings given, on top of the run's
    saved settings (all its folds too) when resuming one; k_folds as DATA/folds.csv has them
    unless given. Returns the config and a note for people ("" when nothing was inferred)."""
    given = dict(given)
    out = Path(given.get("out") or TrainConfig.out)
    base = None
    if resume and (out / rundir.CONFIG).is_file():
        base = {k: v for k, v in vars(Run(out).settings).items() if k != "out"}
    preset = given.pop("preset", None)
    cfg = resolve(preset, {**given, "out": str(out)}, base)
    if cfg.fold_method != "triple" or base is not None or given.get("k_folds") is not None:
        return cfg, ""
    k = saved_k(data)
    if k is None or k == cfg.k_folds:
        return cfg, ""
    folds = DataFolder(data).folds  # the folds `melanoma folds --k` wrote for this data
    return resolve(preset, {**given, "k_folds": k, "out": str(out)}, base), f"k_folds {k}, as in {folds}"


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
    cfg: TrainConfig, labelled: pd.DataFrame, features: pd.DataFrame | None, world_size: int,
    data_folder: str | None = None,
) -> dict:  # fmt: skip
    """What config.json records: the settings, versions, class names, the metadata columns
    (prediction aligns to these), the process count and the data (the run refuses other data;
    its folder, where it was read from one, lets `validate` find the training images)."""
    env = {"melanoma": __version__, "torch": torch.__version__, "python": platform.python_version()}
    config = {
        **asdict(cfg),
        "versions": env,
        "classes": class_names(cfg.scheme),
        "meta_columns": [] if features is None else list(features.columns),
        "world_size": world_size,
        "data_identity": rundir.data_identity(labelled),
        "data_sources": sorted(labelled.source.unique()) if "source" in labelled else [],
        **({"data_folder": data_folder} if data_folder else {}),
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
            shares = d.world_size * cfg.accumulate  # checked before any write
            if cfg.batch_size % shares or cfg.batch_size // shares < 2:
                raise ValueError(
                    f"batch size {cfg.batch_size} must split evenly over {d.world_size} process(es) x "
                    f"{cfg.accumulate} micro-batch(es), at least 2 images each (BatchNorm needs two)"
                )
            out = Path(cfg.out)
            table = training_rows(table, cfg)
            if cfg.aux_weight > 0:
                aux_labels(table)  # refused here, before anything is written, when there are none
            features = meta_features(table, dropped_rows(table)) if cfg.use_meta else None
            labelled = table.split == "train"
            if "pseudo" in table:  # pseudo-labelled copies belong to no fold
                labelled &= ~table.pseudo.astype(bool)
            config = config_record(
                cfg, table[labelled], features, d.world_size, table.attrs.get("data_folder")
            )
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


@dataclass
class FoldData:
    """What one fold trains and validates on: its datasets, the rows behind the validation set,
    and the sampler of the training set (None: plain shuffling)."""

    train: LesionDataset
    val: LesionDataset
    val_rows: pd.DataFrame
    sampler: EpochSampler | DistributedSampler | None
    n_meta: int
    scheme: str

    @property
    def is_melanoma(self) -> np.ndarray:
        """Which validation rows are of the positive class (melanoma; malignant on ISIC 2024)."""
        return self.val_rows.target.to_numpy() == melanoma_index(self.scheme)


def aux_labels(table: pd.DataFrame) -> np.ndarray:
    """Every row's auxiliary class (its iddx_1 in targets.IDDX_1; IGNORE for rows without one,
    and for rows that are not ISIC 2024's); refuses data where no labelled row has one."""
    is_2024 = (table.source == "isic2024").to_numpy() if "source" in table else np.zeros(len(table), bool)
    labels = np.where(is_2024, iddx_1_index(table.raw_diagnosis), IGNORE)
    if not (labels[(table.split == "train").to_numpy()] != IGNORE).any():
        raise ValueError(
            "--aux-weight trains a head on ISIC 2024's iddx_1 (Benign / Indeterminate / Malignant), and no "
            "labelled row here has one; use ISIC 2024 data, or --aux-weight 0"
        )
    return labels


def fold_data(
    table: pd.DataFrame, meta: np.ndarray | None, fold: int, cfg: TrainConfig, d: ddp.Dist
) -> FoldData:
    """The fold's rows (data.folds.fold_rows), their datasets with the config's transforms, and
    the training sampler (positives repeated and negatives drawn, or sharded over processes)."""
    trn, val = fold_rows(table, fold)  # pseudo-labelled rows (noisy_student.py) train every fold
    if len(val) == 0:
        raise ValueError(f"fold {fold} has no validation rows (folds are 0..{cfg.k_folds - 1})")
    soft_columns = [c for c in table.columns if c.startswith("soft_")]
    soft = table[soft_columns].to_numpy(np.float32)[trn] if soft_columns else None
    train_tf, val_tf = pipeline_transforms(cfg.image_size, cfg.augment, *normalization(cfg.backbone, cfg.pretrained),
                                           cfg.pipeline)  # fmt: skip

    def dataset(rows: np.ndarray, transform: object, targets: np.ndarray | None = None) -> LesionDataset:
        return LesionDataset(table.iloc[rows], transform, None if meta is None else meta[rows], targets)

    train_ds = dataset(trn, train_tf, soft)
    if cfg.aux_weight > 0:
        train_ds.aux = torch.as_tensor(aux_labels(table)[trn])
    sampler: EpochSampler | DistributedSampler | None = None
    if cfg.pos_oversample > 1 or cfg.neg_per_epoch is not None:  # ISIC 2024: few positives
        positive = table.target.to_numpy()[trn] == melanoma_index(cfg.scheme)
        sampler = EpochSampler(
            positive, cfg.pos_oversample, cfg.neg_per_epoch, cfg.seed + fold, d.rank, d.world_size
        )
    elif d.enabled:
        sampler = DistributedSampler(
            train_ds, d.world_size, d.rank, shuffle=True, seed=cfg.seed + fold, drop_last=True
        )
    own_val = val[ddp.shard(len(val), d)]  # this rank's share of validation, never padded
    n_meta = 0 if meta is None else meta.shape[1]
    return FoldData(train_ds, dataset(own_val, val_tf), table.iloc[val], sampler, n_meta, cfg.scheme)


@dataclass
class Loaders:
    """The fold's loaders, how many workers each process uses and why, and the shuffling generator."""

    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    workers: int
    why: str
    generator: torch.Generator


def fold_loaders(data: FoldData, model: torch.nn.Module, cfg: TrainConfig, d: ddp.Dist, device: torch.device,
                 main: bool) -> Loaders:  # fmt: skip
    """Loaders with the worker count asked for, or (-1) the count that keeps the model fed,
    lowered to what shared memory holds."""
    batch = cfg.batch_size // d.world_size // cfg.accumulate  # train() checked that it splits evenly
    workers, why = cfg.num_workers, "as asked"
    if workers < 0:
        workers, why = choose_workers(data.train, model, batch, cfg.image_size, device, cfg.amp, data.n_meta,
                                      d.local_world_size)  # fmt: skip
    itemsize = 1 if cfg.pipeline == "fast" else 4  # uint8 or float32 batches
    workers = fit_workers(
        workers, batch, cfg.image_size, d.local_world_size, announce=main, itemsize=itemsize
    )
    generator, pin = torch.Generator(), device.type == "cuda"
    train = make_loader(data.train, batch, workers, sampler=data.sampler, shuffle=True, drop_last=True,
                        generator=generator, pin_memory=pin)  # fmt: skip
    return Loaders(train, make_loader(data.val, batch, workers, pin_memory=pin), workers, why, generator)


@dataclass
class FoldState:
    """What an epoch changes and a resumed fold restores: optimiser, loss scaler, the next epoch,
    the best selection scores so far and the per-epoch history."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    start: int = 0
    best: float | None = None
    best_20: float | None = None
    history: list[dict] = field(default_factory=list)


def fold_state(
    model: torch.nn.Module, cfg: TrainConfig, out: Path, fold: int, resume: bool, main: bool
) -> FoldState:
    """A fresh optimiser and scaler, or with `resume` the ones the fold's resume state saved
    (the model's weights too); a fresh start removes an old resume state first."""
    state = FoldState(torch.optim.Adam(model.parameters(), lr=cfg.lr),
                      torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16"))  # fmt: skip
    path = rundir.state_path(out, fold)
    if resume and path.is_file():
        saved = load_state(path)
        model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        if saved["scaler"]:
            state.scaler.load_state_dict(saved["scaler"])
        state.start, state.best, state.best_20, state.history = (saved["epoch"], saved["best"], saved["best_20"],
                                                                  saved["history"])  # fmt: skip
        if main:
            rundir.record_history(out, fold, state.history)
        rundir.log(out, f"fold {fold}: resuming after epoch {state.start} of {cfg.epochs}", main)
    elif main:
        path.unlink(missing_ok=True)  # a fresh start: a crash now must not revive the old run
    return state


def _finished_earlier(out: Path, fold: int, cfg: TrainConfig, resume: bool, main: bool) -> list[dict] | None:
    """The history of a fold whose resume state says it trained every epoch (nothing to build)."""
    path = rundir.state_path(out, fold)
    if not (resume and path.is_file()):
        return None
    done = load_state(path, mmap=True)
    if done["epoch"] < cfg.epochs:
        return None
    if main:
        rundir.record_history(out, fold, done["history"])  # metrics.csv as the state has it
    rundir.log(out, f"fold {fold}: finished earlier; kept as it is", main)
    return list(done["history"])


def _wrapped(model: torch.nn.Module, cfg: TrainConfig, d: ddp.Dist, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: DistributedDataParallel under torchrun, compiled if asked."""
    net: torch.nn.Module = model
    if d.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if cfg.compile else net


def run_epoch(net: torch.nn.Module, data: FoldData, loaders: Loaders, state: FoldState, cfg: TrainConfig, fold: int,
              epoch: int, d: ddp.Dist, device: torch.device, show: bool) -> tuple[float, float, float]:  # fmt: skip
    """One pass over the training rows at the epoch's LR, seeded from (seed, fold, epoch): the
    mean loss and the share of time spent waiting for data (over all processes), and images/s."""
    lr = lr_at(epoch, cfg)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    seed = _epoch_seed(cfg, fold, epoch)
    torch.manual_seed(seed + 7919 * d.rank)  # dropout masks
    loaders.generator.manual_seed(seed)  # shuffling
    if data.sampler is not None:
        data.sampler.set_epoch(epoch)
    data.train.reseed(seed)  # augmentation, per image: the same for any worker or process count
    net.train()
    timed, losses, group = Timed(loaders.train), [], []
    steps = len(loaders.train) // cfg.accumulate  # the whole batches' steps: a partial one is dropped
    batches = iter(timed)
    with progress_bar(f"fold {fold} epoch {epoch + 1}/{cfg.epochs}", steps, show) as advance:
        for item in batches:
            group.append(item)
            if len(group) < cfg.accumulate:
                continue
            losses.append(train_step(net, group, state.optimizer, state.scaler, cfg, device))
            group = []
            advance(loss=f"{np.mean(losses[-20:]):.4f}")
            if len(losses) == steps:
                break
    batches.close()  # the epoch's time ends here when its last micro-batches are left unread
    train_loss, wait_share = _reduce_epoch(losses, timed.wait_share, d)
    micro = cfg.batch_size // d.world_size // cfg.accumulate
    return train_loss, wait_share, timed.batches * micro * d.world_size / max(timed.total, 1e-9)


def keep_epoch(model: torch.nn.Module, state: FoldState, row: dict, probs: np.ndarray, data: FoldData,
               by_auc: dict[str, bool], cfg: TrainConfig, out: Path, fold: int) -> None:  # fmt: skip
    """Save the epoch (main process): last weights; best and best_20 when their selection score
    improves (best also writes the out-of-fold file); then the resume state, the epoch's commit
    point, and metrics.csv."""
    save_weights(model, rundir.weights_path(out, fold, "last"))
    if is_better(score := selection_score(row, "auc", by_auc["auc"]), state.best):
        state.best = score
        save_weights(model, rundir.weights_path(out, fold, "best"))
        rundir.write_oof(out, fold, data.val_rows, probs, cfg.scheme)
    if is_better(score := selection_score(row, "auc_20", by_auc["auc_20"]), state.best_20):
        state.best_20 = score
        save_weights(model, rundir.weights_path(out, fold, "best_20"))
    saved = {"model": weights_of(model), "optimizer": state.optimizer.state_dict(),
             "scaler": state.scaler.state_dict() if state.scaler.is_enabled() else {}, "epoch": row["epoch"],
             "epochs": cfg.epochs, "best": state.best, "best_20": state.best_20, "history": state.history}  # fmt: skip
    save_state(rundir.state_path(out, fold), saved)  # the commit point of the epoch
    rundir.record_history(out, fold, state.history)


EPOCH_LINE = (
    "fold {fold} epoch {epoch}: lr {lr:.2e} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
    "acc {acc:.4f} auc {auc:.4f} auc_20 {auc_20:.4f} | {images_per_s:.1f} img/s, {data_wait:.0%} waiting for data"
)


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
    d, device = d or ddp.Dist(), device or pick_device(cfg.device)
    main, show = d.is_main, progress and d.is_main
    seed_everything(cfg.seed + fold)
    rundir.fold_dir(out, fold).mkdir(parents=True, exist_ok=True)
    if (history := _finished_earlier(out, fold, cfg, resume, main)) is not None:
        return history
    data = fold_data(table, meta, fold, cfg, d)
    model = build_model(cfg, data.n_meta).to(device)
    if cfg.grad_checkpointing:
        set_grad_checkpointing(model, cfg.backbone)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loaders = fold_loaders(data, model, cfg, d, device, main)
    if d.enabled and cfg.sync_bn:  # after measuring the step rate: synchronized layers need every rank
        model = ddp.sync_batchnorm(model)
    state = fold_state(model, cfg, out, fold, resume, main)
    net = _wrapped(model, cfg, d, device)
    tracker = WandB(cfg, out, fold) if main and cfg.wandb != "off" else None
    is_mel, is_2020 = data.is_melanoma, data.val_rows.is_ext.to_numpy() == 0
    by_auc = {"auc": auc_defined(is_mel), "auc_20": auc_defined(is_mel[is_2020])}
    _announce(out, fold, len(data.train), len(data.val_rows), loaders, cfg, d, device, main)
    for note in _undefined_auc_notes(fold, is_mel, is_2020):
        rundir.log(out, note, main)
    for epoch in range(state.start, cfg.epochs):
        train_loss, wait_share, rate = run_epoch(net, data, loaders, state, cfg, fold, epoch, d, device, show)
        ddp.sync_buffers(model, d)
        own = predict_probs(
            model, loaders.val, device, f"fold {fold} validation", show, cfg.amp, cfg.channels_last
        )
        probs = ddp.gather_shards(own, len(data.val_rows), d)
        scores = validation_metrics(probs, data.val_rows.target.to_numpy(), data.val_rows.is_ext.to_numpy(),
                                    melanoma_index(cfg.scheme))  # fmt: skip
        row = {"fold": fold, "epoch": epoch + 1, "lr": lr_at(epoch, cfg), "train_loss": train_loss, **scores,
               "images_per_s": rate, "data_wait": wait_share}  # fmt: skip
        state.history.append(row)
        if main:
            keep_epoch(model, state, row, probs, data, by_auc, cfg, out, fold)
            if tracker:
                tracker.log(row)
        rundir.log(out, EPOCH_LINE.format(**row), main)
        if wait_share > WAIT_WARNING:
            hdf5 = split_hdf5(table.image_path.iloc[0]) is not None
            rundir.log(out, _wait_advice(wait_share, loaders.workers, cfg, hdf5), main)
        ddp.barrier(d)
    if tracker:
        tracker.finish()
    return state.history


def _announce(out: Path, fold: int, n_train: int, n_val: int, loaders: Loaders, cfg: TrainConfig, d: ddp.Dist,
              device: torch.device, main: bool) -> None:  # fmt: skip
    sync = " (synchronized BatchNorm)" if d.enabled and cfg.sync_bn else ""
    rundir.log(out, f"fold {fold}: {n_train} train / {n_val} validation images on {device} x {d.world_size}{sync}, "
                    f"{loaders.workers} loader worker(s) per process ({loaders.why})", main)  # fmt: skip


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
