"""`melanoma import-winners`: the winners' published checkpoints as ordinary run directories.

One run per member (RUNS/<member>/): config.json from the member's preset (the network its files
were saved from, the metadata columns in the original's order, where the files came from),
fold<k>/{best,best_20,last}.safetensors from their best, best_20 and final files, and, given the
data folder, folds.csv and the data's identity: the member's own folds over that data (the
winners' published fold maps), so that `evaluate --data` scores each image with the fold model
that did not train on it. predict, ensemble, export, explain and the clinical commands then read
them as any run. Reading and mapping a file: models/winners.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from melanoma import __version__, rundir
from melanoma.config import TrainConfig
from melanoma.fileio import check_output
from melanoma.models.checkpoint import save_weights
from melanoma.models.winners import (
    ORIGINAL_META,
    Checkpoint,
    find_checkpoints,
    load_their_file,
    member_config,
)
from melanoma.progress import console
from melanoma.targets import class_names


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _member_rows(data: Path, cfg: TrainConfig) -> pd.DataFrame:
    """The data's labelled rows with the member's folds (its fold map, its classes, 2019 rows)."""
    from melanoma.training.train import training_rows, training_table

    rows = training_rows(training_table(data, cfg), cfg)
    return rows[rows.split == "train"]


def _config(cfg: TrainConfig, files: list[Checkpoint], rows: pd.DataFrame | None) -> dict:
    folds = sorted({c.fold for c in files})
    config = {
        **asdict(cfg),
        "folds": folds,
        "versions": {"melanoma": __version__, "torch": torch.__version__},
        "classes": class_names(cfg.scheme),
        "meta_columns": list(ORIGINAL_META) if cfg.use_meta else [],
        "world_size": 1,
        "imported_from": {c.path.name: _sha256(c.path) for c in files},
    }
    if rows is not None:
        config["data_identity"] = rundir.data_identity(rows)  # every labelled row, as train records it
    return json.loads(json.dumps(config))


def import_member(member: str, files: list[Checkpoint], out: Path, data: Path | None = None) -> Path:
    """RUNS/<member>: its config, its fold weights in safetensors and, with the data, its folds."""
    run = Path(out) / member
    rundir.refuse_foreign(run)
    cfg = member_config(member, run)
    rows = None if data is None else _member_rows(data, cfg)
    config = _config(cfg, files, rows)
    rundir.check(run, config, config["folds"], resume=True)  # the same member again: rewritten alike
    models = [(c, load_their_file(c.path, cfg, config["meta_columns"])) for c in files]  # all, before writing
    with rundir.fold_locks(run, config["folds"]), rundir.lock(run):
        if rows is None:
            run.mkdir(parents=True, exist_ok=True)
            rundir.save_json(run, rundir.CONFIG, config)
        else:
            rundir.claim(run, config, config["folds"], True, rows)
        for c, model in models:
            save_weights(model, rundir.weights_path(run, c.fold, c.checkpoint))
    rundir.log(run, f"import-winners: {member} from {len(files)} file(s), folds {config['folds']}")
    return run


def import_winners(folder: Path, out: Path, data: Path | None = None) -> list[Path]:
    """One run directory per member found in the folder of published files."""
    found = find_checkpoints(folder)
    check_output(Path(out), folder=True, inputs=[Path(folder), *([Path(data)] if data else [])])
    members = sorted({c.member for c in found})
    runs = []
    for member in members:
        files = [c for c in found if c.member == member]
        if not any(c.checkpoint == "best" for c in files):
            console.print(
                f"[yellow]warning:[/] {member}: no best checkpoint; `predict --checkpoint` must name one"
            )
        runs.append(import_member(member, files, out, data))
    return runs
