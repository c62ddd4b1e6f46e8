"""The questions a model meets next: calibrate, operating-points, subgroups, explain, card, report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    from melanoma.results import External


@app.command()
def calibrate(run: RunArgument) -> None:
    """Fit temperature scaling on the run's out-of-fold melanoma probabilities (the newest TTA
    evaluation, else training's); print ECE (15 equal-mass bins), Brier score and log loss before
    and after; write RUN/calibration.json and the reliability diagram RUN/calibration.png.
    `predict` then reports calibrated probabilities. AUC never changes.

    Example: melanoma evaluate runs/b3 --data data/ && melanoma calibrate runs/b3
    """
    from melanoma import rundir
    from melanoma.evaluation.calibration import calibrate as fit

    result = fit(run)
    print_frame(result.table().round(4), f"{run}: {result.summary()}")
    console.print(
        f"Wrote {run / result.FILE} and {run / rundir.CALIBRATION_PNG}; `predict` uses the temperature"
    )


@app.command("operating-points")
def operating_points_cmd(
    run: RunArgument,
    sensitivity: Annotated[
        list[float] | None,
        typer.Option(
            help="Extra sensitivities to report (repeatable; default: 0.90 and 0.95 only, always shown)."
        ),
    ] = None,
    bootstrap: BootstrapOption = 1000,
) -> None:
    """Thresholds reaching 90% and 95% sensitivity (and any --sensitivity) on the out-of-fold rows,
    with specificity, PPV, NPV and biopsies per melanoma found, each with a bootstrap 95% interval;
    writes RUN/operating_points.json (`predict --operating-point` reads it).

    Example: melanoma operating-points runs/b3 --sensitivity 0.8
    """
    from melanoma.evaluation.operating_points import SENSITIVITIES, operating_points
    from melanoma.run import Run

    result = operating_points(run, (*SENSITIVITIES, *(sensitivity or [])), bootstrap)
    scheme = Run(run).scheme
    print_frame(result.table(scheme), f"{run}: {result.summary(scheme)}")
    console.print(f"Wrote {run / result.FILE}")


@app.command("subgroups")
def subgroups_cmd(
    run: RunArgument,
    data: Annotated[Path, typer.Option(help="The run's data folder (for sex, age, site and source).")],
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="Another column of the ingested table (repeatable; default: sex, age, site and source only)."
        ),
    ] = None,
    sensitivity: Annotated[float, typer.Option(help="Operating point for the sensitivity column.")] = 0.95,
    bootstrap: BootstrapOption = 1000,
    data_size: DataSizeOption = None,
    skin_tone: Annotated[
        bool,
        typer.Option(
            help="Groups by estimated skin tone (ITA; each image read once, kept in DATA/skin_tone.csv; ISIC "
            "2024: from its TBP measurements). --no-skin-tone leaves them out."
        ),
    ] = True,
) -> None:
    """Out-of-fold AUC and sensitivity at an operating point per sex, age band, anatomic site,
    data source, estimated skin tone (and recorded Fitzpatrick type where the data has one) and
    any --by column, with bootstrap 95% intervals; groups too small to score are listed as such; a
    group whose interval lies wholly below the overall AUC is flagged; per column the equity gap
    (largest minus smallest AUC and sensitivity across groups). Writes RUN/subgroups.json.

    Example: melanoma subgroups runs/b3 --data data/ --by patient_id
    """
    from melanoma.data.skin_tone import skin_tones
    from melanoma.evaluation.subgroups import check_columns, subgroups
    from melanoma.run import Run

    table = run_data(run, data, data_size)
    check_columns(table, tuple(by or ()))  # before the images are read for their skin tone
    tones = skin_tones(data, table) if skin_tone else None
    result = subgroups(run, table, tuple(by or ()), sensitivity, bootstrap, tones=tones)
    print_frame(result.table(Run(run).scheme), f"{run}: subgroups, {result.summary()}")
    print_frame(result.gap_table(), "Equity gaps: largest minus smallest across each column's scored groups")
    console.print(f"Wrote {run / result.FILE}")


@app.command()
def explain(
    run: RunArgument,
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
    data_size: DataSizeOption = None,
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
    from melanoma.run import Run

    if (data is None) == (not images):
        raise fail(ValueError("give either --images FILE/FOLDER or --data DIR (for the gallery)"))
    Run(run).require_image("explain")
    if images:
        if out is not None:
            check_output(out, folder=True, inputs=[*images, *rundir.records(run, but=(rundir.EXPLAIN,))])
        table = read_images(images, metadata)
        done = explain_images(run, table, meta_matrix(table, run), out, checkpoint, tta, allow_unfinished)
        console.print(f"Wrote {len(done)} overlay(s) to {escape(str(Path(done.file.iloc[0]).parent))}")
        return
    table = run_data(run, data, data_size)
    done = make_gallery(run, table, meta_matrix(table, run), gallery, checkpoint, tta)
    scheme = Run(run).scheme
    print_frame(done.table(scheme), f"{run}: {done.summary(scheme)}")
    console.print(f"Wrote {escape(str(run / done.FILE))} and the overlays beside it")


@app.command()
def card(
    run: RunArgument,
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


@app.command()
def validate(
    run: RunArgument,
    data: Annotated[
        Path,
        typer.Option(help="A labelled data folder the run did not train on (any layout the toolkit reads)."),
    ],
    name: Annotated[
        str | None,
        typer.Option(help="Saved as RUN/validation_NAME.json (default: the data folder's name)."),
    ] = None,
    train_data: Annotated[
        Path | None,
        typer.Option(
            help="The run's training data folder, to find training images by content (default: the folder "
            "config.json records, as runs trained here do; with neither, images are matched by name only)."
        ),
    ] = None,
    refuse_overlap: Annotated[
        bool,
        typer.Option(help="Refuse data holding training images. Without it, they are left out and named."),
    ] = False,
    checkpoint: CheckpointOption = "best",
    tta: TtaOption = True,
    bootstrap: BootstrapOption = 1000,
    data_size: DataSizeOption = None,
) -> None:
    """External validation: the run on labelled data it did not train on, at the thresholds and
    temperature fixed out of fold; AUC, pAUC, sensitivity, specificity, PPV and NPV at each frozen
    operating point (a point whose sensitivity interval lies wholly below its target is flagged),
    calibration drift and subgroups, with bootstrap 95% intervals. Writes RUN/validation_NAME.json.

    Example: melanoma validate runs/b3 --data data/clinic-b --name clinic-b
    """
    from melanoma.evaluation.validate import validate as run_validate
    from melanoma.run import Run

    trees = None
    if Run(run).is_tree:
        from melanoma.tabular.gbdt import score_rows

        trees = lambda rows: score_rows(run, data, rows, tta)  # noqa: E731
    result = run_validate(run, data, run_data(run, data, data_size), name or Path(data).resolve().name,
                          checkpoint, tta, bootstrap, train_data=train_data, refuse_overlap=refuse_overlap,
                          trees=trees)  # fmt: skip
    _show_validation(run, result, Run(run).scheme)


def _show_validation(run: Path, result: External, scheme: str) -> None:
    """The validation's table, its subgroups and equity gaps, and a line per flagged point."""
    print_frame(result.table(scheme), f"{run}: external validation, {result.summary(scheme)}")
    groups = result.groups()
    print_frame(groups.table(scheme), f"Subgroups of {result.name} ({groups.summary()})")
    if result.gaps:
        print_frame(groups.gap_table(), "Equity gaps")
    for point in result.points:
        if point["flagged"]:
            console.print(f"[red]Flagged[/]: at the {point['target_sensitivity']:.0%} point the external sensitivity "
                          f"is {point['sensitivity']:.3f} ({point['sensitivity_low']:.3f}-{point['sensitivity_high']:.3f}), "
                          "wholly below the target: this threshold does not hold on this data")  # fmt: skip
    console.print(f"Wrote {escape(result.file)}")


@app.command()
def ood(
    run: RunArgument,
    data: Annotated[Path, typer.Option(help="The run's data folder (its training and out-of-fold images).")],
    data_size: DataSizeOption = None,
) -> None:
    """Fit the run's out-of-distribution reference: per fold model, its training images' feature
    mean and covariance, and the thresholds that 95% of out-of-fold images pass; `predict` and
    `validate` then flag images unlike them. Writes RUN/ood.json and RUN/ood.safetensors.

    Example: melanoma ood runs/b3 --data data/
    """
    from melanoma.evaluation.ood import fit
    from melanoma.evaluation.predict import meta_matrix

    table = run_data(run, data, data_size)
    info = fit(run, table, meta_matrix(table, run))
    for k, t in info["folds"].items():
        console.print(f"fold {k}: fitted on {t['fitted_on']} training images; thresholds from {t['thresholds_from']} "
                      f"out-of-fold images: distance {t['distance']:.2f}, energy {t['energy']:.3f}")  # fmt: skip
    console.print(f"Wrote {escape(str(run))}/ood.json; the flag uses the {info['default']} score")
