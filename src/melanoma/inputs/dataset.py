"""A torch Dataset over rows of an ingested table."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from melanoma.inputs.decode import read_rgb
from melanoma.inputs.transforms import center_square


class LesionDataset(Dataset):
    """Images (centre square, transformed), targets and optional metadata features."""

    def __init__(
        self,
        table: pd.DataFrame,
        transform: Callable[..., dict],
        meta: np.ndarray | None = None,
        soft: np.ndarray | None = None,
        aux: np.ndarray | None = None,
    ) -> None:
        """`soft`, optional: a class-probability target per row (pseudo-labels), given as "soft";
        `aux`, optional: an auxiliary class index per row (targets.IGNORE: none), given as "aux"."""
        self.aux = None if aux is None else torch.as_tensor(aux, dtype=torch.int64)
        self.paths = table.image_path.tolist()
        self.soft = None if soft is None else torch.as_tensor(soft, dtype=torch.float32)
        self.targets = table.target.to_numpy(dtype=np.int64)
        self.transform = transform
        self.meta = None if meta is None else torch.as_tensor(meta, dtype=torch.float32)
        self.seed: int | None = None

    def reseed(self, seed: int) -> None:
        """Seed the augmentation of an epoch: item i is then drawn from (seed, i) alone, so the same
        image gets the same augmentation whatever the number of loader workers or processes.
        (albumentations draws from its own generators, not numpy's or torch's.)"""
        self.seed = seed

    def _seed_item(self, i: int) -> None:
        if self.seed is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed((self.seed * 1_000_003 + i) % 2**32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self._seed_item(i)
        image = self.transform(image=center_square(read_rgb(self.paths[i])))["image"]
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "target": torch.tensor(self.targets[i]),
        }
        if self.meta is not None:
            item["meta"] = self.meta[i]
        if self.soft is not None:
            item["soft"] = self.soft[i]
        if self.aux is not None:
            item["aux"] = self.aux[i]
        return item
