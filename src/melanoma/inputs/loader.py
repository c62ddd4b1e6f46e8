"""Data loaders for training and validation: worker count, shared-memory check, time waiting for data.

Worker processes hand batches to the trainer through shared memory (/dev/shm on Linux). Docker
gives containers 64 MiB of it by default (the reproduction hit a 1 GB limit), and a loader that
overflows it dies with a bus error deep inside PyTorch. So the need is estimated up front and the
worker count lowered to what fits, with a message that says how to raise the limit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from melanoma.config import TrainConfig
from melanoma.inputs.dataset import LesionDataset
from melanoma.inputs.transforms import eval_transform
from melanoma.models.inference import autocast
from melanoma.models.weights import normalization
from melanoma.progress import console

PREFETCH = 2  # batches each worker keeps ready (torch's default prefetch_factor)
SHM = Path("/dev/shm")


def auto_workers(n: int, processes_per_node: int = 1) -> int:
    """Data-loader workers per training process: n, or for -1 the node's cores but one, shared
    between the processes on this node, at most 8 each."""
    if n >= 0:
        return n
    return max(0, min(8, (cores_available() - 1) // max(1, processes_per_node)))


def cores_available() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def shm_free(path: Path = SHM) -> int | None:
    """Free bytes of the shared-memory filesystem, or None where there is none (macOS, Windows)."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def batch_bytes(batch_size: int, image_size: int, itemsize: int = 4) -> int:
    """Shared memory one batch of images occupies."""
    return batch_size * 3 * image_size * image_size * itemsize


def fit_workers(
    workers: int,
    batch_size: int,
    image_size: int,
    processes_per_node: int = 1,
    announce: bool = True,
    itemsize: int = 4,
) -> int:
    """The worker count whose batches fit in /dev/shm (twice the in-flight batches, for safety);
    says why and what to do (when `announce`) if it has to lower the count."""
    free = shm_free()
    if workers == 0 or free is None:
        return workers
    per_worker = 2 * PREFETCH * batch_bytes(batch_size, image_size, itemsize) * processes_per_node
    fits = int(free // per_worker)
    if fits >= workers:
        return workers
    if not announce:
        return fits
    console.print(
        f"[yellow]warning:[/] {SHM} has {free / 2**20:.0f} MiB free; {workers} data-loader workers "
        f"need about {workers * per_worker / 2**20:.0f} MiB for batches of {batch_size} at "
        f"{image_size} px. Using {fits} worker(s) instead{' (loading in the main process)' if fits == 0 else ''}. "
        "To use more, raise the limit: `docker run --shm-size=16g` (or --ipc=host), "
        "or lower --batch-size."
    )
    return fits


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    *,
    sampler: Sampler | Iterable[int] | None = None,
    shuffle: bool = False,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader with a bounded prefetch depth (augmentation is seeded per item: dataset.py)."""
    return DataLoader(
        dataset,
        batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        drop_last=drop_last,
        generator=generator,
        num_workers=workers,
        prefetch_factor=PREFETCH if workers > 0 else None,
        pin_memory=pin_memory,
    )


def eval_loader(cfg: TrainConfig, rows: pd.DataFrame, meta: np.ndarray | None, batch_size: int) -> DataLoader:
    """The rows in order through the run's validation transform, for every pass of a trained model."""
    transform = eval_transform(cfg.image_size, *normalization(cfg.backbone, cfg.pretrained))
    return DataLoader(
        LesionDataset(rows, transform, meta), batch_size, num_workers=auto_workers(cfg.num_workers)
    )


class Timed:
    """Iterate a loader and account for the time spent waiting for its batches.

    `wait` is the time the training loop stood still in next(); `total` runs from the first
    request to the end of the last step (or to where the loop stopped early and the iterator was
    closed); both cover worker start-up, which is real waiting too.
    """

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.wait = 0.0
        self.total = 0.0
        self.batches = 0

    def __iter__(self) -> Iterator:
        start = time.perf_counter()
        try:
            it = iter(self.loader)
            while True:
                t = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    break
                self.wait += time.perf_counter() - t
                self.batches += 1
                yield batch
        finally:  # also when the loop stops early: the iterator is closed there
            self.total = time.perf_counter() - start

    @property
    def wait_share(self) -> float:
        """Share of the epoch's step time spent waiting for data (0..1)."""
        return float(np.clip(self.wait / self.total, 0, 1)) if self.total > 0 else 0.0


TARGET_WAIT = 0.05  # the share of step time a recommendation lets the model wait for data


def expected_wait(loader_rate: float, step_rate: float, workers: int = 1) -> float:
    """Share of step time spent waiting when batches arrive at loader_rate and the model consumes
    them at step_rate (images/s). With workers, loading overlaps the steps: no wait when the loader
    keeps up, else 1 - loader / step. With none, the main process loads between steps, so every
    batch waits its whole loading time: step / (loader + step)."""
    if step_rate <= 0:
        return 0.0
    if workers == 0:
        return step_rate / (loader_rate + step_rate) if loader_rate > 0 else 1.0
    return max(0.0, 1.0 - loader_rate / step_rate)


def recommend_workers(rates: dict[int, float], step_rate: float, target: float = TARGET_WAIT) -> int:
    """The fewest workers whose loader rate keeps the expected wait under `target`; the fastest
    measured count when none does."""
    enough = [w for w, r in sorted(rates.items()) if expected_wait(r, step_rate, w) < target]
    return enough[0] if enough else max(rates, key=rates.get)


def transform_rate(dataset: Dataset, n: int = 16) -> float:
    """Items per second one process produces from a dataset (decode + transform), over n items."""
    n = min(n, len(dataset))
    dataset[0]  # warm-up: first-call costs are not the rate
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / max(time.perf_counter() - start, 1e-9)


def step_rate(
    model: torch.nn.Module,
    batch_size: int,
    image_size: int,
    device: torch.device,
    steps: int = 3,
    amp: str = "off",
    n_meta: int = 0,
) -> float:
    """Training images per second of a model on random uint8 batches (forward, backward, Adam
    step), after one warm-up step; the model's weights are restored afterwards."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-12)
    image = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, device=device)
    meta = torch.zeros(batch_size, n_meta, device=device) if n_meta else None
    target = torch.zeros(batch_size, dtype=torch.long, device=device)
    model.train()
    for k in range(steps + 1):
        if k == 1:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        with autocast(device, amp):
            loss = torch.nn.functional.cross_entropy(model(image, meta).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rate = steps * batch_size / max(time.perf_counter() - start, 1e-9)
    model.load_state_dict(saved)
    return rate


def loader_rate(dataset: Dataset, batch_size: int, workers: int, batches: int = 8) -> float:
    """Images per second a DataLoader with `workers` workers delivers (start-up excluded)."""
    loader = make_loader(
        dataset, batch_size, workers, shuffle=True, drop_last=True, generator=torch.Generator()
    )
    it = iter(loader)
    next(it)  # workers started and the first batch in
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            n += len(next(it)["image"])
        except StopIteration:
            break
    del it
    return n / max(time.perf_counter() - start, 1e-9)


def choose_workers(
    dataset: Dataset,
    model: torch.nn.Module,
    batch_size: int,
    image_size: int,
    device: torch.device,
    amp: str = "off",
    n_meta: int = 0,
    processes_per_node: int = 1,
) -> tuple[int, str]:
    """The automatic worker count of training, by `melanoma bench loader`'s rule: measure what one
    worker delivers and what the model consumes, and take the fewest workers (up to the cores
    this process may use) that keep the wait under 5%. Returns the count and a line saying why."""
    cap = auto_workers(-1, processes_per_node)
    if cap == 0:
        return 0, "no spare core for loader workers"
    per_worker = transform_rate(dataset, n=8)
    batch = batch_size if device.type == "cuda" else min(batch_size, 4)  # CPU: rate ~ batch-independent
    consumes = step_rate(model, batch, image_size, device, steps=2, amp=amp, n_meta=n_meta)
    rates = {w: w * per_worker for w in range(1, cap + 1)}
    workers = recommend_workers(rates, consumes)
    return workers, (
        f"automatic: one worker prepares {per_worker:.0f} images/s, the model trains on {consumes:.0f} "
        f"images/s; {workers} of at most {cap} keep the expected wait at "
        f"{expected_wait(rates[workers], consumes):.0%}"
    )


def bench(
    dataset: Dataset,
    model: torch.nn.Module,
    batch_size: int,
    image_size: int,
    device: torch.device,
    amp: str = "off",
    worker_counts: list[int] | None = None,
    batches: int = 8,
) -> tuple[list[dict], float, int]:
    """Loader images/s at each worker count, the model's training images/s, and the recommended
    count (the fewest workers whose expected wait is under 5%). Rows: workers, images_per_s,
    expected_wait."""
    counts = worker_counts or sorted({0, 1, 2, *range(4, auto_workers(-1) + 1, 2), auto_workers(-1)})
    consumes = step_rate(model, batch_size, image_size, device, amp=amp)
    rows = []
    for w in counts:
        r = loader_rate(dataset, batch_size, w, batches)
        rows.append({"workers": w, "images_per_s": r, "expected_wait": expected_wait(r, consumes, w)})
    rates = {row["workers"]: row["images_per_s"] for row in rows if row["workers"] > 0} or {
        0: rows[0]["images_per_s"]
    }
    return rows, consumes, recommend_workers(rates, consumes)
