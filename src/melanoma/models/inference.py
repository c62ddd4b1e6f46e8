"""Running a network: the device, mixed precision, and softmax probabilities over a loader with or
without the 8-way test-time augmentation. Shared by training (validation), prediction and the
loader's step-rate measurement."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.utils.data import DataLoader

from melanoma.models.checkpoint import unwrap
from melanoma.progress import progress_bar


def dihedral_views(batch: torch.Tensor) -> list[torch.Tensor]:
    """The 8 orientations of an NCHW batch (the dihedral group D4): identity, horizontal flip,
    vertical flip, both flips, and each of those transposed."""
    views = [batch, batch.flip(3), batch.flip(2), batch.flip(2).flip(3)]
    return views + [v.transpose(2, 3) for v in views]


def pick_device(name: str) -> torch.device:
    """'auto' is CUDA when there is one, else the CPU; any other name is taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for a mode: bf16 anywhere, fp16 on CUDA only."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("fp16 mixed precision needs a CUDA device; use --amp bf16 on the CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    loader: DataLoader,
    device: torch.device,
    label: str = "predict",
    progress: bool = True,
    amp: str = "off",
    channels_last: bool = False,
    tta: bool = False,
) -> np.ndarray:
    """Softmax probabilities over a loader, in its order; with `tta`, averaged over the 8
    orientations, which go through the model as one batch of 8 x B images (fewer at a time if the
    GPU runs out of memory)."""
    model.eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    at_once = 8 if tta else 1
    out = []
    with progress_bar(label, len(loader.dataset), progress) as advance:
        for batch in loader:
            image = batch["image"].to(device, non_blocking=True)
            meta = batch["meta"].to(device, non_blocking=True) if "meta" in batch else None
            views = dihedral_views(image) if tta else [image]
            while True:
                try:
                    total = _sum_views(model, views, meta, at_once, device, amp, channels_last)
                    break
                except torch.cuda.OutOfMemoryError:
                    if at_once == 1:
                        raise
                    at_once //= 2
                    torch.cuda.empty_cache()
            out.append((total / len(views)).cpu())
            advance(len(image))
    n_classes = unwrap(model).fc.out_features
    return torch.cat(out).numpy() if out else np.zeros((0, n_classes), np.float32)


def _sum_views(
    model: torch.nn.Module,
    views: list,
    meta: torch.Tensor | None,
    at_once: int,
    device: torch.device,
    amp: str,
    channels_last: bool = False,
) -> torch.Tensor:
    total = 0
    n = len(views[0])
    for start in range(0, len(views), at_once):
        chunk = views[start : start + at_once]
        x = torch.cat(chunk)  # one pass over k orientations x B images
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        m = None if meta is None else meta.repeat(len(chunk), 1)
        with autocast(device, amp):
            logits = model(x, m)
        total = total + torch.softmax(logits.float(), dim=1).view(len(chunk), n, -1).sum(0)
    return total
