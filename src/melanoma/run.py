"""A run, opened from its folder: what kind it is, its config, its folds, its out-of-fold scores
and each result it holds, as one object.

`Run(path)` is how every command, the report, the model card and the demo read a run directory
made by `melanoma train` (kind "image") or `melanoma gbdt` (kind "tree"). The files themselves,
their names, and the claiming, checking and writing of a run belong to rundir.py; the results'
types to results.py. tests/system/test_layout.py keeps every other module from reading a run's files
directly.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import pandas as pd

from melanoma import rundir
from melanoma.config import TrainConfig
from melanoma.models.model import MelanomaNet
from melanoma.results import Calibration, Evaluation, External, Gallery, OperatingPoints, Subgroups

RunKind = Literal["image", "tree"]
FEATURE_IMPORTANCE = "feature_importance.csv"  # a tree run's mean gain per feature
OOF_BY_MODEL = "oof_by_model.csv"  # a tree run's out-of-fold scores of each library, before blending
BLEND_WEIGHTS = "blend_weights.csv"  # a tree run's blend: fold, model, weight
TUNING = "tuning.csv"  # a tree run's --tune results: fold, model, inner pAUC, parameters (JSON)


class Run:
    """A run directory, read: opening one that has no config.json is one clear error."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.config: dict = rundir.run_config(self.path)  # as saved, old names read as today's

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, kind={self.kind!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> RunKind:
        """image (`melanoma train`) or tree (`melanoma gbdt`, on ISIC 2024's tables)."""
        return "tree" if self.config.get("kind") == "gbdt" else "image"

    @property
    def is_tree(self) -> bool:
        return self.kind == "tree"

    @property
    def scheme(self) -> str:
        """The label scheme: 9c, 4c, 2c, or mb (ISIC 2024)."""
        return self.config.get("scheme", "9c")

    @cached_property
    def settings(self) -> TrainConfig:
        """The TrainConfig the run was trained with (of a tree run: its shared fields)."""
        return rundir.load_config(self.path)

    @property
    def meta_columns(self) -> list[str]:
        """The metadata features of an image run's metadata branch, in order (none without one)."""
        return list(self.config.get("meta_columns") or [])

    @property
    def data_identity(self) -> dict | None:
        """Which data the run was trained on (rundir.data_identity), if it recorded it."""
        return self.config.get("data_identity")

    @property
    def data_sources(self) -> list[str]:
        """The datasets its labelled rows came from (isic2020, isic2019, isic2024, archive); empty
        for a run made before runs recorded them."""
        return list(self.config.get("data_sources") or [])

    def describe_data(self) -> str:
        return rundir.describe_data(self.data_identity)

    def check_data(self, rows: pd.DataFrame) -> None:
        """Refuse rows (image_name, target, fold) that are not the run's own data."""
        rundir.check_data(self.path, rows)

    def require_image(self, what: str) -> None:
        """Refuse a tree run where a command needs image models, saying what to do instead."""
        rundir.require_image_run(self.path, what)

    # Folds and scores.

    @cached_property
    def folds(self) -> pd.Series:
        """image_name -> fold as the run trained (folds.csv; -1: left out)."""
        return rundir.run_folds(self.path)

    def trained_folds(self, checkpoint: str = "best", allow_unfinished: bool = False) -> list[int]:
        """The folds that have this checkpoint (a tree run: its trained folds); an unfinished fold
        is refused unless allowed."""
        return rundir.trained_folds(self.path, checkpoint, allow_unfinished)

    def unfinished_folds(self, folds: list[int]) -> dict[int, tuple[int, int]]:
        return rundir.unfinished_folds(self.path, folds)

    def oof(self, allow_unfinished: bool = False) -> pd.DataFrame:
        """Training's own out-of-fold scores (fold*/oof.csv: best epoch, no TTA)."""
        return rundir.saved_oof(self.path, allow_unfinished)

    @property
    def latest_oof_name(self) -> str:
        """Which out-of-fold file latest_oof reads: the newest oof_*_tta.csv, else fold*/oof.csv."""
        return rundir.latest_oof_name(self.path)

    def latest_oof(self) -> pd.DataFrame:
        """The best out-of-fold scores the run holds: the newest evaluated with TTA, else training's."""
        return rundir.latest_oof(self.path)

    def checkpoint_oof(self, checkpoint: str) -> tuple[pd.DataFrame, str]:
        """One checkpoint's out-of-fold scores and the file they come from."""
        return rundir.checkpoint_oof(self.path, checkpoint)

    def metrics(self) -> pd.DataFrame | None:
        """metrics.csv (one row per fold and epoch); None before the first epoch ends, and for trees."""
        return rundir.metrics(self.path)

    def test_probs_by_fold(self) -> pd.DataFrame:
        return rundir.test_probs_by_fold(self.path)

    def test_probs(self) -> pd.DataFrame | None:
        """The fold-averaged test probabilities `predict` (or gbdt) wrote; None before."""
        path = self.path / rundir.TEST_PROBS
        return pd.read_csv(path) if path.is_file() else None

    def model(self, fold: int, checkpoint: str = "best") -> MelanomaNet:
        """A fold's image model with this checkpoint's weights, in eval mode."""
        return rundir.load_fold_model(self.path, fold, checkpoint)

    # The results it holds (None, or an empty list, where the command has not run since the folds
    # were last trained).

    def evaluations(self) -> list[Evaluation]:
        return Evaluation.load_all(self.path)

    def calibration(self) -> Calibration | None:
        return Calibration.load(self.path)

    def operating_points(self) -> OperatingPoints | None:
        return OperatingPoints.load(self.path)

    def subgroups(self) -> Subgroups | None:
        return Subgroups.load(self.path)

    def validations(self) -> list[External]:
        """Every external validation saved in the run (`melanoma validate`), by name."""
        return External.load_all(self.path)

    def gallery(self) -> Gallery | None:
        return Gallery.load(self.path)

    def feature_importance(self) -> pd.DataFrame | None:
        """A tree run's feature, gain table (mean over the fold models), largest first."""
        path = self.path / FEATURE_IMPORTANCE
        return pd.read_csv(path) if path.is_file() else None

    def blend_weights(self) -> dict[int, dict[str, float]] | None:
        """A tree run's weight of each library in each fold's blend; None for a run of one
        library made before blends existed."""
        path = self.path / BLEND_WEIGHTS
        if not path.is_file():
            return None
        table = pd.read_csv(path)
        return {
            int(k): dict(zip(g.model, g.weight.astype(float), strict=True)) for k, g in table.groupby("fold")
        }

    def model_card(self) -> str | None:
        path = self.path / rundir.MODEL_CARD
        return path.read_text(encoding="utf-8") if path.is_file() else None


def is_trained(path: Path) -> bool:
    """Whether a folder is a run directory with at least one fold's out-of-fold file."""
    return rundir.is_trained(path)


def is_run(path: Path) -> bool:
    """Whether a folder holds a run's config.json."""
    return (Path(path) / rundir.CONFIG).is_file()
