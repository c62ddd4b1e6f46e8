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
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from melanoma.dataset import seed_worker
from melanoma.progress import console

PREFETCH = 2  # batches each worker keeps ready (torch's default prefetch_factor)
SHM = Path("/dev/shm")


def auto_workers(n: int, processes_per_node: int = 1) -> int:
    """Data-loader workers per training process: n, or for -1 the node's cores but one, shared
    between the processes on this node, at most 8 each."""
    if n >= 0:
        return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(8, (cores - 1) // max(1, processes_per_node)))


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
    workers: int, batch_size: int, image_size: int, processes_per_node: int = 1, announce: bool = True
) -> int:
    """The worker count whose batches fit in /dev/shm (twice the in-flight batches, for safety);
    says why and what to do (when `announce`) if it has to lower the count."""
    free = shm_free()
    if workers == 0 or free is None:
        return workers
    per_worker = 2 * PREFETCH * batch_bytes(batch_size, image_size) * processes_per_node
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
    """A DataLoader with seeded workers and a bounded prefetch depth."""
    return DataLoader(
        dataset,
        batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker,
        num_workers=workers,
        prefetch_factor=PREFETCH if workers > 0 else None,
        pin_memory=pin_memory,
    )


class Timed:
    """Iterate a loader and account for the time spent waiting for its batches.

    `wait` is the time the training loop stood still in next(); `total` runs from the first
    request to the end of the last step; both cover worker start-up, which is real waiting too.
    """

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.wait = 0.0
        self.total = 0.0
        self.batches = 0

    def __iter__(self) -> Iterator:
        start = time.perf_counter()
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
        self.total = time.perf_counter() - start

    @property
    def wait_share(self) -> float:
        """Share of the epoch's step time spent waiting for data (0..1)."""
        return float(np.clip(self.wait / self.total, 0, 1)) if self.total > 0 else 0.0
