"""Experiment tracking: Weights & Biases logging of a fold (optional; `pip install wandb`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from melanoma import rundir
from melanoma.config import TrainConfig


class WandB:
    """Weights & Biases logging of one fold (rank 0 only): a run named <name>-fold<k> in the group
    <name>, with the full config and tags; resumed runs continue the same W&B run."""

    def __init__(self, cfg: TrainConfig, out: Path, fold: int) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ValueError("--wandb needs the wandb package: pip install wandb") from err
        name = cfg.name or out.resolve().name
        id_file = rundir.fold_dir(out, fold) / "wandb_id.txt"
        if not id_file.is_file():
            id_file.write_text(wandb.util.generate_id() + "\n")
        self.run = wandb.init(
            project=cfg.wandb_project,
            name=f"{name}-fold{fold}",
            group=name,
            tags=cfg.tags,
            config={**asdict(cfg), "fold": fold},
            dir=str(out),
            mode=cfg.wandb,
            id=id_file.read_text().strip(),
            resume="allow",
        )

    def log(self, row: dict[str, Any]) -> None:
        """One epoch's metrics."""
        self.run.log(row, step=int(row["epoch"]))

    def finish(self) -> None:
        """Close the W&B run."""
        self.run.finish()
