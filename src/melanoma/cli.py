"""The `melanoma` command line: each subcommand is a thin shell over a library function."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

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


def _fail(err: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(one_line(err))}")
    return typer.Exit(code=2)


def first_sentence(text: str) -> str:
    """A docstring's first sentence on one line (up to a full stop before a capital or the end;
    e.g. and i.e. are not one)."""
    flat = " ".join(text.split("\n\n")[0].split())
    found = re.search(r"(?<!e\.g)(?<!i\.e)[.!?](?=\s+[A-Z`]|$)", flat)
    return flat[: found.end()] if found else flat


class _Commands(TyperGroup):
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
            raise _fail(err) from err
        except KeyboardInterrupt as err:
            console.print("[bold red]interrupted[/]")
            raise typer.Exit(code=130) from err


app = typer.Typer(
    cls=_Commands,
    help="Melanoma classification from dermoscopy images (SIIM-ISIC 2020 winning system).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _wide() -> Console:
    """A console on stdout for result tables: never squeezed below 150 columns."""
    return Console(width=max(Console().width, 150))


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise typer.BadParameter(f"expected comma-separated integers like 0,1,2, got {text!r}") from err


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
            value = _int_list(value)
        elif isinstance(value, str) and types[name].startswith("list[str]"):
            value = [v.strip() for v in value.split(",") if v.strip()]
        out[name] = value
    return out


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write isic2020/, isic2019/ and truth/ into.")],
    n_train: Annotated[int, typer.Option(help="ISIC 2020 train images (before duplicates).")] = 1600,
    n_test: Annotated[int, typer.Option(help="ISIC 2020 test images.")] = 400,
    n_2019: Annotated[int, typer.Option("--n-2019", help="ISIC 2019 images.")] = 800,
    melanoma_rate: Annotated[float, typer.Option(help="Melanoma share in 2020.")] = 0.018,
    melanoma_rate_2019: Annotated[
        float, typer.Option("--melanoma-rate-2019", help="Melanoma share of the ISIC 2019 images.")
    ] = 0.18,
    duplicate_rate: Annotated[float, typer.Option(help="Planted near-duplicate groups per image.")] = 0.02,
    sizes: Annotated[
        Literal["small", "real"], typer.Option(help="small (fast) or real (6000x4000 and the like).")
    ] = "small",
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical output.")] = 0,
    workers: Annotated[int, typer.Option(help="Processes; 0 = all cores.")] = 0,
    force: Annotated[
        bool, typer.Option(help="Replace ISIC folders in OUT that synth did not write.")
    ] = False,
    isic2024: Annotated[
        bool,
        typer.Option(
            "--isic2024",
            help="Write the ISIC 2024 layout instead (OUT/isic2024/: metadata CSVs + HDF5 crops); "
            "--n-train / --n-test count lesions.",
        ),
    ] = False,
    malignant_rate: Annotated[float, typer.Option(help="With --isic2024: the malignant share.")] = 0.01,
    centres: Annotated[int, typer.Option(help="With --isic2024: contributing centres (1-7).")] = 4,
) -> None:
    """Write a synthetic ISIC-like dataset in the real public layouts.

    Examples: melanoma synth data/synthetic --n-train 5000 --seed 1;
    melanoma synth data/synthetic2024 --isic2024 --n-train 20000 --malignant-rate 0.005
    """
    if isic2024:
        from melanoma.synthetic.isic2024 import Synth2024Config, generate_2024

        cfg24 = Synth2024Config(n_train, n_test, malignant_rate, centres, seed=seed)
        s24 = generate_2024(out, cfg24, force=force)
        console.print(
            f"Wrote {s24['train']} ISIC 2024 train lesions ({s24['malignant']} malignant, {s24['patients']} "
            f"patients, {s24['centres']} centres) and {s24['test']} test lesions to {out / 'isic2024'}"
        )
        return
    from melanoma.synthetic.generate import SynthConfig, generate

    cfg = SynthConfig(n_train, n_test, n_2019, melanoma_rate, melanoma_rate_2019, duplicate_rate, sizes, seed)
    s = generate(out, cfg, workers=workers, force=force)
    console.print(
        f"Wrote {s.n_train_2020} 2020 train, {s.n_test_2020} 2020 test and {s.n_2019} 2019 images "
        f"({s.n_duplicates // 2} planted duplicate pairs) to {s.root}"
    )


@app.command("ingest")
def ingest_cmd(
    data: Annotated[Path, typer.Argument(help="Folder holding the ISIC downloads (or pre-resized copies).")],
    out: Annotated[
        Path | None, typer.Option(help="Write the table here (CSV; default: only the summary).")
    ] = None,
    data_size: Annotated[
        int | None,
        typer.Option(
            help="Read the prepared jpeg-melanoma-NxN / jpeg-isic2019-NxN of this N (default: the originals)."
        ),
    ] = None,
    external: Annotated[bool, typer.Option(help="Include ISIC 2019.")] = True,
    scheme: Annotated[
        Literal["9c", "4c", "2c", "mb"] | None,
        typer.Option(help="Target classes (default: 9c; mb, malignant vs benign, for ISIC 2024)."),
    ] = None,
    verify: Annotated[
        Literal["decode", "header", "none"],
        typer.Option(help="header (fast: headers and JPEG end markers), decode (every byte) or none."),
    ] = "header",
    skip_bad_images: Annotated[bool, typer.Option(help="Skip undecodable images and list them.")] = False,
    force: ForceOption = False,
) -> None:
    """Read ISIC 2020 / 2019 (or ISIC 2024) into one table and report what is there.

    Example: melanoma ingest data/ --out data/table.csv
    """
    from melanoma.data.ingest import ingest, input_paths, summarize, verify_images
    from melanoma.fileio import check_output, write_csv

    table = ingest(data, data_size, external, scheme, verify="none")
    if out:  # before the images are checked, which takes a while
        check_output(out, force=force, inputs=input_paths(data, table, data_size))
    skipped = (out.parent if out else data) / "skipped_images.csv"
    table = verify_images(table, verify, skip_bad_images, skipped).reset_index(drop=True)
    console.print(summarize(table))
    if out:
        write_csv(table, out)
        console.print(f"Wrote {len(table)} rows to {out}")


@app.command("prepare")
def prepare_cmd(
    data: Annotated[Path, typer.Argument(help="Folder with the original ISIC downloads.")],
    out: Annotated[Path, typer.Argument(help="Where jpeg-melanoma-NxN/ and jpeg-isic2019-NxN/ go.")],
    sizes: Annotated[str, typer.Option(help="Square sizes, comma-separated.")] = "512,768,1024",
    workers: Annotated[int, typer.Option(help="Processes; 0 = all cores.")] = 0,
    quality: Annotated[int, typer.Option(help="JPEG quality of the outputs.")] = 95,
    seed: Annotated[int, typer.Option(help="Seed of the 15 triple-stratified tfrecord groups.")] = 0,
    force: Annotated[bool, typer.Option(help="Write into jpeg-*-NxN folders prepare did not make.")] = False,
) -> None:
    """Centre-crop and resize every image into the pre-resized layout; resumable.

    Example: melanoma prepare data/ data/ --sizes 512,768
    """
    from melanoma.data.prepare import prepare

    report = prepare(data, out, tuple(_int_list(sizes)), workers, quality, seed, force=force)
    console.print(
        f"Wrote {report.written} image(s), skipped {report.skipped} already done, "
        f"{len(report.failed)} unreadable (see {out / 'prepare_report.csv'})"
    )


@app.command("dedup")
def dedup_cmd(
    data: Annotated[Path, typer.Argument(help="Data folder (original layouts).")],
    threshold: Annotated[
        float | None, typer.Option(help="Cosine similarity of a candidate pair (default: 0.55, measured).")
    ] = None,
    image_size: Annotated[int, typer.Option(help="Input size of the embedding CNN.")] = 96,
    views: Annotated[
        int,
        typer.Option(
            help="Orientations averaged per image: 8 (all flips and rotations), or 4, 2, 1 (faster)."
        ),
    ] = 8,
    device: Annotated[
        str, typer.Option(help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    ] = "auto",
    apply_decisions: Annotated[
        bool, typer.Option("--apply", help="Turn DATA/dedup/candidates.csv into DATA/duplicates.csv.")
    ] = False,
    review: Annotated[
        bool,
        typer.Option("--review", help="Review the candidates in the browser (127.0.0.1), saved as you go."),
    ] = False,
    port: Annotated[int, typer.Option(help="Port of the --review server on 127.0.0.1.")] = 8765,
) -> None:
    """Find near-duplicate images with CNN embeddings; review them; apply the decisions.

    Example: melanoma dedup data/   then open data/dedup/review.html, edit
    data/dedup/candidates.csv (decision: duplicate or distinct), and run melanoma dedup data/ --apply
    """
    from melanoma.data import dedup

    if review:
        from melanoma.data.review import server

        httpd = server(data, port)
        console.print(
            f"Reviewing {data / 'dedup' / 'candidates.csv'}: open {httpd.url} (its token admits this "
            "browser only; d / x to decide, arrows to move; Ctrl-C stops)",
            soft_wrap=True,
        )
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            console.print("Stopped; every decision is saved. Next: melanoma dedup DATA --apply")
        finally:
            httpd.server_close()
        return
    if apply_decisions:
        result = dedup.apply(data)
        console.print(
            f"{result.group.nunique()} duplicate group(s); {int((result.keep == 0).sum())} image(s) "
            f"leave training; wrote {data / 'duplicates.csv'}"
        )
        return
    pairs = dedup.find_duplicates(
        data,
        threshold if threshold is not None else dedup.DEFAULT_THRESHOLD,
        image_size,
        views=views,
        device=device,
    )
    current = pairs[pairs.candidate == 1]
    kept = int(((pairs.reviewed == 1) | (pairs.decision != "duplicate")).sum())
    console.print(
        f"{len(current)} candidate pair(s) in {current.group.nunique()} group(s); {kept} decision(s) a person "
        f"made are kept ({int((pairs.candidate == 0).sum())} of them on pairs no longer candidates): "
        f"review {data / 'dedup' / 'review.html'}"
    )


@app.command("folds")
def folds_cmd(
    data: Annotated[Path, typer.Argument(help="Data folder (as for ingest).")],
    method: Annotated[
        Literal["triple", "default", "newfold", "oldfold"],
        typer.Option(help="triple-stratified, or the winners' published map from the tfrecord column."),
    ] = "triple",
    k: Annotated[int, typer.Option(help="Number of folds (triple only).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the split: the same seed, the same folds.")] = 0,
    data_size: Annotated[
        int | None, typer.Option(help="Read the prepared jpeg-*-NxN of this N (default: the originals).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a DATA/folds.csv that assigns other folds.")] = False,
) -> None:
    """Split patients into k folds and write DATA/folds.csv; prints a per-fold summary.

    Confirmed duplicate groups (DATA/duplicates.csv, from `melanoma dedup --apply`) share a fold
    and their dropped members get fold -1.

    Example: melanoma folds data/ --k 5 --seed 0    or    melanoma folds data/ --method newfold
    """
    from melanoma.data.folds import fold_summary, write_folds

    table, path = write_folds(data, method, k, seed, data_size, force=force)
    console.print(fold_summary(table).round(4).to_string(), markup=False)
    console.print(f"Wrote {path}")


@app.command("train")
@with_config_options()
def train_cmd(
    data: Annotated[Path, typer.Argument(help="Data folder (as for ingest).")],
    resume: Annotated[
        bool, typer.Option(help="Continue stopped folds from their last complete epoch; skip finished ones.")
    ] = False,
    **settings: object,
) -> None:
    """Train folds of a model. Settings: defaults < --preset < options given here. With --resume
    on an existing run directory, its saved settings (and folds) are the base.

    Uses DATA/folds.csv when present (unless --fold-method names a published map).
    Under torchrun, trains with one process per device (DistributedDataParallel).

    Examples: melanoma train data/ --out runs/b3 --backbone efficientnet_b3;
    melanoma train data/ --preset 9c_b4ns_768_640_ext_15ep --out runs/b4 --amp bf16;
    torchrun --nproc-per-node 8 -m melanoma train data/ --preset baseline --out runs/base
    """
    from melanoma import rundir
    from melanoma.config import resolve
    from melanoma.data.folds import saved_k
    from melanoma.rundir import load_config
    from melanoma.training.distributed import from_env
    from melanoma.training.train import train, training_table

    given = parse_settings(settings)
    out = Path(given.get("out") or TrainConfig.out)
    base = None
    if resume and (out / rundir.CONFIG).is_file():
        base = {k: v for k, v in vars(load_config(out)).items() if k != "out"}  # all its folds too
    preset = given.pop("preset", None)
    cfg = resolve(preset, {**given, "out": str(out)}, base)
    k = (
        saved_k(data)
        if cfg.fold_method == "triple" and base is None and given.get("k_folds") is None
        else None
    )
    if k is not None and k != cfg.k_folds:  # the folds `melanoma folds --k` wrote for this data
        cfg = resolve(preset, {**given, "k_folds": k, "out": str(out)}, base)
        console.print(f"k_folds {k}, as in {escape(str(data / 'folds.csv'))}")
    main = from_env().is_main  # under torchrun, one progress bar, not one per process
    table = training_table(data, cfg, progress=main)
    try:
        train(table, cfg, progress=main, resume=resume)
    except KeyboardInterrupt as err:
        if main:
            console.print(
                f"[bold red]interrupted:[/] the finished epochs are saved in {escape(str(out))}; to go on, "
                "run the same command with --resume (it continues each fold from its last complete epoch)"
            )
        raise typer.Exit(code=130) from err


@app.command()
def presets() -> None:
    """List the named training recipes: the winners' 18 ensemble members, the ablation baseline
    and the demo.

    Example: melanoma presets
    """
    from rich.table import Table

    from melanoma.config import PRESETS, resolve

    table = Table("preset", "backbone", "data>input", "lr", "epochs", "folds", "other")
    for key in PRESETS:
        c = resolve(key)
        other = [
            c.scheme if c.scheme != "9c" else "",
            f"meta {','.join(map(str, c.meta_hidden))}" if c.use_meta else "",
            f"clip {c.grad_clip}" if c.grad_clip else "",
            f"batch {c.batch_size}" if c.batch_size != 64 else "",
            "" if c.pretrained else "from scratch",
            f"pos x{c.pos_oversample}" if c.pos_oversample > 1 else "",
            f"neg {c.neg_per_epoch}/ep" if c.neg_per_epoch else "",
        ]
        table.add_row(
            key, c.backbone, f"{c.data_size or 'raw'}>{c.image_size}", f"{c.lr:g}", str(c.epochs),
            f"{c.fold_method} {','.join(map(str, c.folds))}", " ".join(o for o in other if o),
        )  # fmt: skip
    _wide().print(table)
    _wide().print("Pretrained unless noted; unlisted settings are the winners' (`melanoma train --help`).")


def _run_data(run: Path, data: Path, data_size: int | None, progress: bool = True) -> pd.DataFrame:
    """The data table for a run: its scheme, its data folder size unless given."""
    from melanoma.data.ingest import ingest
    from melanoma.rundir import load_config

    cfg = load_config(run)
    return ingest(data, data_size or cfg.data_size, scheme=cfg.scheme, verify="header", progress=progress)


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
UnfinishedOption = Annotated[
    bool,
    typer.Option(help="Use folds whose training stopped before its last epoch (named in a warning)."),
]


@app.command("predict")
def predict_cmd(
    run: Annotated[Path, typer.Argument(help="Run directory made by `melanoma train`.")],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Data folder with the test images (ISIC layouts; no default: give this or --images)."
        ),
    ] = None,
    images: Annotated[
        list[Path] | None,
        typer.Option(help="Image files or folders to predict instead of --data (repeatable; default: none)."),
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option(
            help="With --images: CSV with image_name, patient_id, sex, age_approx, site (default: none)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Submission CSV (default RUN/submission.csv), or with --images a table."),
    ] = None,
    checkpoint: CheckpointOption = "best",
    tta: TtaOption = True,
    data_size: Annotated[
        int | None, typer.Option(help="Read jpeg-*-NxN of this N (default: the run's).")
    ] = None,
    allow_unfinished: UnfinishedOption = False,
    force: ForceOption = False,
    operating_point: Annotated[
        float | None,
        typer.Option(
            help="Flag images at or above the threshold of this sensitivity (e.g. 0.95), from the OOF rows (default: no flags)."
        ),
    ] = None,
) -> None:
    """Average the run's fold models (and 8 orientations) over the test set and write a
    validated submission, plus RUN/test_probs.csv and RUN/test_probs_by_fold.csv (every class).
    With --images, predict any image files or folders and print a table.

    Examples: melanoma predict runs/b3 --data data/;
    melanoma predict runs/b3 --images photos/ --images lesion.jpg --out predictions.csv
    """
    import pandas as pd
    from rich.table import Table

    from melanoma import rundir
    from melanoma.data.ingest import input_paths
    from melanoma.evaluation.predict import flagged_path, predict_images, predict_submission
    from melanoma.fileio import check_output, write_csv
    from melanoma.results import Calibration
    from melanoma.rundir import describe_data, load_config, run_config

    if (data is None) == (not images):
        raise _fail(ValueError("give either --data DIR (a test set) or --images FILE/FOLDER"))
    rundir.require_image_run(run, "predict with")
    own = rundir.records(run, but=(rundir.SUBMISSION,))  # --out never replaces the run's own files
    fit = Calibration.load(run)
    if fit is not None:
        console.print(
            f"melanoma probabilities calibrated with temperature {fit.temperature:.3f} "
            f"({escape(str(run / Calibration.FILE))})"
        )
    if images:
        if out:
            check_output(out, force=force, inputs=[*images, *([metadata] if metadata else []), *own])
        table = predict_images(
            run,
            images,
            metadata,
            checkpoint,
            tta,
            allow_unfinished=allow_unfinished,
            operating_point=operating_point,
        )
        shown = Table("image", "melanoma", "predicted", *(["flagged"] if operating_point else []))
        for row in table.head(50).itertuples():
            flag = ["yes" if row.flagged else "no"] if operating_point else []
            shown.add_row(row.image_name, f"{row.melanoma:.4f}", row.predicted, *flag)
        console.print(shown)
        if len(table) > 50:
            console.print(f"... and {len(table) - 50} more")
        if out:
            write_csv(table, out)
            console.print(f"Wrote {out}")
        return
    table = _run_data(run, data, data_size)
    if out:
        inputs = [*input_paths(data, table, data_size or load_config(run).data_size), *own]
        check_output(out, force=force, inputs=inputs)
        if operating_point is not None:  # the flags go beside --out
            check_output(flagged_path(run, out), force=force, inputs=inputs)
    sub, path = predict_submission(
        run, table, checkpoint, tta, out, allow_unfinished=allow_unfinished, operating_point=operating_point
    )
    console.print(f"Wrote {path} ({len(sub)} images{', 8-way TTA' if tta else ''})")
    if operating_point is not None:
        flags = flagged_path(run, out)
        flagged = pd.read_csv(flags).flagged
        console.print(
            f"{int(flagged.sum())} of {len(flagged)} image(s) flagged at the {operating_point:.0%} sensitivity "
            f"operating point; wrote {escape(str(flags))}"
        )
    console.print(f"{escape(str(run))} was trained on {describe_data(run_config(run).get('data'))}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory made by `melanoma train`.")],
    data: Annotated[
        Path | None,
        typer.Option(
            help="The run's data folder, needed for TTA (default: none, training's out-of-fold scores)."
        ),
    ] = None,
    checkpoint: CheckpointOption = "best",
    tta: TtaOption = True,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    data_size: Annotated[
        int | None, typer.Option(help="Read jpeg-*-NxN of this N (default: the run's).")
    ] = None,
    allow_unfinished: UnfinishedOption = False,
) -> None:
    """Out-of-fold scores as the winners reported them (AUC raw and ranked within folds, all rows
    and 2020 rows) plus the partial AUC above 80% sensitivity, each with a bootstrap 95% interval.
    Writes RUN/evaluation_<checkpoint>[_tta].json and the out-of-fold predictions.

    Examples: melanoma evaluate runs/b3 --data data/; melanoma evaluate runs/b3 --no-tta (training's OOF)
    """
    from rich.table import Table

    from melanoma.evaluation.evaluate import evaluate as run_evaluate
    from melanoma.rundir import describe_data, is_tree_run, load_config
    from melanoma.targets import positive_words

    if is_tree_run(run):
        console.print(
            f"{escape(str(run))} is a tree run (`melanoma gbdt`): its out-of-fold scores as saved (no checkpoints, no TTA)"
        )
        table = None
    else:
        table = None if data is None else _run_data(run, data, data_size)
    result = run_evaluate(run, table, checkpoint, tta, bootstrap, allow_unfinished=allow_unfinished)
    scheme = load_config(run).scheme
    shown = Table("metric", "rows", "value", "95% interval", "images", positive_words(scheme)[1],
                  title=f"{run} out of fold ({result['checkpoint']}, {'8-way TTA' if result['tta'] else 'no TTA'})")  # fmt: skip
    for r in result["scores"]:
        shown.add_row(r["metric"], r["rows"], f"{r['value']:.4f}", f"{r['low']:.4f} - {r['high']:.4f}",
                      str(r["images"]), str(r["melanomas"]))  # fmt: skip
    console.print(shown)
    if any(r["rows"] == "2020" for r in result["scores"]):  # ISIC 2019 rows among them: AUC_20 differs
        folds = "  ".join(f"fold {f['fold']}: {f['auc']:.4f} / {f['auc_20']:.4f}" for f in result["folds"])
        console.print(f"AUC / AUC_20 per fold: {folds}")
    else:
        console.print(
            "AUC per fold: " + "  ".join(f"fold {f['fold']}: {f['auc']:.4f}" for f in result["folds"])
        )
    console.print(f"{escape(str(run))} was trained on {describe_data(result.get('data'))}")
    console.print(f"Wrote {result['file']}")


@app.command("gbdt")
def gbdt_cmd(
    data: Annotated[
        Path, typer.Argument(help="ISIC 2024 data folder (holds isic2024/ or train-metadata.csv).")
    ],
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/gbdt"),
    folds: Annotated[
        Literal["patient", "centre"],
        typer.Option(
            help="patient: grouped by patient, stratified by target (DATA/folds.csv when present); "
            "centre: each centre (attribution) held out in turn."
        ),
    ] = "patient",
    k_folds: Annotated[int, typer.Option(help="Folds when they are made here (patient).")] = 5,
    image_run: Annotated[
        Path | None,
        typer.Option(
            help="Stack on this image run: its out-of-fold (train) and predicted (test) scores become a feature (default: the tables alone)."
        ),
    ] = None,
    features: Annotated[
        str, typer.Option(help="Extra metadata columns, comma-separated (e.g. attribution).")
    ] = "",
    drop_features: Annotated[str, typer.Option(help="Default features to leave out, comma-separated.")] = "",
    patient_stats: Annotated[
        bool, typer.Option(help="Per-patient z-scores, min-max and counts (the 'ugly duckling' features).")
    ] = True,
    n_estimators: Annotated[int, typer.Option(help="Boosting rounds per fold.")] = 200,
    learning_rate: Annotated[float, typer.Option(help="LightGBM learning rate.")] = 0.05,
    num_leaves: Annotated[int, typer.Option(help="Leaves per tree.")] = 31,
    seed: Annotated[int, typer.Option(help="Seed of the folds and the trees.")] = 0,
) -> None:
    """ISIC 2024: LightGBM on the tabular columns, engineered and per-patient features and, with
    --image-run, an image model's scores; out-of-fold and test predictions saved like an image
    run's (evaluate, ensemble, report and the clinical commands read it). Train-only columns (the
    label, the diagnosis, what comes after it) can never be features.

    Example: melanoma gbdt data/isic2024 --out runs/gbdt --image-run runs/edgenext
    """
    from melanoma.tabular.gbdt import GbdtConfig, train_gbdt

    def names(text: str) -> list[str]:
        return [c.strip() for c in text.split(",") if c.strip()]

    cfg = GbdtConfig(
        out=str(out), folds=folds, k_folds=k_folds, seed=seed, image_run=str(image_run) if image_run else None,
        features=names(features), drop_features=names(drop_features), patient_stats=patient_stats,
        n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
    )  # fmt: skip
    result = train_gbdt(data, cfg)
    console.print(
        f"Out of fold ({result['rows']} lesions, {result['malignant']} malignant): pAUC above 80% TPR "
        f"{result['pauc']:.4f}, AUC {result['auc']:.4f}, top-15 per-patient sensitivity {result['top15']:.3f}"
    )
    console.print(f"Most useful features: {', '.join(result['top_features'][:6])}")
    console.print(f"Wrote {escape(str(out))} (intervals: melanoma evaluate {escape(str(out))})")


@app.command()
def calibrate(run: Annotated[Path, typer.Argument(help="Run directory made by `melanoma train`.")]) -> None:
    """Fit temperature scaling on the run's out-of-fold melanoma probabilities (the newest TTA
    evaluation, else training's); print ECE (15 equal-mass bins), Brier score and log loss before
    and after; write RUN/calibration.json and the reliability diagram RUN/calibration.png.
    `predict` then reports calibrated probabilities. AUC never changes.

    Example: melanoma evaluate runs/b3 --data data/ && melanoma calibrate runs/b3
    """
    from melanoma import rundir
    from melanoma.evaluation.calibration import calibrate as fit

    result = fit(run)
    _print_frame(result.table().round(4), f"{run}: {result.summary()}")
    console.print(
        f"Wrote {run / result.FILE} and {run / rundir.CALIBRATION_PNG}; `predict` uses the temperature"
    )


def _print_frame(frame: pd.DataFrame, title: str) -> None:
    """A table of texts (the clinical results' own tables) as a rich table on stdout."""
    from rich.table import Table

    shown = Table(*map(str, frame.columns), title=title)
    for row in frame.itertuples(index=False):
        shown.add_row(*map(str, row))
    _wide().print(shown)


@app.command("operating-points")
def operating_points_cmd(
    run: Annotated[Path, typer.Argument(help="Run directory made by `melanoma train`.")],
    sensitivity: Annotated[
        list[float] | None,
        typer.Option(
            help="Extra sensitivities to report (repeatable; default: 0.90 and 0.95 only, always shown)."
        ),
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
) -> None:
    """Thresholds reaching 90% and 95% sensitivity (and any --sensitivity) on the out-of-fold rows,
    with specificity, PPV, NPV and biopsies per melanoma found, each with a bootstrap 95% interval;
    writes RUN/operating_points.json (`predict --operating-point` reads it).

    Example: melanoma operating-points runs/b3 --sensitivity 0.8
    """
    from melanoma import rundir
    from melanoma.evaluation.operating_points import SENSITIVITIES, operating_points

    result = operating_points(run, (*SENSITIVITIES, *(sensitivity or [])), bootstrap)
    scheme = rundir.load_config(run).scheme
    _print_frame(result.table(scheme), f"{run}: {result.summary(scheme)}")
    console.print(f"Wrote {run / result.FILE}")


@app.command("subgroups")
def subgroups_cmd(
    run: Annotated[Path, typer.Argument(help="Run directory made by `melanoma train`.")],
    data: Annotated[Path, typer.Option(help="The run's data folder (for sex, age, site and source).")],
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="Another column of the ingested table (repeatable; default: sex, age, site and source only)."
        ),
    ] = None,
    sensitivity: Annotated[float, typer.Option(help="Operating point for the sensitivity column.")] = 0.95,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    data_size: Annotated[
        int | None, typer.Option(help="Read jpeg-*-NxN of this N (default: the run's).")
    ] = None,
) -> None:
    """Out-of-fold AUC and sensitivity at an operating point per sex, age band, anatomic site,
    data source and any --by column, with bootstrap 95% intervals; groups too small to score are
    listed as such; a group whose interval lies wholly below the overall AUC is flagged. Writes
    RUN/subgroups.json.

    Example: melanoma subgroups runs/b3 --data data/ --by patient_id
    """
    from melanoma import rundir
    from melanoma.evaluation.subgroups import subgroups

    result = subgroups(run, _run_data(run, data, data_size), tuple(by or ()), sensitivity, bootstrap)
    _print_frame(result.table(rundir.load_config(run).scheme), f"{run}: subgroups, {result.summary()}")
    console.print(f"Wrote {run / result.FILE}")


@app.command()
def explain(
    run: Annotated[Path, typer.Argument(help="Run directory made by `melanoma train`.")],
    images: Annotated[
        list[Path] | None, typer.Option(help="Image files or folders to explain (repeatable; default: none).")
    ] = None,
    metadata: Annotated[
        Path | None, typer.Option(help="With --images: CSV of their metadata (default: none).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="The run's data folder, for --gallery (default: none).")
    ] = None,
    gallery: Annotated[
        int, typer.Option(help="With --data: this many misses and false alarms from the OOF rows.")
    ] = 4,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the --images overlays (default RUN/explain/images).")
    ] = None,
    checkpoint: CheckpointOption = "best",
    tta: TtaOption = True,
    data_size: Annotated[
        int | None, typer.Option(help="Read jpeg-*-NxN of this N (default: the run's).")
    ] = None,
    allow_unfinished: UnfinishedOption = False,
) -> None:
    """Grad-CAM heatmaps of the melanoma score, averaged over the fold models and the 8
    orientations: for --images, RUN/explain/images/<name>.png; with --data, a gallery of the most
    confident misses and false alarms among the out-of-fold rows (RUN/explain/gallery/, shown by
    `melanoma report`).

    Examples: melanoma explain runs/b3 --images lesion.jpg; melanoma explain runs/b3 --data data/ --gallery 4
    """
    from melanoma import rundir
    from melanoma.data.loose import read_images
    from melanoma.evaluation.explain import explain_images
    from melanoma.evaluation.explain import gallery as make_gallery
    from melanoma.evaluation.predict import meta_matrix
    from melanoma.fileio import check_output

    if (data is None) == (not images):
        raise _fail(ValueError("give either --images FILE/FOLDER or --data DIR (for the gallery)"))
    rundir.require_image_run(run, "explain")
    if images:
        if out is not None:
            check_output(out, folder=True, inputs=[*images, *rundir.records(run, but=(rundir.EXPLAIN,))])
        table = read_images(images, metadata)
        done = explain_images(run, table, meta_matrix(table, run), out, checkpoint, tta, allow_unfinished)
        console.print(f"Wrote {len(done)} overlay(s) to {escape(str(Path(done.file.iloc[0]).parent))}")
        return
    table = _run_data(run, data, data_size)
    done = make_gallery(run, table, meta_matrix(table, run), gallery, checkpoint, tta)
    console.print(done[["kind", "image_name", "fold", "score"]].round(4).to_string(index=False), markup=False)
    console.print(f"Wrote {escape(str(run / 'explain' / 'gallery.csv'))} and the overlays beside it")


@app.command()
def card(
    run: Annotated[Path, typer.Argument(help="Run directory made by `melanoma train`.")],
    data: Annotated[
        Path | None,
        typer.Option(
            help="The run's data folder, so the card says whether it is synthetic (default: none, not said)."
        ),
    ] = None,
) -> None:
    """Write RUN/MODEL_CARD.md (the Hugging Face model-card layout) from what the run holds:
    model details, intended and out-of-scope use, data, folds, metrics with intervals,
    calibration, operating points, subgroups, limitations and how to cite. What has not been
    computed is named with the command that computes it.

    Example: melanoma card runs/b3 --data data/
    """
    from melanoma.card import write_card

    console.print(f"Wrote {write_card(run, data)}")


@app.command("ensemble")
def ensemble_cmd(
    members: Annotated[list[Path], typer.Argument(help="Run directories or submission CSVs.")],
    weights: Annotated[
        str | None, typer.Option(help="Comma-separated weights, one per member (default: equal).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Ensemble submission CSV.")] = Path("ensemble.csv"),
    force: ForceOption = False,
) -> None:
    """Rank-average the members' submissions; with run directories, also the out-of-fold AUC of
    each member and of the ensemble (ranks within folds), to choose members on CV.

    Example: melanoma ensemble runs/b3 runs/b4 runs/b5 --weights 1,1,2 --out ensemble.csv
    """
    from rich.table import Table

    from melanoma.evaluation.ensemble import ensemble
    from melanoma.fileio import check_output

    w = None if weights is None else [float(v) for v in weights.split(",")]
    check_output(out, force=force, inputs=members)
    sub, table = ensemble(members, w, out)
    shown = Table(*table.columns)
    for row in table.itertuples(index=False):
        shown.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(shown)
    console.print(f"Wrote {out} ({len(sub)} images)")


@app.command("select")
def select_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Candidate run directories (trained and predicted).")],
    out: Annotated[Path, typer.Option(help="Folder for selection.csv and selection.png.")] = Path(
        "selection"
    ),
    max_divergence: Annotated[
        float, typer.Option(help="Flag a correlation-matrix divergence above this.")
    ] = 0.1,
    max_importance: Annotated[
        float, typer.Option(help="Flag an adversarial importance (AUC drop) above this.")
    ] = 0.02,
) -> None:
    """Screen ensemble candidates: correlation-matrix divergence between out-of-fold and test
    predictions, and adversarial-validation importance; a table, a plot and flags.

    Example: melanoma select runs/b3 runs/b4 runs/b5 --out selection/
    """
    from rich.table import Table

    from melanoma.evaluation.selection import plot, run_candidate, screen

    table, adv_auc = screen([run_candidate(r) for r in runs], max_divergence, max_importance)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "selection.csv", index=False)
    plot(table, adv_auc, max_divergence, max_importance, out / "selection.png")
    shown = Table("candidate", "divergence", "importance", "flag")
    for row in table.itertuples():
        shown.add_row(row.candidate, f"{row.divergence:.3f}", f"{row.importance:.3f}", row.why or "-")
    console.print(shown)
    console.print(f"Adversarial AUC (train vs test rows): {adv_auc:.3f}. Wrote {out}/selection.csv and .png")


@app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run directory made by `melanoma train`.")],
    out: Annotated[Path | None, typer.Option(help="Folder for the .onnx files (default: RUN/onnx).")] = None,
    checkpoint: CheckpointOption = "best",
    allow_unfinished: UnfinishedOption = False,
) -> None:
    """Export every fold model to ONNX (checked with onnxruntime against PyTorch within 1e-4);
    the files carry class names, input size and normalisation.

    Example: melanoma export runs/b3
    """
    from melanoma import rundir
    from melanoma.evaluation.export import export_run
    from melanoma.fileio import check_output

    rundir.require_image_run(run, "export")
    if out is not None:
        check_output(out, folder=True, inputs=rundir.records(run, but=("onnx",)))
    done = export_run(run, out, checkpoint, allow_unfinished)
    for path, diff in done:
        console.print(f"Wrote {path} (onnxruntime vs PyTorch: max difference {diff:.1e})")


@app.command("noisy-student")
@with_config_options("out", "drop_path")
def noisy_student_cmd(
    data: Annotated[Path, typer.Argument(help="Data folder (as for train).")],
    out: Annotated[Path, typer.Option(help="Folder for iter0 (teacher), iter1, ... run directories.")],
    student: Annotated[
        str | None, typer.Option(help="The student's backbone, as large or larger (default: the teacher's).")
    ] = None,
    iterations: Annotated[int, typer.Option(help="Student generations.")] = 1,
    soft: Annotated[
        bool, typer.Option("--soft/--hard", help="Soft (probabilities) or hard (one-hot) labels.")
    ] = True,
    threshold: Annotated[
        float, typer.Option(help="Keep pseudo-labels whose top probability reaches this.")
    ] = 0.5,
    max_repeat: Annotated[
        int, typer.Option(help="Most repeats of a rare class's pseudo-labelled images.")
    ] = 5,
    drop_path: Annotated[float, typer.Option(help="The student's stochastic depth rate.")] = 0.2,
    images: Annotated[
        Path | None, typer.Option(help="Unlabelled images folder (default: the test set).")
    ] = None,
    **settings: object,
) -> None:
    """Noisy Student: teacher, pseudo-labels on unlabelled images, a noised student on both; repeat.
    The training options (as for `melanoma train`) set the teacher; the student shares them.

    Example: melanoma noisy-student data/ --out runs/ns --preset baseline --iterations 2 --threshold 0.6
    """
    from dataclasses import replace

    from melanoma.config import resolve
    from melanoma.data.loose import read_images
    from melanoma.experiments.noisy_student import noisy_student
    from melanoma.training.train import training_rows, training_table

    given = parse_settings(settings)
    teacher = resolve(given.pop("preset", None), given)
    pupil = replace(teacher, backbone=student or teacher.backbone, drop_path=drop_path, augment=True)
    table = training_rows(training_table(data, teacher), teacher)
    unlabelled = None if images is None else read_images([images])
    result = noisy_student(table, teacher, pupil, out, unlabelled, iterations, soft, threshold, max_repeat)
    _wide().print(result.to_string(index=False))


@app.command("report")
def report_cmd(
    path: Annotated[
        Path, typer.Argument(help="A run directory, an ablation suite folder or an ensemble CSV.")
    ],
    out: Annotated[Path | None, typer.Option(help="HTML file (default: PATH/report.html).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the AUC intervals.")] = 500,
    force: ForceOption = False,
) -> None:
    """One self-contained HTML report: data summary, training curves, ROC curves with intervals,
    per-fold table, ablation charts, ensemble table and configs.

    Example: melanoma report runs/b3
    """
    from melanoma import rundir
    from melanoma.fileio import check_output
    from melanoma.report import report

    if out is not None:
        own = (
            [path, path.with_name(path.stem + "_members.csv")]
            if path.is_file()
            else rundir.records(path, but=("report.html",))
        )
        check_output(out, force=force, inputs=own)
    written = report(path, out, bootstrap)
    console.print(f"Wrote {written}")


ablate_app = typer.Typer(
    cls=_Commands,
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
    _wide().print(shown)
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
    commands = member_commands(data, out, preset, _int_list(folds) if folds else None, gpus, extra)
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
    print(suite_toml(shrink(load_suite(suite), names, _int_list(folds) if folds else None, epochs)), end="")


@ablate_app.command("results")
def ablate_results(out: Annotated[Path, typer.Argument(help="Suite folder (holds suite.json).")]) -> None:
    """The results of a suite's finished units: table, OUT/ablation.csv, the two charts.

    Example: melanoma ablate results runs/ablation
    """
    from melanoma.experiments.ablate import saved_suite, summarize

    _, table, paths = summarize(saved_suite(out), out)
    _print_ablation(table, paths)


bench_app = typer.Typer(
    cls=_Commands, help="Measure this machine: `melanoma bench loader`.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


@bench_app.command("loader")
def bench_loader(
    data: Annotated[Path, typer.Option(help="Data folder (as for ingest).")],
    data_size: Annotated[
        int | None, typer.Option(help="Read the prepared jpeg-*-NxN of this N (default: the originals).")
    ] = None,
    backbone: Annotated[
        str, typer.Option(help="The model whose step rate the loader must keep up with.")
    ] = "efficientnet_b3",
    image_size: Annotated[int, typer.Option(help="Model input size the loader prepares.")] = 384,
    batch_size: Annotated[int, typer.Option(help="Batch size per process.")] = 48,
    amp: Annotated[str, typer.Option(help="Mixed precision of the model step: off, bf16 or fp16.")] = "off",
    pipeline: Annotated[str, typer.Option(help="Input pipeline: fast or reference.")] = "fast",
    device: Annotated[
        str, typer.Option(help="Device of the model step: auto, cpu, cuda, cuda:1 ...")
    ] = "auto",
    workers: Annotated[
        str | None, typer.Option(help="Worker counts to try, e.g. 0,2,4,8 (default: 0 up to the cores).")
    ] = None,
    images: Annotated[int, typer.Option(help="Train images to draw from.")] = 512,
) -> None:
    """Loader images/s against the worker count, the model's own training rate on this machine,
    and the worker count at which waiting for data falls under 5% of step time (training's
    automatic count follows the same rule).

    Example: melanoma bench loader --data data/ --data-size 512 --backbone efficientnet_b3 --amp bf16
    """
    from rich.table import Table

    from melanoma.config import TrainConfig
    from melanoma.data.ingest import ingest
    from melanoma.inputs.dataset import LesionDataset
    from melanoma.inputs.loader import bench
    from melanoma.inputs.transforms import pipeline_transforms
    from melanoma.models.inference import pick_device
    from melanoma.models.model import build_model
    from melanoma.models.weights import normalization

    cfg = TrainConfig(  # the step rate does not depend on the weights: none fetched
        backbone=backbone,
        image_size=image_size,
        amp=amp,
        pipeline=pipeline,
        device=device,
        pretrained=False,
    )
    table = ingest(data, data_size, verify="none")
    rows = table[table.split == "train"].head(images)
    tf = pipeline_transforms(image_size, True, *normalization(backbone, False), pipeline)[0]
    ds = LesionDataset(rows, tf)
    ds.reseed(0)
    dev = pick_device(device)
    counts = None if workers is None else _int_list(workers)
    results, consumes, best = bench(ds, build_model(cfg, 0).to(dev), batch_size, image_size, dev, amp, counts)
    shown = Table(
        "workers",
        "loader images/s",
        "expected wait",
        title=f"{backbone} at {image_size} px on {dev}: trains {consumes:.0f} images/s",
    )
    for r in results:
        shown.add_row(str(r["workers"]), f"{r['images_per_s']:.0f}", f"{r['expected_wait']:.0%}")
    console.print(shown)
    console.print(f"Recommended: --workers {best}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/demo"),
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Where the synthetic data goes (default: $MELANOMA_CACHE, else ~/.cache/melanoma)."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Override the demo's epochs (default: the demo's own, 3).")
    ] = None,
    isic2024: Annotated[
        bool,
        typer.Option(
            "--isic2024",
            help="The ISIC 2024 demo instead: crops in HDF5, an image model, LightGBM stacked on it, pAUC "
            "(default --out runs/demo2024).",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline on synthetic data: generate, ingest, folds, train, predict.

    Examples: melanoma demo --out runs/demo; melanoma demo --isic2024
    """
    from melanoma.demo import run_demo, run_demo_2024

    overrides = {"epochs": epochs} if epochs else None
    if isic2024:
        run_demo_2024(Path("runs/demo2024") if out == Path("runs/demo") else out, cache, overrides)
        return
    run_demo(out, cache, train_overrides=overrides)


if __name__ == "__main__":
    app()
