"""What the toolkit writes into a data folder, by name: one owner for every path, so that no two
modules spell them differently.

DATA/folds.csv (`melanoma folds`), DATA/duplicates.csv (`melanoma dedup --apply`),
DATA/skin_tone.csv (each image's estimated skin tone, `melanoma subgroups`) and DATA/dedup/
(`melanoma dedup`: candidates.csv, the decisions a person makes; review.html; the embeddings and
their keys). The downloads themselves are only ever read (ingest.input_paths lists them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataFolder:
    """A data folder and the files the toolkit keeps in it."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def folds(self) -> Path:
        """The folds every command uses (patients grouped; duplicates tied; dropped rows -1)."""
        return self.root / "folds.csv"

    @property
    def duplicates(self) -> Path:
        """image_name, group, keep: what folds and prepare leave out."""
        return self.root / "duplicates.csv"

    @property
    def skin_tone(self) -> Path:
        """image_name, image_path, ita: each image's estimated skin tone (`melanoma subgroups`)."""
        return self.root / "skin_tone.csv"

    @property
    def dedup(self) -> Path:
        """The folder of `melanoma dedup`'s work."""
        return self.root / "dedup"

    @property
    def candidates(self) -> Path:
        """The candidate pairs and the decisions a person made on them."""
        return self.dedup / "candidates.csv"

    @property
    def review_page(self) -> Path:
        return self.dedup / "review.html"

    def embeddings(self, size: int) -> tuple[Path, Path]:
        """The cached embeddings at an input size, and the key saying what they were made from."""
        return self.dedup / f"embeddings_{size}.npy", self.dedup / f"embeddings_{size}.key"

    def written(self) -> list[Path]:
        """The files the toolkit writes at the top of the folder (a command never takes them as input data)."""
        return [self.folds, self.duplicates, self.skin_tone]
