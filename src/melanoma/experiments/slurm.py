"""Work for a cluster: the winners' 18 members x 5 folds, or an ablation suite's units, as shell
commands and as one SLURM job array.

Every command resumes: `melanoma train ... --resume` continues a fold from its last complete
epoch and skips a finished one, and `melanoma ablate run --variant V --fold K` does the same for a
unit. The array script asks SLURM to requeue a preempted task (`--requeue`); the requeued task runs
the same command, so preemption costs at most the epoch in progress. Logs are appended per task.

Every value that reaches a line of the script is checked first: none may hold a control character
(a newline in the job name would end the #SBATCH block, and sbatch would then ignore --array), a
partition is a name, numbers are numbers; #SBATCH values with spaces are double-quoted as sbatch
reads them, and the commands are quoted for the shell.
"""

from __future__ import annotations

import re
import shlex
import sys
import unicodedata
from pathlib import Path

from melanoma import rundir
from melanoma.config import PRESETS, WINNERS, resolve

MEMBERS = WINNERS  # the 18 ensemble members


def launcher(gpus: int = 1) -> str:
    """How a task starts the toolkit: this very interpreter (a batch job's shell has no venv
    activated, so a bare `melanoma` may be another one or none), under torch's launcher for
    more than one GPU."""
    python = shlex.quote(sys.executable)
    if gpus <= 1:
        return f"{python} -m melanoma"
    return f"{python} -m torch.distributed.run --standalone --nproc-per-node {gpus} -m melanoma"


def check_members_data(data: Path, presets: list[str], settings: dict | None = None) -> None:
    """Before any task is written: the data folder serves every member as its task will read it
    (the prepared size, the folds: DATA/folds.csv or the tfrecord maps, the 2019 images), so a
    job array is not 90 tasks that each fail at the start."""
    from melanoma.data.ingest import ingest
    from melanoma.training.train import training_rows, training_table

    seen: dict[tuple, str] = {}
    tables: dict[
        tuple, object
    ] = {}  # one ingest per data size, scheme and image types (headers of every image)
    for preset in presets:
        cfg = resolve(preset, {**(settings or {}), "out": str(Path(data) / ".members-check")})
        key = (cfg.data_size, cfg.fold_method, cfg.k_folds, cfg.external, cfg.scheme, tuple(cfg.image_types))
        if key in seen:
            continue
        try:
            read = (cfg.data_size, cfg.scheme, tuple(cfg.image_types))
            if read not in tables:
                tables[read] = ingest(
                    data, cfg.data_size, scheme=cfg.scheme, progress=False, image_types=cfg.image_types
                )
            table = tables[read]
            training_rows(training_table(data, cfg, progress=False, table=table), cfg)
        except (ValueError, OSError) as err:
            hint = (
                f"; prepare it: melanoma prepare {data} {data} --sizes {cfg.data_size}"
                if cfg.data_size and f"{cfg.data_size}x{cfg.data_size}" in str(err)
                else ""
            )
            raise ValueError(
                f"{data} cannot serve member {preset} (data size {cfg.data_size}, folds {cfg.fold_method}): {err}{hint}"
            ) from None
        seen[key] = preset


def member_commands(
    data: Path,
    out: Path,
    presets: list[str] | None = None,
    folds: list[int] | None = None,
    gpus: int = 1,
    extra: list[str] | None = None,
) -> list[str]:
    """One command per (preset, fold) not yet finished: `python -m melanoma train DATA --preset P
    --out OUT/P --folds K --resume` (absolute paths: a task may start in another folder), under
    torch's launcher when a task has more than one GPU; `extra`: more train options."""
    presets = presets or MEMBERS
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset(s): {', '.join(unknown)}; `melanoma presets` lists them")
    data, out = Path(data).absolute(), Path(out).absolute()
    start = launcher(gpus)
    tail = "".join(f" {shlex.quote(a)}" for a in extra or [])
    commands = []
    for preset in presets:
        run = Path(out) / preset
        for fold in folds if folds is not None else range(resolve(preset).k_folds):
            done = rundir.fold_epochs_done(run, fold)
            if done is not None and done[0] >= done[1]:
                continue  # trained to its last epoch
            commands.append(
                f"{start} train {shlex.quote(str(data))} --preset {shlex.quote(preset)} "
                f"--out {shlex.quote(str(run))} --folds {fold} --resume{tail}"
            )
    return commands


_PARTITION = re.compile(r"[A-Za-z0-9_.,-]+")  # a partition name, or a comma-separated list of them


def _header_value(option: str, value: object) -> str:
    """A value for an #SBATCH line: one line of text (a newline would end the header block and
    start a shell command), double-quoted as sbatch reads it when it holds spaces."""
    text = str(value)
    bad = [c for c in text if unicodedata.category(c) == "Cc"]
    if bad or '"' in text or not text:
        what = f"control character {bad[0]!r}" if bad else ("a double quote" if text else "nothing")
        raise ValueError(f"{option} {text!r}: holds {what}; it goes into an #SBATCH line of the script")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def check_script_options(
    name: str, logs: Path, gpus: int, cpus: int, hours: int, partition: str | None, setup: str | None
) -> None:
    """Refuse, before any other work, a value that cannot go into a line of the script."""
    for option, number in (("--gpus", gpus), ("--cpus", cpus), ("--hours", hours)):
        if type(number) is not int or number < (0 if option == "--gpus" else 1):
            raise ValueError(
                f"{option} must be a whole number{' of at least 1' if option != '--gpus' else ''}, got {number!r}"
            )
    if partition is not None and not _PARTITION.fullmatch(partition):
        raise ValueError(
            f"--partition {partition!r}: a partition name holds only letters, digits, '_', '.', '-' (',' between names)"
        )
    if setup is not None and any(unicodedata.category(c) == "Cc" for c in setup):
        raise ValueError(
            f"--setup {setup!r}: one line of shell (chain commands with &&), no control characters"
        )
    _header_value("the job name", name)
    _header_value("--logs", logs)


def array_script(
    commands: list[str],
    name: str,
    logs: Path,
    gpus: int = 1,
    cpus: int = 8,
    hours: int = 24,
    partition: str | None = None,
    setup: str | None = None,
) -> str:
    """A SLURM batch script running commands[$SLURM_ARRAY_TASK_ID], requeued when preempted."""
    if not commands:
        raise ValueError("nothing left to run: every unit is finished")
    check_script_options(name, logs, gpus, cpus, hours, partition, setup)
    bad = [c for c in commands if any(unicodedata.category(ch) == "Cc" for ch in c)]
    if bad:
        raise ValueError(
            f"a command holds a control character (a path or option with a newline?): {bad[0]!r}"
        )
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={_header_value('the job name', name)}",
        f"#SBATCH --array=0-{len(commands) - 1}",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={_header_value('--logs', f'{Path(logs).absolute()}/%x_%a.log')}",
        f"#SBATCH --chdir={_header_value('the working folder', Path.cwd())}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --time={hours}:00:00",
    ]
    if gpus:
        lines.append(f"#SBATCH --gres=gpu:{gpus}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += [
        "# Generated by melanoma; every command resumes, so a requeued (preempted) task goes on",
        "# from its last complete epoch. Submit: sbatch THIS_FILE",
        "set -euo pipefail",
        f"mkdir -p {shlex.quote(str(Path(logs).absolute()))}",
    ]
    if setup:
        lines.append(setup)
    lines.append("COMMANDS=(")
    lines += [f"  {shlex.quote(c)}" for c in commands]
    lines += [
        ")",
        'echo "task ${SLURM_ARRAY_TASK_ID} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname) at $(date)"',
        'eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"',
        "",
    ]
    return "\n".join(lines)
