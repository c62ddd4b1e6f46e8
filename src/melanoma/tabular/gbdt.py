"""`melanoma gbdt`: LightGBM on ISIC 2024's tabular columns, engineered features and, optionally, an
image run's out-of-fold scores (stacking), as the 2024 winners did.

Folds (--fold-method): `patient`, grouped by patient and stratified by target (DATA/folds.csv
when `melanoma folds` wrote one, else the same triple-stratified split made here), or `centre`:
each centre (attribution) is one fold, so every score comes from a model that never saw that
centre.

The run directory looks like an image run's, so `evaluate`, `ensemble`, `select`, `report`,
`calibrate`, `operating-points`, `subgroups` and `card` read it unchanged: config.json
(kind "gbdt", scheme mb), folds.csv, fold<k>/oof.csv, fold<k>/lightgbm.txt (LightGBM's own text
format: nothing is unpickled), test_probs.csv, test_probs_by_fold.csv, submission.csv, plus
feature_importance.csv and log.txt; claimed and checked by rundir as an image run is.

Stacking: the image run's score of a train row is its out-of-fold score, from the fold model
that did not train on it; its test scores are the fold-averaged ones `melanoma predict` wrote.
The image run must use the same folds, or a row's image score would come from a model that saw
the rows the tree model is validated on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma import rundir
from melanoma.data.checks import DataError
from melanoma.data.folder import DataFolder
from melanoma.data.folds import fold_rows, load_folds, patient_folds
from melanoma.data.formats import META_2024
from melanoma.data.ingest import ingest, input_paths
from melanoma.data.isic2024 import find_isic2024, metadata
from melanoma.evaluation.predict import predict_rows, to_submission, write_submission
from melanoma.fileio import atomic_write, check_output, write_csv
from melanoma.metrics import melanoma_auc, partial_auc, top_k_sensitivity
from melanoma.run import Run
from melanoma.tabular.features import build_features, check_features
from melanoma.targets import class_names

FOLDINGS = ("patient", "centre")
SCHEME = "mb"


@dataclass
class GbdtConfig:
    """Settings of a tabular run (saved in config.json with kind "gbdt")."""

    out: str = "runs/gbdt"
    fold_method: str = "patient"  # patient (grouped, stratified by target) or centre (one fold per centre)
    k_folds: int = 5
    seed: int = 0
    image_run: str | None = None
    features: list[str] = field(default_factory=list)  # extra shared columns, e.g. attribution
    drop_features: list[str] = field(default_factory=list)
    patient_stats: bool = True
    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    subsample: float = 0.8
    colsample_bytree: float = 0.6
    reg_lambda: float = 1.0

    def __post_init__(self) -> None:
        if self.fold_method not in FOLDINGS:
            raise ValueError(f"fold_method must be one of {', '.join(FOLDINGS)}, got {self.fold_method!r}")
        if self.k_folds < 2:
            raise ValueError(f"k_folds must be at least 2, got {self.k_folds}")
        if self.n_estimators < 1 or not 0 < self.learning_rate <= 1:
            raise ValueError("n_estimators must be at least 1 and learning_rate in (0, 1]")
        check_features(self.features + self.drop_features)


def assign_folds(table: pd.DataFrame, data: Path, cfg: GbdtConfig) -> pd.Series:
    """A fold per row of the ingest table (-1 for test rows)."""
    train = table.split == "train"
    if cfg.fold_method == "centre":
        centres = sorted(table.attribution[train].astype(str).unique())
        if len(centres) < 2:
            raise DataError(
                f"{data}: --fold-method centre needs at least two centres (attribution), found {centres}"
            )
        index = {c: i for i, c in enumerate(centres)}
        return table.attribution.astype(str).map(index).where(train, -1).astype("int64")
    saved = DataFolder(data).folds
    if saved.is_file():
        return load_folds(table, saved)
    return patient_folds(table, cfg.k_folds, cfg.seed)


def image_scores(image_run: Path, rows: pd.DataFrame) -> pd.Series:
    """The image run's malignant score per row: out of fold for train rows, fold-averaged for
    test rows; the run's folds must be these rows' folds."""
    image = Run(image_run)
    image_run = image.path
    if image.scheme != SCHEME:
        raise ValueError(
            f"{image_run}: an image run on ISIC 2024 (scheme mb) is needed, this one has {image.scheme}"
        )
    column = class_names(SCHEME)[1]
    oof = image.latest_oof().set_index("image_name")
    train = rows[rows.split == "train"]
    missing = train.image_name[~train.image_name.isin(oof.index)]
    if len(missing):
        raise ValueError(
            f"{image_run}: no out-of-fold score for {len(missing)} train row(s), e.g. {', '.join(missing.head(3))}; "
            "train every fold of the image run on this data"
        )
    differ = train[oof.fold.reindex(train.image_name).to_numpy() != train.fold.to_numpy()]
    if len(differ):
        raise ValueError(
            f"{image_run}: its folds differ from these for {len(differ)} row(s) (e.g. {differ.image_name.iloc[0]}); "
            "stack on an image run trained with the same folds (DATA/folds.csv, or the same --folds)"
        )
    test = rows[rows.split == "test"]
    probs_path, saved = image_run / rundir.TEST_PROBS, image.test_probs()
    if len(test) and saved is None:
        raise FileNotFoundError(
            f"{probs_path}: not found; run `melanoma predict {image_run} --data DATA` first"
        )
    scores = pd.Series(np.nan, index=rows.index)
    scores[train.index] = oof[column].reindex(train.image_name).to_numpy()
    if len(test):
        probs = saved.set_index("image_name")[column]
        lacking = test.image_name[~test.image_name.isin(probs.index)]
        if len(lacking):
            raise ValueError(
                f"{probs_path}: no score for {len(lacking)} test row(s); predict again on this data"
            )
        scores[test.index] = probs.reindex(test.image_name).to_numpy()
    return scores


def _model(cfg: GbdtConfig, positives: int, negatives: int):  # noqa: ANN202 (LightGBM's class)
    import lightgbm as lgb

    return lgb.LGBMClassifier(
        n_estimators=cfg.n_estimators,
        learning_rate=cfg.learning_rate,
        num_leaves=cfg.num_leaves,
        min_child_samples=cfg.min_child_samples,
        subsample=cfg.subsample,
        subsample_freq=1,
        colsample_bytree=cfg.colsample_bytree,
        reg_lambda=cfg.reg_lambda,
        scale_pos_weight=min(50.0, negatives / max(positives, 1)),  # the rare class weighed up, at most 50x
        random_state=cfg.seed,
        n_jobs=0,  # LightGBM's default: OpenMP's thread count
        verbose=-1,
        deterministic=True,
        force_row_wise=True,
    )


def _versions() -> dict:
    import platform

    import lightgbm

    from melanoma import __version__

    return {"melanoma": __version__, "lightgbm": lightgbm.__version__, "python": platform.python_version()}


def _check_labels(folder: Path, train: pd.DataFrame, folds: list[int]) -> None:
    """Every fold's training part needs both classes, or its trees learn a constant."""
    path = Path(folder) / META_2024["train"]
    malignant = train[(train.fold >= 0) & (train.target == 1)]
    if len(train) and malignant.empty:
        raise DataError(
            f"{path}: no malignant row (target 1) among {len(train)}; the trees would learn nothing"
        )
    if len(train) and (train.target == 0).sum() == 0:
        raise DataError(f"{path}: every row is malignant (target 1); a model needs benign rows too")
    alone = [k for k in folds if malignant.fold.ne(k).sum() == 0]
    if alone:
        raise DataError(
            f"{path}: every malignant row is in fold {alone[0]}, so the trees trained for it see none; "
            "more malignant rows (or fewer folds, --k-folds) are needed"
        )


def _fit_folds(
    run: Path, cfg: GbdtConfig, table: pd.DataFrame, features: pd.DataFrame, folds: list[int]
) -> tuple[list[pd.DataFrame], list[pd.Series]]:
    """One LightGBM per fold: its booster (atomically), its out-of-fold scores and a log line;
    returns each fold's test scores and feature gains."""
    test = table.split != "train"
    y, classes = table.target.to_numpy(), class_names(SCHEME)
    test_by_fold, importance = [], []
    for k in folds:
        fit, val = fold_rows(table, k)
        model = _model(cfg, int(y[fit].sum()), int((y[fit] == 0).sum()))
        model.fit(features.iloc[fit], y[fit])
        booster = rundir.fold_dir(run, k) / rundir.TREE_MODEL
        atomic_write(booster, lambda tmp, m=model: m.booster_.save_model(str(tmp)), durable=True)
        p_val = model.predict_proba(features.iloc[val])[:, 1]
        rundir.write_oof(
            run, k, table.iloc[val], np.column_stack([1 - p_val, p_val]), SCHEME
        )  # last: the fold is done
        if test.any():
            p_test = model.predict_proba(features[test.to_numpy()])[:, 1]
            frame = pd.DataFrame({"image_name": table.image_name[test].to_numpy(), "fold": k})
            frame[classes] = np.column_stack([1 - p_test, p_test])
            test_by_fold.append(frame)
        gain = model.booster_.feature_importance("gain")
        importance.append(pd.Series(gain, index=features.columns, name=k))
        line = f"fold {k}: {len(fit)} train / {len(val)} validation rows, {int(y[val].sum())} malignant"
        if 0 < y[val].sum() < len(val):
            line += (
                f"; AUC {melanoma_auc(p_val, y[val] == 1):.4f}, pAUC {partial_auc(p_val, y[val] == 1):.4f}"
            )
        rundir.log(run, line)
    return test_by_fold, importance


def score_rows(
    run: Path, data: Path, rows: pd.DataFrame, tta: bool = True, progress: bool = True
) -> np.ndarray:
    """Malignant probabilities of `rows` (ingested from the ISIC 2024 folder `data`, which the run
    did not train on) from each fold's booster, shape (folds, rows): the features built on that
    folder's metadata as training built them (per-patient ones within it), and, for a run stacked on
    an image run, that run's fold-averaged score of each crop."""
    import lightgbm

    opened = Run(run)
    saved = opened.config
    cfg = GbdtConfig(**{k: v for k, v in saved["gbdt"].items() if k in GbdtConfig.__dataclass_fields__})
    folder = find_isic2024(Path(data))
    if folder is None:
        raise DataError(
            f"{data}: no ISIC 2024 data (train-metadata.csv) here; a tree run scores ISIC 2024 folders"
        )
    meta = metadata(folder).set_index("isic_id").loc[rows.image_name].reset_index()
    features = build_features(meta, cfg.features, cfg.drop_features, cfg.patient_stats)
    if cfg.image_run:
        image = Run(Path(cfg.image_run))
        per_fold = predict_rows(image.path, rows, None, image.trained_folds("best"), "best", tta, progress)
        features["image_score"] = per_fold.mean(0)[:, 1]
    missing = [c for c in saved["features"] if c not in features.columns]
    if missing:
        raise DataError(
            f"{data}: the run's features {', '.join(missing[:5])} cannot be built from this folder"
        )
    features = features[saved["features"]]
    boosters = [
        lightgbm.Booster(model_file=str(rundir.fold_dir(run, k) / rundir.TREE_MODEL)) for k in saved["folds"]
    ]
    return np.stack([b.predict(features) for b in boosters])


def train_gbdt(data: Path, cfg: GbdtConfig, progress: bool = True) -> dict:
    """Fit one LightGBM per fold, save everything into cfg.out, and return the out-of-fold summary."""
    data, run = Path(data), Path(cfg.out)
    folder = find_isic2024(data)
    if folder is None:
        raise DataError(
            f"{data}: no ISIC 2024 data (train-metadata.csv) here; `melanoma gbdt` is for ISIC 2024"
        )
    table = ingest(data, verify="none", progress=progress)
    meta = metadata(folder).set_index("isic_id").loc[table.image_name].reset_index()
    table["fold"] = assign_folds(table, data, cfg)
    train = table.split == "train"
    folds = sorted(table.fold[train & (table.fold >= 0)].unique().tolist())  # -1: left out (duplicates)
    _check_labels(folder, table[train], folds)
    features = build_features(meta, cfg.features, cfg.drop_features, cfg.patient_stats)
    if cfg.image_run:
        features["image_score"] = image_scores(Path(cfg.image_run), table).to_numpy()
    classes = class_names(SCHEME)
    config = {
        "kind": "gbdt",
        "backbone": "lightgbm",
        "scheme": SCHEME,
        "k_folds": len(folds),
        "folds": folds,
        "seed": cfg.seed,
        "external": False,
        "gbdt": {k: v for k, v in asdict(cfg).items() if k != "out"},  # the run may move
        "features": features.columns.tolist(),
        "data_identity": rundir.data_identity(table[train][["image_name", "target", "fold"]]),
        "data_folder": str(data),
        "versions": _versions(),
    }
    check_output(run, folder=True, inputs=input_paths(data, table))
    rundir.refuse_foreign(run)  # a folder of files no run made
    rundir.check(run, config, folds, resume=False)  # another run, other settings or data
    with rundir.fold_locks(run, folds):  # a second gbdt into this folder is refused while this one runs
        with rundir.lock(run):
            rundir.claim(run, config, folds, False, table[train])
        rundir.log(
            run, f"gbdt: {len(folds)} fold(s) of {int(train.sum())} rows, {len(features.columns)} features"
        )
        test_by_fold, importance = _fit_folds(run, cfg, table, features, folds)
        imp = pd.concat(importance, axis=1).mean(axis=1).sort_values(ascending=False)
        write_csv(imp.rename("gain").rename_axis("feature").reset_index(), run / "feature_importance.csv")
        test = table.split != "train"
        if test_by_fold:
            by_fold = pd.concat(test_by_fold, ignore_index=True)
            probs = by_fold.groupby("image_name", sort=False)[classes].mean().reset_index()
            rundir.save_test_probs(run, probs, by_fold)
            write_submission(to_submission(probs, run), table.image_name[test], run / rundir.SUBMISSION)
    oof = Run(run).oof()
    positive = oof.target.to_numpy() == 1
    patients = table.set_index("image_name").patient_id.loc[oof.image_name].to_numpy()
    return {
        "run": str(run),
        "rows": len(oof),
        "malignant": int(positive.sum()),
        "auc": melanoma_auc(oof[classes[1]].to_numpy(), positive),
        "pauc": partial_auc(oof[classes[1]].to_numpy(), positive),
        "top15": top_k_sensitivity(oof[classes[1]].to_numpy(), positive, patients),
        "top_features": imp.head(10).index.tolist(),
    }
