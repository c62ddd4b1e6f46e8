"""`melanoma bench loader` as a library call: the data loader against the model it must feed.

The pieces are the training run's own (the same rows, transforms, dataset and network), so the
recommended worker count is the one training's automatic count would pick on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from melanoma.config import TrainConfig
from melanoma.data.ingest import ingest
from melanoma.inputs.dataset import LesionDataset
from melanoma.inputs.loader import bench
from melanoma.inputs.transforms import pipeline_transforms
from melanoma.models.inference import pick_device
from melanoma.models.model import build_model
from melanoma.models.weights import normalization


@dataclass(frozen=True)
class LoaderBench:
    """Loader images/s per worker count (rows: workers, images_per_s, expected_wait), the
    model's own training images/s, the recommended count, and where it was measured."""

    rows: list[dict]
    model_images_per_s: float
    recommended: int
    device: torch.device


def loader_bench(
    data: Path, cfg: TrainConfig, batch_size: int, data_size: int | None = None, images: int = 512,
    workers: list[int] | None = None,
) -> LoaderBench:  # fmt: skip
    """Measure the loader on the first `images` training rows of DATA at cfg's input size and
    pipeline, against cfg's network (random weights: the step rate does not depend on them)."""
    table = ingest(data, data_size, verify="none")
    rows = table[table.split == "train"].head(images)
    transform = pipeline_transforms(cfg.image_size, True, *normalization(cfg.backbone, False), cfg.pipeline)[
        0
    ]
    dataset = LesionDataset(rows, transform)
    dataset.reseed(0)
    device = pick_device(cfg.device)
    model = build_model(replace(cfg, pretrained=False), 0).to(device)
    found, consumes, best = bench(dataset, model, batch_size, cfg.image_size, device, cfg.amp, workers)
    return LoaderBench(found, consumes, best, device)
