"""Many devices: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK and the same training command
runs as one process per device with DistributedDataParallel (NCCL on GPUs, gloo on CPUs).

Validation is sharded without padding (rank r takes rows r, r+W, r+2W, ...) and the shards are
gathered back into the original order, so metrics are computed once on exactly the validation set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from melanoma.inference import pick_device


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank among world_size processes, local_rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, logs and shows progress."""
        return self.rank == 0


def from_env() -> Dist:
    """The process layout torchrun put in the environment (one process when it did not)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def setup(device: str) -> tuple[Dist, torch.device]:
    """Join the process group when launched by torchrun; returns the layout and this rank's device."""
    d = from_env()
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", d.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if d.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return d, dev


def teardown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    """Wait for every process (no-op for one)."""
    if d.enabled:
        dist.barrier()


def shard(n: int, d: Dist) -> np.ndarray:
    """Positions 0..n-1 this rank handles: every world_size-th, no padding, no repeats."""
    return np.arange(d.rank, n, d.world_size)


def gather_shards(values: np.ndarray, n: int, d: Dist) -> np.ndarray:
    """Reassemble per-rank rows (made from shard(n, d)) into the full array in original order."""
    if not d.enabled:
        return values
    parts: list = [None] * d.world_size
    dist.all_gather_object(parts, values)
    out = np.empty((n, *values.shape[1:]), dtype=values.dtype)
    for r, part in enumerate(parts):
        out[r :: d.world_size] = part
    return out


def sync_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts them at
    the start of each training forward, but each rank's last forward then updates its own copy;
    without this, ranks would validate with different statistics from the weights rank 0 saves."""
    if d.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
