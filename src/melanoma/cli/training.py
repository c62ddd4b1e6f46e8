"""Training commands: train, presets, gbdt (ISIC 2024's trees), import-winners, noisy-student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from melanoma.cli.common import app, name_list, parse_settings, wide, with_config_options
from melanoma.progress import console


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
    from melanoma.training.distributed import from_env
    from melanoma.training.train import settings_for, train, training_table

    cfg, note = settings_for(data, parse_settings(settings), resume)
    if note:
        console.print(escape(note))
    out = Path(cfg.out)
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
    wide().print(table)
    wide().print("Pretrained unless noted; unlisted settings are the winners' (`melanoma train --help`).")


# The tree ensemble's options (`melanoma gbdt`), named here to keep the command short.
ModelsOption = Annotated[
    str, typer.Option(help="Tree libraries, comma-separated: lightgbm, xgboost, catboost.")
]
ParamsOption = Annotated[
    Literal["default", "tuned"],
    typer.Option(help="Parameter preset per library: default (untuned) or tuned (the public 2024 values)."),
]
BagsOption = Annotated[int, typer.Option(help="Seeds per library, each on its own sample of the rows.")]
PosRateOption = Annotated[
    float,
    typer.Option(
        help="Oversample positives to this share of the negatives per bag (0: off; top teams 0.003)."
    ),
]
NegRateOption = Annotated[
    float,
    typer.Option(
        help="Then undersample negatives so positives are this share of them (0: off; top teams 0.01)."
    ),
]
EarlyStoppingOption = Annotated[
    int,
    typer.Option(
        help="Stop after this many rounds without a better log loss on patients held out inside the training fold (0: off)."
    ),
]
BlendOption = Annotated[
    Literal["mean", "rank", "fitted"],
    typer.Option(
        help="Blend of the libraries: mean of probabilities, rank average, or weights fitted on the other folds."
    ),
]
DropIndeterminateOption = Annotated[
    bool,
    typer.Option(help="Leave benign rows whose iddx_1 is Indeterminate out of fitting (still scored)."),
]


@app.command("gbdt")
def gbdt_cmd(
    data: Annotated[
        Path, typer.Argument(help="ISIC 2024 data folder (holds isic2024/ or train-metadata.csv).")
    ],
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/gbdt"),
    fold_method: Annotated[
        Literal["patient", "centre"],
        typer.Option(
            help="patient: grouped by patient, stratified by target (DATA/folds.csv when present); "
            "centre: each centre (attribution) held out in turn."
        ),
    ] = "patient",
    k_folds: Annotated[int, typer.Option(help="Folds when they are made here (patient).")] = 5,
    image_run: Annotated[
        list[Path] | None,
        typer.Option(
            help="Stack on this image run (repeat for several): its out-of-fold (train) and predicted (test) "
            "scores become features, with their patient-relative versions and the models' spread "
            "(default: the tables alone)."
        ),
    ] = None,
    features: Annotated[
        str, typer.Option(help="Extra metadata columns, comma-separated (e.g. attribution).")
    ] = "",
    drop_features: Annotated[
        str,
        typer.Option(
            help="Default features to leave out, comma-separated: columns, or whole groups as group:NAME "
            "(raw, ratios, patient, neighbourhood, ugly_duckling, centre, outlier, ranks, image_context)."
        ),
    ] = "",
    patient_stats: Annotated[
        bool,
        typer.Option(help="Every per-patient group (z-scores, min-max, counts, neighbourhoods, ranks, LOF)."),
    ] = True,
    models: ModelsOption = "lightgbm",
    params: ParamsOption = "default",
    bags: BagsOption = 1,
    pos_rate: PosRateOption = 0.0,
    neg_rate: NegRateOption = 0.0,
    early_stopping: EarlyStoppingOption = 0,
    blend: BlendOption = "mean",
    drop_indeterminate: DropIndeterminateOption = False,
    tune: Annotated[
        int,
        typer.Option(help="Optuna trials per library and fold, nested in the training fold (0: the preset)."),
    ] = 0,
    n_estimators: Annotated[
        int, typer.Option(help="Boosting rounds per model (the most, with early stopping).")
    ] = 200,
    learning_rate: Annotated[float, typer.Option(help="Learning rate (the default preset).")] = 0.05,
    num_leaves: Annotated[int, typer.Option(help="LightGBM's leaves per tree (the default preset).")] = 31,
    seed: Annotated[int, typer.Option(help="Seed of the folds, the samples and the trees.")] = 0,
) -> None:
    """ISIC 2024: gradient-boosted trees (LightGBM, XGBoost, CatBoost; bagged, blended) on the tables'
    columns, engineered and per-patient features and (--image-run) image models' scores; saved
    like an image run. Train-only columns (label, diagnosis, what follows it) are never features.

    Example: melanoma gbdt data/isic2024 --out runs/gbdt --models lightgbm,xgboost,catboost --bags 3
    --pos-rate 0.003 --neg-rate 0.01 --early-stopping 50 --image-run runs/edgenext
    """
    from melanoma.tabular.gbdt import GbdtConfig, train_gbdt

    cfg = GbdtConfig(
        out=str(out), fold_method=fold_method, k_folds=k_folds, seed=seed, image_run=[str(r) for r in image_run or []],
        features=name_list(features), drop_features=name_list(drop_features), patient_stats=patient_stats,
        models=name_list(models), params=params, bags=bags, pos_rate=pos_rate, neg_rate=neg_rate,
        early_stopping=early_stopping, blend=blend, drop_indeterminate=drop_indeterminate, tune=tune,
        n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
    )  # fmt: skip
    result = train_gbdt(data, cfg)
    console.print(
        f"{cfg.describe()}, out of fold ({result['rows']} lesions, {result['malignant']} malignant): pAUC above "
        f"80% TPR {result['pauc']:.4f}, AUC {result['auc']:.4f}, top-15 per-patient sensitivity {result['top15']:.3f}"
    )
    console.print(f"Most useful features: {', '.join(result['top_features'][:6])}\nWrote {escape(str(out))} "
                  f"(intervals: melanoma evaluate {escape(str(out))})")  # fmt: skip


@app.command("import-winners")
def import_winners_cmd(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder of the winners' published .pth files (Kaggle boliu0/melanoma-winning-models)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for one run directory per member.")] = Path(
        "runs/winners"
    ),
    data: Annotated[
        Path | None,
        typer.Option(
            help="The data folder, so each run gets its folds over it (default: none; `evaluate` then needs them)."
        ),
    ] = None,
) -> None:
    """Read the winners' own checkpoints ({member}_{best|best_20|final}_fold{k}.pth) into one run
    directory per member (config from the member's preset, fold weights in safetensors), for
    predict, evaluate, ensemble, export, explain and the clinical commands.

    Example: melanoma import-winners downloads/melanoma-winning-models --out runs/winners --data data/
    """
    from melanoma.run import Run
    from melanoma.training.imported import import_winners

    for run in import_winners(folder, out, data):
        opened = Run(run)
        console.print(
            f"{escape(str(run))}: {opened.settings.backbone}, folds {opened.config['folds']}, "
            f"{len(opened.config['imported_from'])} file(s)"
        )


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
    from melanoma.config import resolve
    from melanoma.data.loose import read_images
    from melanoma.experiments.noisy_student import noisy_student, student_of
    from melanoma.training.train import training_rows, training_table

    given = parse_settings(settings)
    teacher = resolve(given.pop("preset", None), given)
    pupil = student_of(teacher, student, drop_path)
    table = training_rows(training_table(data, teacher), teacher)
    unlabelled = None if images is None else read_images([images])
    result = noisy_student(table, teacher, pupil, out, unlabelled, iterations, soft, threshold, max_repeat)
    wide().print(result.to_string(index=False))
