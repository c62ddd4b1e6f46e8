"""The run directory: the contract between training and everything that reads a run.

RUN/ holds config.json (the resolved TrainConfig, with versions, class names, metadata columns and
process count), folds.csv (image_name, fold of every labelled row), metrics.csv (one row per fold
and epoch), log.txt, and per fold fold<k>/{best,best_20,last}.safetensors, fold<k>/oof.csv
(out-of-fold probabilities of the best epoch) and fold<k>/state.pt (the resume state). Later
stages add oof_<checkpoint>[_tta].csv and evaluation_<checkpoint>[_tta].json (evaluate),
test_probs.csv, test_probs_by_fold.csv and submission.csv (predict); calibration.json and
calibration.png (calibrate), operating_points.json (operating-points), subgroups.json
(subgroups), explain/ (explain) and MODEL_CARD.md (card).

This module owns all of it: claiming and checking a directory, its lock, the writers and readers
of those files, checkpoint names, and loading a fold's model. Other modules go through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from rich.markup import escape

from melanoma.config import TrainConfig, config_fields
from melanoma.fileio import atomic_write, write_csv
from melanoma.models.checkpoint import STATE, load_state
from melanoma.models.model import MelanomaNet, build_model, load_weights
from melanoma.progress import console
from melanoma.targets import class_names

CONFIG, FOLDS, METRICS, LOG = "config.json", "folds.csv", "metrics.csv", "log.txt"
SUBMISSION, TEST_PROBS, TEST_PROBS_BY_FOLD = "submission.csv", "test_probs.csv", "test_probs_by_fold.csv"
CALIBRATION, CALIBRATION_PNG, FLAGGED = "calibration.json", "calibration.png", "flagged.csv"
OPERATING_POINTS, SUBGROUPS, EXPLAIN, MODEL_CARD = (
    "operating_points.json",
    "subgroups.json",
    "explain",
    "MODEL_CARD.md",
)
OOD, OOD_STATS, INPUT_CHECKS = (
    "ood.json",
    "ood.safetensors",
    "input_checks.csv",
)  # `melanoma ood`: thresholds; per-fold feature statistics
Checkpoint = Literal["best", "best_20", "last"]
CHECKPOINTS = ("best", "best_20", "last", "final")  # final is another name for last

# Settings that may differ between two invocations on one run directory.
NOT_RECIPE = {
    "folds", "versions", "out", "num_workers", "device", "preset", "compile", "channels_last",
    "wandb", "wandb_project", "name", "tags", "world_size", "grad_checkpointing",
}  # fmt: skip


def checkpoint_name(name: str) -> Checkpoint:
    """best, best_20 or last (also called final)."""
    if name not in CHECKPOINTS:
        raise ValueError(f"unknown checkpoint {name!r}; expected one of {', '.join(CHECKPOINTS)}")
    return "last" if name == "final" else name  # type: ignore[return-value]


def fold_dir(run: Path, fold: int) -> Path:
    """RUN/fold<k>."""
    return Path(run) / f"fold{fold}"


def weights_path(run: Path, fold: int, checkpoint: str = "best") -> Path:
    """RUN/fold<k>/<checkpoint>.safetensors."""
    return fold_dir(run, fold) / f"{checkpoint_name(checkpoint)}.safetensors"


def state_path(run: Path, fold: int) -> Path:
    """RUN/fold<k>/state.pt, the resume state."""
    return fold_dir(run, fold) / STATE


def variant_name(checkpoint: str, tta: bool) -> str:
    """How evaluate names its files for a checkpoint with or without TTA: best_tta, last, ..."""
    return f"{checkpoint_name(checkpoint)}{'_tta' if tta else ''}"


# What a run (or an ablation suite) holds that commands read: an --out may never write over one.
RECORDS = (
    CONFIG, FOLDS, METRICS, LOG, SUBMISSION, TEST_PROBS, TEST_PROBS_BY_FOLD, CALIBRATION, CALIBRATION_PNG,
    FLAGGED, OPERATING_POINTS, SUBGROUPS, MODEL_CARD, "feature_importance.csv", "evaluation_*.json",
    "validation_*.json", OOD, OOD_STATS, INPUT_CHECKS,
    "oof_*.csv", "report.html", "suite.json", "ablation*.csv", "ablation*.png", ".lock", ".fold*.lock",
)  # fmt: skip


def records(folder: Path, but: tuple[str, ...] = ()) -> list[Path]:
    """The files of a run directory or suite folder that its commands read (config, folds,
    results; see RECORDS) and every folder in it (fold models, member runs, explanations), less
    the names in `but` (the calling command's own product, which it may write again)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = {p for pattern in RECORDS for p in folder.glob(pattern)}
    found |= {p for p in folder.iterdir() if p.is_dir()}
    return sorted(p for p in found if p.name not in but)


# Reading a run.


def run_config(run: Path) -> dict:
    """config.json of a run directory, as saved."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {run} a run directory made by `melanoma train`?")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable as a run's config ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, found {type(config).__name__}")
    return _renamed(config)


def _renamed(config: dict) -> dict:
    """A config saved before two names were split read with today's: the data's identity was
    "data" (a name every command uses for a data folder's path), a tree run's fold method was
    gbdt "folds" (the name of the fold indices everywhere else)."""
    if "data" in config and "data_identity" not in config:
        config["data_identity"] = config.pop("data")
    tree = config.get("gbdt")
    if isinstance(tree, dict) and "folds" in tree and "fold_method" not in tree:
        tree["fold_method"] = tree.pop("folds")
    if isinstance(tree, dict) and not isinstance(tree.get("image_run", []), list):  # one image run, or none
        tree["image_run"] = [tree["image_run"]] if tree["image_run"] else []
    return config


def load_config(run: Path) -> TrainConfig:
    """The TrainConfig a run directory was trained with."""
    known = config_fields()
    try:
        return TrainConfig(**{k: v for k, v in run_config(run).items() if k in known})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{Path(run) / CONFIG}: not a valid run config ({err})") from None


def is_tree_run(run: Path) -> bool:
    """A run made by `melanoma gbdt` (trees on ISIC 2024's tables) rather than by training images."""
    return (Path(run) / CONFIG).is_file() and run_config(run).get("kind") == "gbdt"


def tree_folds(run: Path, allow_unfinished: bool = False) -> list[int]:
    """The folds of a tree run (`melanoma gbdt`) that were trained: a booster and out-of-fold
    scores each. A run stopped before every fold it planned (config.json) was trained is refused
    unless allowed, and then named in a warning."""
    planned = [int(k) for k in run_config(run).get("folds", [])]
    done = [k for k in planned if (fold_dir(run, k) / "oof.csv").is_file()]  # written after its boosters
    if not done:
        raise FileNotFoundError(
            f"{run}: no fold*/oof.csv (written after the boosters); run `melanoma gbdt` first"
        )
    missing = [k for k in planned if k not in done]
    if missing:
        said = f"folds {', '.join(map(str, done))} of {len(planned)} were trained (not {', '.join(map(str, missing))})"
        if not allow_unfinished:
            raise ValueError(
                f"{run}: the tree run stopped early: {said}; run the same `melanoma gbdt` again, "
                "or pass --allow-unfinished to use these folds as they are"
            )
        console.print(f"[yellow]warning:[/] using an unfinished tree run {escape(str(run))}: {said}")
    return done


def trained_folds(run: Path, checkpoint: str = "best", allow_unfinished: bool = False) -> list[int]:
    """Folds of a run that have the chosen checkpoint. A fold that stopped before its last epoch
    is refused (its checkpoints are not the run's) unless allowed, and then named in a warning."""
    checkpoint = checkpoint_name(checkpoint)
    if is_tree_run(run):  # `melanoma gbdt`: boosters per fold, no epochs or checkpoints
        return tree_folds(run, allow_unfinished)
    folds = sorted(int(p.parent.name[4:]) for p in Path(run).glob(f"fold*/{checkpoint}.safetensors"))
    if not folds:
        raise FileNotFoundError(f"{run}: no fold*/{checkpoint}.safetensors; train the run first")
    unfinished = unfinished_folds(run, folds)
    if unfinished:
        said = ", ".join(f"fold {k} after epoch {e} of {n}" for k, (e, n) in unfinished.items())
        if not allow_unfinished:
            raise ValueError(
                f"{run}: training stopped early ({said}); finish it with `melanoma train DATA --out {run} "
                "--resume`, or pass --allow-unfinished to use these folds as they are"
            )
        console.print(f"[yellow]warning:[/] using unfinished folds of {escape(str(run))}: {said}")
    return folds


def unfinished_folds(run: Path, folds: list[int]) -> dict[int, tuple[int, int]]:
    """The folds, among these, whose training stopped early: fold -> (epochs done, epochs asked)."""
    done = {k: fold_epochs_done(run, k) for k in folds}
    return {k: d for k, d in done.items() if d is not None and d[0] < d[1]}


def fold_epochs_done(run: Path, fold: int) -> tuple[int, int] | None:
    """(epochs trained, epochs asked for) of a fold from its resume state; None without one."""
    path = state_path(run, fold)
    if not path.is_file():
        return None
    state = load_state(path, mmap=True)
    return int(state["epoch"]), int(state["epochs"])


def require_image_run(run: Path, what: str) -> None:
    """Refuse a tree run where a command needs image models, saying what to do instead."""
    if is_tree_run(run):
        raise ValueError(
            f"{run} is a tree run (`melanoma gbdt`): it has no image model to {what}. Its test scores are "
            f"{Path(run) / TEST_PROBS} and {Path(run) / SUBMISSION}, written by gbdt; to score other rows, put "
            "them in test-metadata.csv and run `melanoma gbdt` again"
        )


def load_fold_model(run: Path, fold: int, checkpoint: str = "best") -> MelanomaNet:
    """A fold's model with the chosen checkpoint's weights, in eval mode."""
    require_image_run(run, "load")
    cfg = load_config(run)
    n_meta = len(run_config(run).get("meta_columns") or [])
    # The weights come from the run: never fetch pretrained ones to overwrite.
    model = build_model(replace(cfg, pretrained=False, weights=None), n_meta)
    return load_weights(model, weights_path(run, fold, checkpoint)).eval()


def run_folds(run: Path) -> pd.Series:
    """image_name -> fold, as the run trained (RUN/folds.csv; -1: left out of training)."""
    path = Path(run) / FOLDS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {run} a run directory made by `melanoma train`?")
    return pd.read_csv(path).set_index("image_name").fold


def saved_oof(run: Path, allow_unfinished: bool = False) -> pd.DataFrame:
    """The out-of-fold files training wrote (best epoch by AUC, no test-time augmentation); of a
    tree run only when every fold it planned was trained (unless allowed)."""
    if is_tree_run(run):
        folds = tree_folds(run, allow_unfinished)
        return pd.concat([pd.read_csv(fold_dir(run, k) / "oof.csv") for k in folds], ignore_index=True)
    parts = [pd.read_csv(p) for p in sorted(Path(run).glob("fold*/oof.csv"))]
    if not parts:
        raise FileNotFoundError(f"{run}: no fold*/oof.csv; train the run first")
    return pd.concat(parts, ignore_index=True)


def is_trained(run: Path) -> bool:
    """Whether a folder is a run directory with at least one fold's out-of-fold file."""
    return (Path(run) / CONFIG).is_file() and any(Path(run).glob("fold*/oof.csv"))


def metrics(run: Path) -> pd.DataFrame | None:
    """metrics.csv (one row per fold and epoch), or None before the first epoch ends."""
    path = Path(run) / METRICS
    return pd.read_csv(path) if path.is_file() else None


def trained_state(run: Path) -> str | None:
    """What the run's trained folds are now: a hash of every fold*/oof.csv (which training, or
    `gbdt`, rewrites whenever a fold is trained again); None before the first fold ends. Each
    result saved in the run records it, so a result from an older state is never shown as current."""
    files = sorted(Path(run).glob("fold*/oof.csv"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.parent.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _current(run: Path, result: dict, path: Path, state: str | None = None) -> bool:
    """Whether a saved result belongs to the run's trained folds as they are now (`state`, when
    known; results saved before results recorded the state count as current); a stale one is
    named in a warning."""
    saved = result.get("trained_state")
    if saved is None or saved == (state if state is not None else trained_state(run)):
        return True
    console.print(
        f"[yellow]warning:[/] {escape(str(path))} was computed before the run's folds were trained again; "
        "it is not shown: run the command that writes it again"
    )
    return False


def evaluations(run: Path) -> list[dict]:
    """Every result `melanoma evaluate` saved in the run (evaluation_*.json) for its folds as they
    are now, by name."""
    return _current_results(run, "evaluation_*.json")


def _current_results(run: Path, pattern: str) -> list[dict]:
    """The run's results whose file names match `pattern` and that belong to its folds as they are
    now, by name, each with its `file` (as saved, else its path)."""
    found, state = [], trained_state(run)  # the fold files are hashed once, not per result
    for path in sorted(Path(run).glob(pattern)):
        result = _read_json(run, path.name)
        if _current(run, result, path, state):
            found.append({"file": str(path), **result})
    return found


def validation_file(name: str) -> str:
    """The file `melanoma validate --name NAME` saves its result in."""
    return f"validation_{name}.json"


def validations(run: Path) -> list[dict]:
    """Every result `melanoma validate` saved in the run (validation_*.json) for its folds as they
    are now, by name, each with its `file`."""
    return _current_results(run, validation_file("*"))


def save_ood(run: Path, arrays: dict[str, np.ndarray], info: dict) -> None:
    """The out-of-distribution reference of `melanoma ood`: arrays in safetensors, the rest in JSON."""
    from safetensors.numpy import save_file

    atomic_write(Path(run) / OOD_STATS, lambda tmp: save_file(arrays, str(tmp)))
    save_result(run, OOD, info)


def load_ood(run: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    """The reference saved by save_ood for the folds as they are now, or None."""
    from safetensors.numpy import load_file

    info = current_result(run, OOD)
    if info is None or not (Path(run) / OOD_STATS).is_file():
        return None
    return load_file(str(Path(run) / OOD_STATS)), info


def test_probs_by_fold(run: Path) -> pd.DataFrame:
    """Each fold model's test probabilities (RUN/test_probs_by_fold.csv, from `melanoma predict`)."""
    path = Path(run) / TEST_PROBS_BY_FOLD
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `melanoma predict {run} --data DIR` first")
    return pd.read_csv(path)


def latest_oof_name(run: Path) -> str:
    """Which out-of-fold file latest_oof reads: the newest oof_*_tta.csv, else training's
    fold*/oof.csv, else (a run training did not make: `import-winners`) the newest oof_*.csv."""
    newest = lambda pattern: sorted(Path(run).glob(pattern), key=lambda p: p.stat().st_mtime)  # noqa: E731
    tta = newest("oof_*_tta.csv")
    if tta:
        return tta[-1].name
    plain = newest("oof_*.csv")
    return plain[-1].name if plain and not any(Path(run).glob("fold*/oof.csv")) else "fold*/oof.csv"


def checkpoint_oof(run: Path, checkpoint: str) -> tuple[pd.DataFrame, str]:
    """The out-of-fold scores of one checkpoint and the file's name: the newest of
    oof_<checkpoint>_tta.csv and oof_<checkpoint>.csv (`evaluate --checkpoint`), else, for best,
    training's own fold*/oof.csv."""
    checkpoint = checkpoint_name(checkpoint)
    found = [
        p
        for p in (Path(run) / f"oof_{checkpoint}_tta.csv", Path(run) / f"oof_{checkpoint}.csv")
        if p.is_file()
    ]
    if found:
        newest = max(found, key=lambda p: p.stat().st_mtime)
        return pd.read_csv(newest), newest.name
    if checkpoint == "best":
        return saved_oof(run), "fold*/oof.csv"
    raise FileNotFoundError(
        f"{run}: no out-of-fold scores of checkpoint {checkpoint} (oof_{checkpoint}*.csv); run "
        f"`melanoma evaluate {run} --data DATA --checkpoint {checkpoint}` first"
    )


def oof_checkpoint(name: str) -> str:
    """Which checkpoint an out-of-fold file holds: fold*/oof.csv is best; oof_<checkpoint>[_tta].csv."""
    if name == "fold*/oof.csv":
        return "best"
    return name.removeprefix("oof_").removesuffix(".csv").removesuffix("_tta")


def latest_oof(run: Path) -> pd.DataFrame:
    """A run's best out-of-fold class probabilities: the newest file `evaluate` wrote with TTA,
    else training's own oof.csv files."""
    name = latest_oof_name(run)
    return saved_oof(run) if name == "fold*/oof.csv" else pd.read_csv(Path(run) / name)


def _read_json(run: Path, name: str) -> dict | None:
    path = Path(run) / name
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({err}); run the command that writes it again") from err
    if not isinstance(result, dict):
        raise ValueError(
            f"{path}: expected a JSON object, found {type(result).__name__}; run the command again"
        )
    return result


def current_result(run: Path, name: str) -> dict | None:
    """One of the run's results (results.py reads them) as saved, if it is of the folds as they
    are now; else None."""
    result = _read_json(run, name)
    return result if result is not None and _current(run, result, Path(run) / name) else None


# Writing a run.


@contextlib.contextmanager
def lock(run: Path) -> Iterator[None]:
    """Exclusive access to a run directory's shared files (config.json, folds.csv, metrics.csv)
    for processes training different folds of it at the same time (POSIX file lock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one process at a time is the user's to ensure
        yield
        return
    with open(Path(run) / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def fold_locks(run: Path, folds: list[int]) -> Iterator[None]:
    """Hold RUN/.fold<k>.lock for each fold while it trains, so that a second training of the same
    fold into this directory is refused (naming the holder) instead of mixing its files with the
    first's. Other folds of the run may train at the same time."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one training per fold is the user's to ensure
        yield
        return
    Path(run).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for fold in folds:
            handle = stack.enter_context(open(Path(run) / f".fold{fold}.lock", "a+"))
            try:  # a POSIX record lock: held by this process only, not by the loader workers it
                # forks, so it ends with the process even when killed (flock would outlive it)
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ValueError(
                    f"{run}: fold {fold} is being trained by {holder}; wait for it to finish, "
                    "or train into another --out"
                ) from None
            handle.seek(0)
            handle.truncate()
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
            handle.flush()
        yield


def data_identity(rows: pd.DataFrame) -> dict:
    """What a run was trained on: a hash of its labelled rows' image names, labels and folds (in
    name order), with their count; two data folders that differ in any of these differ here."""
    rows = rows.sort_values("image_name")
    digest = hashlib.sha256()
    for name, target, fold in zip(rows.image_name, rows.target, rows.fold, strict=True):
        digest.update(f"{name}\t{int(target)}\t{int(fold)}\n".encode())
    return {"identity": digest.hexdigest()[:16], "images": len(rows)}


def describe_data(data: dict | None) -> str:
    """Which data a run belongs to, in a few words."""
    if not data:
        return "data it did not record (made before runs recorded their data)"
    return f"data {data.get('identity')} ({data.get('images')} labelled images)"


def check_data(run: Path, rows: pd.DataFrame) -> None:
    """Refuse data other than the run's own: `rows` (image_name, target, fold of the labelled
    rows, folds as the run has them) must give the identity config.json records."""
    saved = run_config(run).get("data_identity")
    if not saved:  # a run made before runs recorded their data
        return
    given = data_identity(rows)
    if given["identity"] != saved["identity"]:
        raise ValueError(
            f"{run} was trained on {describe_data(saved)}; this data gives {describe_data(given)}: "
            "other images, labels or folds. Give the run's own data folder"
        )


def _is_lock(name: str) -> bool:
    return name == ".lock" or (name.startswith(".fold") and name.endswith(".lock"))


def refuse_foreign(run: Path) -> None:
    """Refuse a folder that holds files but no run's config.json (someone's metrics.csv, notes,
    another tool's output): a run never writes over files it did not make."""
    run = Path(run)
    if not run.is_dir() or (run / CONFIG).is_file():
        return
    names = sorted(p.name for p in run.iterdir() if not _is_lock(p.name))
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ValueError(f"{run} holds files no run made ({shown}): give a new or empty folder as --out")


def check(run: Path, config: dict, training: list[int], resume: bool) -> None:
    """Refuse to mix two different runs in one directory (an image and a tree run, or two of
    either with other settings), to train it on other data, and to silently discard a stopped or
    finished fold; for every kind of run. (A folder of someone else's files: refuse_foreign, which
    train and gbdt call before they make their lock files there.)"""
    if (Path(run) / CONFIG).is_file():
        old = run_config(run)
        if (old.get("kind") == "gbdt") != (config.get("kind") == "gbdt"):
            model = "tree model" if config.get("kind") == "gbdt" else "image model"
            held = "a tree run (`melanoma gbdt`)" if old.get("kind") == "gbdt" else "an image run"
            raise ValueError(f"{run} holds {held}; choose another --out for the {model}")
        ignored = NOT_RECIPE | {"data_identity", "data_folder", "data_sources"}
        if old.get("kind") != "gbdt":  # a setting added since the run was made: it had the default
            old = {**json.loads(json.dumps(asdict(TrainConfig()))), **old}
        changed = sorted(k for k in config if k not in ignored and old.get(k) != config[k])
        if changed:  # first: other settings (a tree run's fold method, say) can give other folds
            raise ValueError(
                f"{run} holds a run with other settings ({', '.join(changed)}); "
                "choose another --out or remove the directory"
            )
        was, given = old.get("data_identity"), config.get("data_identity")
        if was and given and was["identity"] != given["identity"]:
            raise ValueError(
                f"{run} holds a run trained on {describe_data(was)}; this data gives "
                f"{describe_data(given)} (other images, labels or folds): choose another --out, or "
                "train on the run's data"
            )
    if resume:
        return
    stopped = unfinished_folds(run, training)
    if stopped:
        fold, (done, epochs) = next(iter(stopped.items()))
        raise ValueError(
            f"{run}: fold {fold} stopped after epoch {done} of {epochs}; "
            f"pass --resume to continue it, or remove {fold_dir(run, fold)} to start it over"
        )
    finished = {k: d for k in training if (d := fold_epochs_done(run, k)) is not None and d[0] >= d[1]}
    if finished:
        fold, (done, _) = next(iter(finished.items()))
        raise ValueError(
            f"{run}: fold {fold} is already trained ({done} epochs); pass --resume to keep it as it is, "
            f"or remove {fold_dir(run, fold)} to train it again"
        )


@contextlib.contextmanager
def undone_if_failed(run: Path, folds: list[int]) -> Iterator[None]:
    """A start that fails before any of these folds saved an epoch (hub weights offline, a bad
    setting found late, Ctrl-C at once) leaves the directory as it found it: config.json,
    folds.csv, metrics.csv and log.txt as they were, no new fold folder; so the rerun its error
    suggests is not refused as another run. Once an epoch is saved the run keeps it (--resume)."""
    run = Path(run)
    existed = run.is_dir()
    kept = {
        name: (run / name).read_bytes() if (run / name).is_file() else None
        for name in (CONFIG, FOLDS, METRICS, LOG)
    }
    had = {k: fold_dir(run, k).exists() for k in folds}
    states = {k: _stamp(state_path(run, k)) for k in folds}
    try:
        yield
    except BaseException:
        if all(_stamp(state_path(run, k)) == states[k] for k in folds):  # no epoch saved: undo the start
            for name, data in kept.items():
                if data is None:
                    (run / name).unlink(missing_ok=True)
                else:
                    atomic_write(run / name, lambda tmp, data=data: tmp.write_bytes(data))
            for k in folds:
                if not had[k]:
                    shutil.rmtree(fold_dir(run, k), ignore_errors=True)
            if not existed:
                for lock_file in run.glob(".*lock"):
                    lock_file.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    run.rmdir()  # only if nothing else is left
        raise


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def claim(run: Path, config: dict, training: list[int], resume: bool, rows: pd.DataFrame) -> None:
    """Record the run's settings (config.json, the union of the folds trained so far) and its folds
    (folds.csv: image_name, fold of `rows`, the labelled rows); retraining a fold from scratch
    replaces its metrics rows. For every kind of run (image and tree); call under lock(), after
    check()."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    if (run / CONFIG).is_file():
        config["folds"] = sorted(set(run_config(run).get("folds", [])) | set(config["folds"]))
    kept = metrics(run)
    if kept is not None and not resume:
        _write_metrics(run / METRICS, kept[~kept.fold.isin(training)])
    write_csv(rows[["image_name", "fold"]], run / FOLDS)
    atomic_write(run / CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))


def _write_metrics(path: Path, rows: pd.DataFrame) -> None:
    if len(rows):  # rewritten every epoch: atomically, so a kill never leaves half of it
        write_csv(rows.sort_values(["fold", "epoch"]), path)
    else:
        path.unlink(missing_ok=True)


def record_history(run: Path, fold: int, history: list[dict]) -> None:
    """metrics.csv with this fold's rows replaced by its history (the resume state's copy)."""
    with lock(run):
        kept = metrics(run)
        if kept is not None:
            kept = kept[kept.fold != fold]
        rows = [pd.DataFrame(history)] if kept is None else [kept, pd.DataFrame(history)]
        _write_metrics(Path(run) / METRICS, pd.concat(rows, ignore_index=True))


def write_oof(run: Path, fold: int, rows: pd.DataFrame, probs: np.ndarray, scheme: str) -> None:
    """RUN/fold<k>/oof.csv: image_name, fold, is_ext, target and one probability column per class
    (written under a temporary name, then renamed)."""
    oof = pd.DataFrame(
        {
            "image_name": rows.image_name.to_numpy(),
            "fold": fold,
            "is_ext": rows.is_ext.to_numpy(),
            "target": rows.target.to_numpy(),
        }
    )
    oof[class_names(scheme)] = probs
    write_csv(oof, fold_dir(run, fold) / "oof.csv")


def save_evaluation(run: Path, checkpoint: str, tta: bool, oof: pd.DataFrame | None, result: dict) -> dict:
    """RUN/oof_<checkpoint>[_tta].csv (re-predicted out-of-fold rows; None: training's own were
    scored) and RUN/evaluation_<checkpoint>[_tta].json; the result gains "oof_file" and "file"."""
    variant = variant_name(checkpoint, tta)
    if oof is not None:
        write_csv(oof, Path(run) / f"oof_{variant}.csv")
    result = {**result, "oof_file": "oof.csv" if oof is None else f"oof_{variant}.csv"}
    result["file"] = str(Path(run) / f"evaluation_{variant}.json")
    result["trained_state"] = trained_state(run)
    atomic_write(Path(result["file"]), lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    return result


def save_json(run: Path, name: str, result: dict) -> Path:
    """One of the run's files (config.json, ...) as JSON, atomically."""
    path = Path(run) / name
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))


def save_result(run: Path, name: str, result: dict) -> Path:
    """One of the run's results (calibration.json, operating_points.json, ...), atomically, with
    the state of the trained folds it was computed from."""
    return save_json(run, name, {**result, "trained_state": trained_state(run)})


def save_test_probs(run: Path, probs: pd.DataFrame, by_fold: pd.DataFrame) -> None:
    """RUN/test_probs.csv (fold-averaged) and RUN/test_probs_by_fold.csv (used by `melanoma select`)."""
    write_csv(probs, Path(run) / TEST_PROBS)
    write_csv(by_fold, Path(run) / TEST_PROBS_BY_FOLD)


def log(run: Path, text: str, main: bool = True) -> None:
    """Print a line and append it to RUN/log.txt (from the main process only)."""
    if not main:
        return
    console.print(text, markup=False)
    with open(Path(run) / LOG, "a") as f:
        f.write(text + "\n")
