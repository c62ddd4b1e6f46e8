"""The command line's shared parts: the app and its error handling, the options several commands
take, the training settings as options, and the tables results are printed in."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from melanoma.allocator import keep_freed_memory
from melanoma.config import TrainConfig
from melanoma.progress import console

if TYPE_CHECKING:
    import pandas as pd


def one_line(err: BaseException) -> str:
    """What went wrong, in one line: an OSError as "PATH: reason", an error raised in a data
    loader's worker process as the worker's own message (without the traceback torch adds)."""
    if isinstance(err, OSError) and err.strerror:
        paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
        return f"{' -> '.join(paths)}: {err.strerror}" if paths else err.strerror
    text = str(err).strip()
    if "Original Traceback" in text:  # torch re-raises a worker's error with its traceback
        last = text.splitlines()[-1]
        text = re.sub(r"^[\w.]+(Error|Exception): ", "", last)
    return " ".join(text.split("\n")) if text else type(err).__name__


def fail(err: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(one_line(err))}")
    return typer.Exit(code=2)


def first_sentence(text: str) -> str:
    """A docstring's first sentence on one line (up to a full stop before a capital or the end;
    e.g. and i.e. are not one)."""
    flat = " ".join(text.split("\n\n")[0].split())
    found = re.search(r"(?<!e\.g)(?<!i\.e)[.!?](?=\s+[A-Z`]|$)", flat)
    return flat[: found.end()] if found else flat


class Commands(TyperGroup):
    """Failures of every command, handled in one place: bad input (a ValueError, which names
    what is wrong) and faults of the machine (an OSError: a read-only or full disk, a missing
    folder) are one line and exit status 2; Ctrl-C is one line and status 130."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """The command, listed in `--help` by its docstring's first sentence on one line (typer
        would keep the docstring's line breaks there and cut sentences in two)."""
        command = super().get_command(ctx, name)
        if command is not None and not command.short_help and command.help:
            command.short_help = first_sentence(command.help)
        return command

    def invoke(self, ctx: click.Context) -> object:
        keep_freed_memory()  # tensors freed each batch are reused, not faulted in again (allocator.py)
        try:
            return super().invoke(ctx)
        except (ValueError, OSError) as err:
            raise fail(err) from err
        except KeyboardInterrupt as err:
            console.print("[bold red]interrupted[/]")
            raise typer.Exit(code=130) from err


app = typer.Typer(
    cls=Commands,
    help="Melanoma classification from dermoscopy images (SIIM-ISIC 2020 winning system).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def wide() -> Console:
    """A console on stdout for result tables: never squeezed below 150 columns."""
    return Console(width=max(Console().width, 150))


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise typer.BadParameter(f"expected comma-separated integers like 0,1,2, got {text!r}") from err


def name_list(text: str) -> list[str]:
    """Comma-separated names, blanks dropped: "a, b,," -> ["a", "b"]."""
    return [c.strip() for c in text.split(",") if c.strip()]


ForceOption = Annotated[bool, typer.Option(help="Overwrite an existing --out file (never the input data).")]


def _setting_type(declared: str) -> type:
    """The command-line type of a TrainConfig field ("list[int] | None" -> str, parsed later)."""
    for prefix, kind in (("bool", bool), ("list", str), ("tuple", str), ("int", int), ("float", float)):
        if declared.startswith(prefix):
            return kind
    return str


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def config_options(exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One option per TrainConfig field (its help and default from the field; --field-name unless
    the field names another): `melanoma train` and `noisy-student` take all of them. None means
    "not given", so a preset or a saved config decides."""
    params = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in exclude:
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        text = f.metadata["help"] + ("" if default is None else f" (default: {_shown(default)})")
        name = f.metadata.get("option", "--" + f.name.replace("_", "-"))
        kind = _setting_type(str(f.type))
        option = typer.Option(f"{name}/--no-{name[2:]}" if kind is bool else name, help=text)
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, option],
            )
        )
    return params


def with_config_options(*exclude: str) -> Callable:
    """Give a command (which takes **settings) the TrainConfig options."""

    def wrap(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        fixed = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        command.__signature__ = signature.replace(parameters=fixed + config_options(exclude))
        return command

    return wrap


def parse_settings(given: dict) -> dict:
    """TrainConfig values from the options' (lists as comma-separated text)."""
    types = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    out = {}
    for name, value in given.items():
        if isinstance(value, str) and types[name].startswith(("list[int]", "tuple[int")):
            value = int_list(value)
        elif isinstance(value, str) and types[name].startswith("list[str]"):
            value = [v.strip() for v in value.split(",") if v.strip()]
        out[name] = value
    return out


def run_data(run: Path, data: Path, data_size: int | None, progress: bool = True) -> pd.DataFrame:
    """The data table for a run: its scheme and image types, its data folder size unless given."""
    from melanoma.data.ingest import ingest
    from melanoma.run import Run

    cfg = Run(run).settings
    return ingest(
        data, data_size or cfg.data_size, scheme=cfg.scheme, verify="header", progress=progress,
        image_types=cfg.image_types,
    )  # fmt: skip


SlurmOption = Annotated[
    Path | None, typer.Option(help="Write a SLURM job array script here (default: print the commands).")
]
GpusOption = Annotated[int, typer.Option(help="GPUs per task (above 1: torchrun on the task's node).")]
HoursOption = Annotated[int, typer.Option(help="Time limit per task, in hours.")]
CpusOption = Annotated[int, typer.Option(help="CPU cores per task (for the data loader).")]
PartitionOption = Annotated[str | None, typer.Option(help="SLURM partition (default: the cluster's own).")]
SetupOption = Annotated[
    str | None,
    typer.Option(help="A shell line run before each task, e.g. module load or a venv (default: none)."),
]
LogsOption = Annotated[Path, typer.Option(help="Folder for the per-task logs.")]
CheckpointOption = Annotated[
    str,
    typer.Option(help="Which checkpoint of each fold: best (by AUC), best_20 (by AUC_20), last (= final)."),
]
TtaOption = Annotated[bool, typer.Option(help="Average over the 8 flips and transposes.")]
RunArgument = Annotated[Path, typer.Argument(help="Run directory made by `melanoma train`.")]
DataSizeOption = Annotated[int | None, typer.Option(help="Read jpeg-*-NxN of this N (default: the run's).")]
BootstrapOption = Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")]
UnfinishedOption = Annotated[
    bool,
    typer.Option(help="Use folds whose training stopped before its last epoch (named in a warning)."),
]


def print_frame(frame: pd.DataFrame, title: str) -> None:
    """A table of texts (the clinical results' own tables) as a rich table on stdout."""
    from rich.table import Table

    shown = Table(*map(str, frame.columns), title=title)
    for row in frame.itertuples(index=False):
        shown.add_row(*map(str, row))
    wide().print(shown)
