"""Experiments: ablation suites (ablate run, units, show, results) and the winners' members on a cluster."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from melanoma.config import TrainConfig
from melanoma.progress import console

if TYPE_CHECKING:
    import pandas as pd

from melanoma.cli.common import (
    Commands,
    CpusOption,
    ForceOption,
    GpusOption,
    HoursOption,
    LogsOption,
    PartitionOption,
    SetupOption,
    SlurmOption,
    app,
    int_list,
    parse_settings,
    wide,
)

ablate_app = typer.Typer(
    cls=Commands,
    help="Ablation suites: a baseline and variants over k folds, unit by unit, with a paired comparison.",
    no_args_is_help=True,
)
app.add_typer(ablate_app, name="ablate")
SuiteArgument = Annotated[str, typer.Argument(help="A built-in suite (reproduction) or a suite file (TOML).")]


def _print_ablation(table: pd.DataFrame, paths: list[Path]) -> None:
    from rich.table import Table

    shown = Table(
        "variant", "folds", "AUC mean +- sd", "diff", "p", "real?", "AUC_20 mean +- sd", "diff", "p", "real?"
    )
    for r in table.itertuples():
        cells = [r.variant, str(r.folds)]
        for m in ("auc", "auc_20"):
            cells += [
                f"{getattr(r, m + '_mean'):.4f} +- {getattr(r, m + '_std'):.4f}",
                f"{getattr(r, m + '_diff'):+.4f}",
                f"{getattr(r, m + '_p'):.3f}",
                "yes" if getattr(r, m + "_real") else "no",
            ]
        shown.add_row(*cells)
    wide().print(shown)
    for p in paths:
        console.print(f"Wrote {p}")


@ablate_app.command("run")
def ablate_run(
    suite: SuiteArgument,
    data: Annotated[Path, typer.Option(help="Data folder (as for train).")],
    out: Annotated[Path, typer.Option(help="Suite folder: one run directory per variant.")],
    variant: Annotated[
        str | None, typer.Option(help="Only this variant, or baseline (default: every variant).")
    ] = None,
    fold: Annotated[int | None, typer.Option(help="Only this fold (default: the suite's folds).")] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Override every unit's epochs, for a quick look (default: the suite's)."),
    ] = None,
) -> None:
    """Train the suite's unfinished units (resuming stopped ones; finished ones are skipped), then
    print the results and write the charts.

    Example: melanoma ablate run reproduction --data data/ --out runs/ablation
    """
    from melanoma.experiments.ablate import load_suite, run, summarize

    s = load_suite(suite)
    run(s, data, out, variant, fold, {"epochs": epochs} if epochs else None)
    from melanoma.experiments.ablate import saved_suite

    _, table, paths = summarize(saved_suite(out), out)
    _print_ablation(table, paths)


@ablate_app.command("units")
def ablate_units(
    suite: SuiteArgument,
    data: Annotated[Path, typer.Option(help="Data folder (as for train).")],
    out: Annotated[Path, typer.Option(help="Suite folder.")],
    epochs: Annotated[
        int | None, typer.Option(help="Override every unit's epochs (default: the suite's).")
    ] = None,
    slurm: SlurmOption = None,
    gpus: GpusOption = 1,
    hours: HoursOption = 24,
    cpus: CpusOption = 8,
    partition: PartitionOption = None,
    setup: SetupOption = None,
    logs: LogsOption = Path("slurm-logs"),
    force: ForceOption = False,
) -> None:
    """Print one command per unfinished unit, for any scheduler (each is independent and
    resumable), or write them as one SLURM job array (--slurm FILE).

    Examples: melanoma ablate units reproduction --data data/ --out runs/ablation | parallel -j 8;
    melanoma ablate units reproduction --data data/ --out runs/ablation --slurm ablation.sbatch
    """
    from melanoma.experiments.ablate import Suite, load_suite, unit_commands

    s = load_suite(suite)
    if epochs:
        s = Suite(s.name, {**s.baseline, "epochs": epochs}, s.variants, s.folds)
    extra = ["--epochs", str(epochs)] if epochs else []
    commands = unit_commands(suite, s, data, out, extra)
    if slurm is None:
        for line in commands:
            print(line)
        return
    _write_array(commands, f"melanoma-{s.name}", slurm, gpus, hours, cpus, partition, setup, logs, force)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def members(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Data folder (as for train).")],
    out: Annotated[Path, typer.Option(help="Folder for one run directory per member (OUT/PRESET).")],
    preset: Annotated[
        list[str] | None, typer.Option(help="Members to include (repeatable; default all 18).")
    ] = None,
    folds: Annotated[
        str | None, typer.Option(help="Folds, comma-separated (default: all of each member).")
    ] = None,
    slurm: SlurmOption = None,
    gpus: GpusOption = 1,
    hours: HoursOption = 24,
    cpus: CpusOption = 8,
    partition: PartitionOption = None,
    setup: SetupOption = None,
    logs: LogsOption = Path("slurm-logs"),
    force: ForceOption = False,
) -> None:
    """The winners' ensemble as jobs: one `melanoma train ... --resume` per member and fold not yet
    finished (18 x 5), printed, or written as one SLURM job array (--slurm FILE). Options after the
    others (e.g. --amp bf16 --workers 8) are passed to every train command, checked first. The
    data folder is checked first too: it must serve every member (prepared sizes, folds).

    Examples: melanoma members data/ --out runs/ | parallel -j 2;
    melanoma members /shared/data --out /shared/runs --slurm members.sbatch --gpus 1 --amp bf16
    """
    from melanoma.experiments.slurm import MEMBERS, check_members_data, check_script_options, member_commands

    if slurm is not None:  # the script's own values first: they need no data
        check_script_options("melanoma-members", logs, gpus, cpus, hours, partition, setup)
    extra = list(ctx.args)
    settings = _train_settings(extra)
    check_members_data(data, preset or MEMBERS, settings)
    commands = member_commands(data, out, preset, int_list(folds) if folds else None, gpus, extra)
    if slurm is None:
        for line in commands:
            print(line)
        return
    _write_array(commands, "melanoma-members", slurm, gpus, hours, cpus, partition, setup, logs, force)


def _train_settings(extra: list[str]) -> dict:
    """The TrainConfig values of train options given to another command (members passes them on):
    parsed by `melanoma train`'s own parser, so an unknown option or a bad value is refused now,
    not in every task of a job array."""
    train = typer.main.get_command(app).commands["train"]
    for name in ("--out", "--preset", "--folds", "--resume"):
        if name in extra:
            raise ValueError(f"{name} is set by members for each task; leave it out of the train options")
    try:
        ctx = train.make_context("train", ["DATA", *extra], resilient_parsing=False)
    except (click.ClickException, typer.exceptions.TyperException) as err:  # typer ships its own click
        raise ValueError(f"train options {' '.join(extra)!r}: {err.format_message()}") from None
    given = {
        k: v
        for k, v in ctx.params.items()
        if v is not None and k in {f.name for f in dataclasses.fields(TrainConfig)}
    }
    return parse_settings(given)


def _write_array(
    commands: list[str], name: str, path: Path, gpus: int, hours: int, cpus: int,
    partition: str | None, setup: str | None, logs: Path, force: bool,
) -> None:  # fmt: skip
    from melanoma.experiments.slurm import array_script
    from melanoma.fileio import atomic_write, check_output

    check_output(path, force=force)
    text = array_script(commands, name, logs, gpus, cpus, hours, partition, setup)
    Path(logs).mkdir(parents=True, exist_ok=True)  # SLURM opens each task's log before the script runs
    atomic_write(path, lambda tmp: tmp.write_text(text))
    console.print(f"Wrote {path}: a job array of {len(commands)} task(s); submit it with `sbatch {path}`")


@ablate_app.command("show")
def ablate_show(
    suite: Annotated[str, typer.Argument(help="A built-in suite (reproduction) or a suite file (TOML).")],
    variants: Annotated[
        str | None, typer.Option(help="Keep only these variants, comma-separated (default: all).")
    ] = None,
    folds: Annotated[str | None, typer.Option(help="Folds, comma-separated (default: the suite's).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs of every unit (default: the suite's).")] = None,
) -> None:
    """Print a suite as a suite file (TOML), optionally shrunk, to save, edit and run.

    Example: melanoma ablate show reproduction --variants no-augmentation,amp --folds 0,1 --epochs 3 > small.toml
    """
    from melanoma.experiments.ablate import load_suite, shrink, suite_toml

    names = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    print(suite_toml(shrink(load_suite(suite), names, int_list(folds) if folds else None, epochs)), end="")


@ablate_app.command("results")
def ablate_results(out: Annotated[Path, typer.Argument(help="Suite folder (holds suite.json).")]) -> None:
    """The results of a suite's finished units: table, OUT/ablation.csv, the two charts.

    Example: melanoma ablate results runs/ablation
    """
    from melanoma.experiments.ablate import saved_suite, summarize

    _, table, paths = summarize(saved_suite(out), out)
    _print_ablation(table, paths)
