"""Checkpoints that survive a crash: weights in safetensors, resume state readable with weights_only.

Every file is written with fileio.atomic_write, flushed to disk before the rename: a process
killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from melanoma.fileio import atomic_write

STATE = "state.pt"  # resume state of a fold: weights, optimiser, epoch, best scores, history


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of a model's tensors (unwrapped from DDP and torch.compile); copies, so tied
    weights never share memory (safetensors refuses shared tensors)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in unwrap(model).state_dict().items()}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Weights as safetensors, atomically. A write that fails (a full disk) is an OSError naming
    the file, as for every other file (safetensors raises its own error type)."""
    tensors = weights_of(model)

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as err:
            found = re.search(r"code: (\d+)", str(err))  # the OS error safetensors met, if any
            code = int(found.group(1)) if found else errno.EIO
            raise OSError(code, os.strerror(code), str(path)) from err

    return atomic_write(path, write, durable=True)


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Resume state (tensors, numbers, strings, lists and dicts only), atomically."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp), durable=True)


def load_state(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Read resume state with weights_only=True: nothing but tensors and plain values is unpickled.
    mmap=True maps the tensors instead of reading them (cheap when only the numbers are needed)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        raise ValueError(f"{path}: not a readable resume state ({type(err).__name__}: {err})") from err
