"""Many devices: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK and the same training command
runs as one process per device with DistributedDataParallel (NCCL on GPUs, gloo on CPUs).

With more than one process, BatchNorm layers become synchronized BatchNorm (as the winners ran it):
batch statistics are computed over the whole global batch. torch's SyncBatchNorm runs on GPUs only;
on CPUs (gloo) the same statistics are all-reduced here, with a differentiable all_reduce so the
gradients match.

Validation is sharded without padding (rank r takes rows r, r+W, r+2W, ...) and the shards are
gathered back into the original order, so metrics are computed once on exactly the validation set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from timm.layers import convert_sync_batchnorm

from melanoma.models.inference import pick_device


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


def broadcast_object(value: object, d: Dist) -> object:
    """The main process's value, on every process (itself for one)."""
    if not d.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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


class _GlooSync:
    """Mixed into a BatchNorm class (torch's or timm's BatchNormAct2d) on CPUs, where torch's
    SyncBatchNorm does not run and DDP refuses it: training-mode statistics are all-reduced."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        ):
            return super().forward(x)
        out = _all_reduced_batch_norm(self, x)
        if hasattr(self, "act"):  # timm's BatchNormAct2d: dropout and activation follow the norm
            out = self.act(self.drop(out))
        return out


def _all_reduced_batch_norm(bn: torch.nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch statistics over every process's rows (sums in float64), the running statistics
    updated as torch does (unbiased variance), then the affine normalisation."""
    channels = x.shape[1]
    dims = [0, *range(2, x.dim())]
    x64 = x.double()
    count = torch.tensor([x.numel() // channels], dtype=torch.float64)
    local = torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count])
    total = dist_fn.all_reduce(local)  # differentiable: the gradients are synchronized too
    n = total[-1]
    mean = total[:channels] / n
    var = (total[channels : 2 * channels] / n - mean * mean).clamp_min(0)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / bn.num_batches_tracked.item() if bn.momentum is None else bn.momentum
            unbiased = var * n / (n - 1).clamp_min(1)
            bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
            bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
    shape = [1, channels] + [1] * (x.dim() - 2)
    out = ((x64 - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)).to(x.dtype)
    if bn.affine:
        out = out * bn.weight.view(shape).to(x.dtype) + bn.bias.view(shape).to(x.dtype)
    return out


_GLOO_CLASSES: dict[type, type] = {}


def sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every BatchNorm layer (timm's BatchNormAct2d included) synchronized across
    processes: torch's SyncBatchNorm on GPUs (through timm's converter, which keeps activations),
    the all-reduced statistics of _GlooSync on CPUs. Parameters, buffers and names are kept."""
    if next(model.parameters()).device.type != "cpu":
        return convert_sync_batchnorm(model)
    for module in model.modules():
        cls = type(module)
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, _GlooSync):
            if cls not in _GLOO_CLASSES:
                _GLOO_CLASSES[cls] = type(f"Synchronized{cls.__name__}", (_GlooSync, cls), {})
            module.__class__ = _GLOO_CLASSES[cls]
    return model
