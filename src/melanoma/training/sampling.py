"""Which training images an epoch sees: every positive `pos_oversample` times and, with
`neg_per_epoch`, a fresh draw of that many negatives each epoch (ISIC 2024: 0.1% malignant), as
the 2024 winners trained their image models. Seeded by epoch, so a resumed run sees what an
unbroken one would; with many processes each takes its own share of the same order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Dataset positions for one epoch: positives repeated, negatives drawn, shuffled together."""

    def __init__(
        self,
        positive: np.ndarray,
        pos_oversample: int = 1,
        neg_per_epoch: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.positives = np.flatnonzero(positive)
        self.negatives = np.flatnonzero(~np.asarray(positive, dtype=bool))
        self.repeat, self.seed, self.rank, self.world = pos_oversample, seed, rank, world_size
        self.n_neg = len(self.negatives) if neg_per_epoch is None else min(neg_per_epoch, len(self.negatives))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """Every process's positions this epoch (before sharding)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        negatives = (
            rng.choice(self.negatives, self.n_neg, replace=False) if self.n_neg else self.negatives[:0]
        )
        order = np.concatenate([np.repeat(self.positives, self.repeat), negatives])
        order = order[rng.permutation(len(order))]
        usable = len(order) - len(order) % self.world  # every process the same number of steps
        return order[:usable]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return (len(self.positives) * self.repeat + self.n_neg) // self.world
