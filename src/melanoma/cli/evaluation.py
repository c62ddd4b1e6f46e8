"""Scoring commands: predict, evaluate, ensemble, select, export."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape

from melanoma.cli.common import (
    BootstrapOption,
    CheckpointOption,
    DataSizeOption,
    ForceOption,
    RunArgument,
    TtaOption,
    UnfinishedOption,
    app,
    fail,
    print_frame,
    run_data,
)
from melanoma.progress import console

if TYPE_CHECKING:
    from melanoma.results import Evaluation


@app.command("predict")
def predict_cmd(
    run: RunArgument,
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
    data_size: DataSizeOption = None,
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
    from melanoma.results import Calibration
    from melanoma.run import Run

    if (data is None) == (not images):
        raise fail(ValueError("give either --data DIR (a test set) or --images FILE/FOLDER"))
    Run(run).require_image("predict with")
    fit = Calibration.load(run)
    if fit is not None:
        console.print(
            f"melanoma probabilities calibrated with temperature {fit.temperature:.3f} "
            f"({escape(str(run / Calibration.FILE))})"
        )
    asked = {"checkpoint": checkpoint, "tta": tta, "allow_unfinished": allow_unfinished,
             "operating_point": operating_point}  # fmt: skip
    if images:
        _predict_images(run, images, metadata, out, force, asked)
    else:
        _predict_test_set(run, data, data_size, out, force, asked)


def _predict_images(run: Path, images: list[Path], metadata: Path | None, out: Path | None, force: bool,
                    asked: dict) -> None:  # fmt: skip
    """Score image files or folders; a table on the terminal (the first 50) and, with --out, a CSV."""
    from rich.table import Table

    from melanoma import rundir
    from melanoma.evaluation.predict import predict_images
    from melanoma.fileio import check_output, write_csv

    if out:  # --out never replaces an input or the run's own files
        own = rundir.records(run, but=(rundir.SUBMISSION,))
        check_output(out, force=force, inputs=[*images, *([metadata] if metadata else []), *own])
    table = predict_images(run, images, metadata, **asked)
    flags = asked["operating_point"] is not None
    shown = Table("image", "melanoma", "predicted", *(["flagged"] if flags else []), "input check")
    for row in table.head(50).itertuples():
        check = "; ".join(
            [
                *([row.quality] if row.quality else []),
                *(["unlike the training images (OOD)"] if row.ood is True else []),
            ]
        )
        shown.add_row(
            row.image_name,
            f"{row.melanoma:.4f}",
            row.predicted,
            *(["yes" if row.flagged else "no"] if flags else []),
            check or "ok",
        )
    console.print(shown)
    if len(table) > 50:
        console.print(f"... and {len(table) - 50} more")
    if table.ood.isna().all():
        console.print(
            f"No out-of-distribution reference in {escape(str(run))}: `melanoma ood {escape(str(run))} --data DATA` fits one"
        )
    if table.flag.any():
        console.print(
            f"[yellow]{int(table.flag.sum())} of {len(table)} image(s) flagged by the input checks[/] (column flag): read their scores with care"
        )
    if out:
        write_csv(table, out)
        console.print(f"Wrote {out}")


def _predict_test_set(run: Path, data: Path, data_size: int | None, out: Path | None, force: bool,
                      asked: dict) -> None:  # fmt: skip
    """The run's submission for a data folder's test set (and the flags at an operating point)."""
    import pandas as pd

    from melanoma import rundir
    from melanoma.data.ingest import input_paths
    from melanoma.evaluation.predict import flagged_path, predict_submission
    from melanoma.fileio import check_output
    from melanoma.run import Run

    table = run_data(run, data, data_size)
    point = asked["operating_point"]
    if out:  # --out never replaces an input or the run's own files
        own = rundir.records(run, but=(rundir.SUBMISSION,))
        inputs = [*input_paths(data, table, data_size or Run(run).settings.data_size), *own]
        check_output(out, force=force, inputs=inputs)
        if point is not None:  # the flags go beside --out
            check_output(flagged_path(run, out), force=force, inputs=inputs)
    sub, path = predict_submission(run, table, out=out, **asked)
    console.print(f"Wrote {path} ({len(sub)} images{', 8-way TTA' if asked['tta'] else ''})")
    if point is not None:
        flags = flagged_path(run, out)
        flagged = pd.read_csv(flags).flagged
        console.print(
            f"{int(flagged.sum())} of {len(flagged)} image(s) flagged at the {point:.0%} sensitivity operating "
            f"point; wrote {escape(str(flags))}"
        )
    console.print(f"{escape(str(run))} was trained on {Run(run).describe_data()}")


@app.command()
def evaluate(
    run: RunArgument,
    data: Annotated[
        Path | None,
        typer.Option(
            help="The run's data folder, needed for TTA (default: none, training's out-of-fold scores)."
        ),
    ] = None,
    checkpoint: CheckpointOption = "best",
    tta: TtaOption = True,
    bootstrap: BootstrapOption = 1000,
    data_size: DataSizeOption = None,
    allow_unfinished: UnfinishedOption = False,
) -> None:
    """Out-of-fold scores as the winners reported them (AUC raw and ranked within folds, all rows
    and 2020 rows) plus the partial AUC above 80% sensitivity, each with a bootstrap 95% interval;
    for more than two classes the balanced multi-class accuracy and the confusion matrix. Writes RUN/evaluation_<checkpoint>[_tta].json and the out-of-fold predictions.

    Examples: melanoma evaluate runs/b3 --data data/; melanoma evaluate runs/b3 --no-tta (training's OOF)
    """
    from melanoma.evaluation.evaluate import evaluate as run_evaluate
    from melanoma.run import Run

    if Run(run).is_tree:
        console.print(
            f"{escape(str(run))} is a tree run (`melanoma gbdt`): its out-of-fold scores as saved (no checkpoints, no TTA)"
        )
        table = None
    else:
        table = None if data is None else run_data(run, data, data_size)
    result = run_evaluate(run, table, checkpoint, tta, bootstrap, allow_unfinished=allow_unfinished)
    _show_evaluation(run, result)


def _show_evaluation(run: Path, result: Evaluation) -> None:
    """The scores with their intervals (the table the report and the card show), the per-fold
    AUCs, and what the run was trained on."""
    from melanoma.run import Run
    from melanoma.rundir import describe_data

    print_frame(result.table(Run(run).scheme).round(4), f"{run} out of fold ({result.title()})")
    console.print(result.per_fold_text())
    if result.multiclass:
        console.print(result.multiclass_text())
        print_frame(result.confusion_table(), "Confusion matrix (rows: true class; columns: predicted)")
    console.print(f"{escape(str(run))} was trained on {describe_data(result.data_identity)}")
    console.print(f"Wrote {result.file}")


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
    run: RunArgument,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the exported files (default: RUN/onnx or RUN/timm).")
    ] = None,
    checkpoint: CheckpointOption = "best",
    allow_unfinished: UnfinishedOption = False,
    format: Annotated[  # noqa: A002 (the option's name)
        Literal["onnx", "timm"],
        typer.Option(
            help="onnx: one .onnx file per fold (any run); timm: one folder per fold that timm loads."
        ),
    ] = "onnx",
) -> None:
    """Export every fold model: to ONNX (checked with onnxruntime against PyTorch within 1e-4;
    the files carry class names, input size and normalisation), or with --format timm to folders
    timm alone loads (model.safetensors, config.json, README.md model card; runs without metadata).

    Examples: melanoma export runs/b3; melanoma export runs/b3 --format timm --out hub/b3
    """
    from melanoma import rundir
    from melanoma.evaluation.export import export_run
    from melanoma.evaluation.export_timm import export_timm
    from melanoma.fileio import check_output
    from melanoma.run import Run

    Run(run).require_image("export")
    if out is not None:
        check_output(out, folder=True, inputs=rundir.records(run, but=(format,)))
    if format == "timm":
        for folder in export_timm(run, out, checkpoint, allow_unfinished):
            console.print(
                f"Wrote {escape(str(folder))} (timm.create_model('local-dir:{escape(str(folder))}'))"
            )
        return
    for path, diff in export_run(run, out, checkpoint, allow_unfinished):
        console.print(f"Wrote {path} (onnxruntime vs PyTorch: max difference {diff:.1e})")
