"""`melanoma gbdt`: gradient-boosted trees on ISIC 2024's tabular columns, engineered features and,
optionally, image runs' out-of-fold scores (stacking), as the 2024 top teams did.

Models (--models): LightGBM, XGBoost and CatBoost (tabular/boosters.py), each bagged over --bags
seeds on its own over- and under-sample of the training fold and stopped early on patients held
out inside it (tabular/bagging.py), then blended (tabular/blend.py: mean, rank, or weights fitted
on the other folds' out-of-fold scores).

Folds (--fold-method): `patient`, grouped by patient and stratified by target (DATA/folds.csv
when `melanoma folds` wrote one, else the same triple-stratified split made here), or `centre`:
each centre (attribution) is one fold, so every score comes from a model that never saw that
centre.

The run directory looks like an image run's, so `evaluate`, `ensemble`, `select`, `report`,
`calibrate`, `operating-points`, `subgroups`, `validate` and `card` read it unchanged:
config.json (kind "gbdt", scheme mb, the features and their categories), folds.csv,
fold<k>/oof.csv (the blend; written last), fold<k>/<library>[_<bag>].txt|json (each library's own
text or JSON format: nothing is unpickled), oof_by_model.csv, blend_weights.csv, test_probs.csv,
test_probs_by_fold.csv, submission.csv (isic_id,target), feature_importance.csv and log.txt;
claimed and checked by rundir as an image run is.

Stacking: an image run's score of a train row is its out-of-fold score, from the fold model
that did not train on it; its test scores are the fold-averaged ones `melanoma predict` wrote.
Each image run must use the same folds, or a row's image score would come from a model that saw
the rows the tree model is validated on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma import rundir
from melanoma.card import tree_model_words
from melanoma.data.checks import DataError
from melanoma.data.folder import DataFolder
from melanoma.data.folds import fold_rows, load_folds, patient_folds
from melanoma.data.formats import META_2024
from melanoma.data.ingest import ingest, input_paths
from melanoma.data.isic2024 import find_isic2024, metadata
from melanoma.evaluation.predict import predict_rows, submission_header, to_submission, write_submission
from melanoma.fileio import atomic_write, check_output, write_csv
from melanoma.metrics import melanoma_auc, partial_auc, top_k_sensitivity
from melanoma.run import BLEND_WEIGHTS, OOF_BY_MODEL, TUNING, Run
from melanoma.tabular import bagging, blend, boosters
from melanoma.tabular.blend import BLENDS
from melanoma.tabular.features import build_features, check_features, image_context, kept_groups
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
    image_run: list[str] = field(default_factory=list)  # image runs stacked on (a lone path: one)
    features: list[str] = field(default_factory=list)  # extra shared columns, e.g. attribution
    drop_features: list[str] = field(default_factory=list)  # columns, and groups as group:NAME
    patient_stats: bool = True
    models: list[str] = field(default_factory=lambda: ["lightgbm"])  # lightgbm, xgboost, catboost
    params: str = "default"  # boosters.PRESETS
    bags: int = 1  # seeds per library, each on its own sample
    pos_rate: float = 0.0  # positives oversampled to this share of the negatives (0: not)
    neg_rate: float = 0.0  # then negatives undersampled to positives / this (0: not)
    early_stopping: int = 0  # rounds without a better inner log loss (0: every round)
    stop_share: float = 0.15  # the training fold's patients held out to stop on
    blend: str = "mean"  # blend.BLENDS
    drop_indeterminate: bool = False  # leave iddx_1 "Indeterminate" rows out of fitting
    tune: int = 0  # Optuna trials per library and fold, nested in the training fold (tuning.py)
    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    subsample: float = 0.8
    colsample_bytree: float = 0.6
    reg_lambda: float = 1.0

    def __post_init__(self) -> None:
        self.image_run = [self.image_run] if isinstance(self.image_run, str) else list(self.image_run or [])
        checks = [
            (self.fold_method in FOLDINGS, f"fold_method must be one of {', '.join(FOLDINGS)}, got {self.fold_method!r}"),
            (self.k_folds >= 2, f"k_folds must be at least 2, got {self.k_folds}"),
            (self.n_estimators >= 1 and 0 < self.learning_rate <= 1,
             "n_estimators must be at least 1 and learning_rate in (0, 1]"),
            (self.params in boosters.PRESETS, f"params must be one of {', '.join(boosters.PRESETS)}, got {self.params!r}"),
            (self.bags >= 1, f"bags must be at least 1, got {self.bags}"),
            (self.tune >= 0, f"tune must be at least 0 (trials), got {self.tune}"),
            (0 <= self.pos_rate < 1 and 0 <= self.neg_rate <= 1, "pos_rate must lie in [0, 1) and neg_rate in [0, 1]"),
            (self.early_stopping >= 0 and 0 < self.stop_share < 0.5,
             "early_stopping must be at least 0 and stop_share in (0, 0.5)"),
            (self.blend in BLENDS, f"blend must be one of {', '.join(BLENDS)}, got {self.blend!r}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        boosters.check_models(self.models)
        grouped = [c for c in self.features if c.startswith("group:")]
        if grouped:
            raise ValueError(f"{grouped[0]}: every group is on by default; --features adds columns, "
                             "--drop-features group:NAME switches a group off")  # fmt: skip
        check_features(self.features + self.drop_features)

    def describe(self) -> str:
        """The model in words: "LightGBM", "LightGBM + XGBoost + CatBoost, 3 bags each, mean blend"."""
        return tree_model_words(asdict(self))


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


def _versions(models: list[str]) -> dict:
    import platform

    from melanoma import __version__

    return {"melanoma": __version__, **boosters.versions(models), "python": platform.python_version()}


def image_names(count: int) -> list[str]:
    """The features of stacked image runs' scores: image_score, image2_score, ..."""
    return ["image_score" if i == 0 else f"image{i + 1}_score" for i in range(count)]


def indeterminate(meta: pd.DataFrame) -> np.ndarray:
    """Rows whose first diagnosis level is "Indeterminate" (benign, but not surely): the rows
    --drop-indeterminate leaves out of fitting (never out of scoring)."""
    if "iddx_1" not in meta:
        return np.zeros(len(meta), dtype=bool)
    return meta.iddx_1.astype("string").str.lower().eq("indeterminate").fillna(False).to_numpy()


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


def _save_fold(run: Path, k: int, fold: bagging.FoldModels) -> None:
    """Each bag's model into fold<k>/, in its library's own format, atomically."""
    for library, bag, model in fold.models:
        path = rundir.fold_dir(run, k) / boosters.booster_file(library, bag)
        atomic_write(path, lambda tmp, lib=library, m=model: boosters.save(lib, m, tmp), durable=True)


def _log_fold(run: Path, k: int, fit: np.ndarray, y_val: np.ndarray, scores: dict[str, np.ndarray]) -> None:
    line = f"fold {k}: {len(fit)} train / {len(y_val)} validation rows, {int(y_val.sum())} malignant"
    if 0 < y_val.sum() < len(y_val):
        for library, p in scores.items():
            line += (
                f"; {library} AUC {melanoma_auc(p, y_val == 1):.4f}, pAUC {partial_auc(p, y_val == 1):.4f}"
            )
    rundir.log(run, line)


def _write_fold(
    run: Path, cfg: GbdtConfig, table: pd.DataFrame, k: int, scored: tuple, weights: dict[str, float]
) -> pd.DataFrame | None:
    """Fold k's blended out-of-fold scores (oof.csv: the fold is done); returns its blended test
    scores (None without test rows)."""
    val, fold = scored
    p = blend.combine(fold.val, weights, cfg.blend)
    rundir.write_oof(run, k, table.iloc[val], np.column_stack([1 - p, p]), SCHEME)
    test = table.split != "train"
    if not test.any():
        return None
    p_test = blend.combine(fold.test, weights, cfg.blend)
    frame = pd.DataFrame({"image_name": table.image_name[test].to_numpy(), "fold": k})
    frame[class_names(SCHEME)] = np.column_stack([1 - p_test, p_test])
    return frame


def _fit_folds(
    run: Path,
    cfg: GbdtConfig,
    table: pd.DataFrame,
    features: pd.DataFrame,
    folds: list[int],
    unsure: np.ndarray,
) -> tuple[dict[int, tuple], dict[int, pd.DataFrame | None]]:
    """Every fold's bags of every library, saved as they are fitted; a blend that needs no other
    fold (mean, rank) writes the fold's oof.csv at once, so a run stopped mid-way keeps its
    finished folds. Returns per fold its validation positions and what its bags scored, and the
    test scores of the folds written."""
    test = np.flatnonzero((table.split != "train").to_numpy())
    y = table.target.fillna(0).to_numpy().astype("int64")
    patients = table.patient_id.astype(str).to_numpy()
    categories = boosters.categories_of(features)
    x = boosters.coded(features, categories)
    settings = asdict(cfg)
    fitted, written = {}, {}
    for k in folds:
        fit, val = fold_rows(table, k)
        fit = fit[~unsure[fit]]
        fold = bagging.fit_fold(settings, x, y, patients, (fit, val, test), categories)
        _save_fold(run, k, fold)
        _log_fold(run, k, fit, y[val], fold.val)
        for library, (_, value) in fold.tuned.items():
            rundir.log(run, f"fold {k}: {library} tuned over {cfg.tune} trials, inner pAUC {value:.4f}")
        fitted[k] = (val, fold)
        if cfg.blend != "fitted":
            written[k] = _write_fold(run, cfg, table, k, fitted[k], dict.fromkeys(cfg.models, 1.0))
    return fitted, written


def _blend_folds(
    run: Path, cfg: GbdtConfig, table: pd.DataFrame, fitted: dict[int, tuple], written: dict
) -> list[pd.DataFrame]:
    """Write each library's out-of-fold scores and each fold's blend weights (for `fitted`,
    fitted on the other folds, then the folds' oof.csv); returns each fold's blended test scores."""
    y = table.target.to_numpy()
    by_model = pd.concat(
        [table.iloc[val][["image_name"]].assign(fold=k, target=y[val], **f.val) for k, (val, f) in fitted.items()],
        ignore_index=True,
    )  # fmt: skip
    weights = blend.fold_weights(by_model, cfg.models, list(fitted), cfg.blend)
    write_csv(by_model, run / OOF_BY_MODEL)
    tuned = [{"fold": k, "model": m, "inner_pauc": v, "params": json.dumps(p, sort_keys=True)}
             for k, (_, f) in fitted.items() for m, (p, v) in f.tuned.items()]  # fmt: skip
    if tuned:
        write_csv(pd.DataFrame(tuned), run / TUNING)
    rows = [{"fold": k, "model": m, "weight": w} for k, ws in weights.items() for m, w in ws.items()]
    write_csv(pd.DataFrame(rows), run / BLEND_WEIGHTS)
    for k in fitted:
        if k not in written:
            written[k] = _write_fold(run, cfg, table, k, fitted[k], weights[k])
    return [frame for frame in written.values() if frame is not None]


def table_features(meta: pd.DataFrame, cfg: GbdtConfig, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """The run's features of these metadata rows: the tables' groups, then the stacked image
    models' scores in context."""
    features = build_features(meta, cfg.features, cfg.drop_features, cfg.patient_stats)
    if scores:
        context = image_context(meta, scores, kept_groups(cfg.drop_features, cfg.patient_stats))
        features = pd.concat([features, context.set_axis(features.index)], axis=1)
    return features


def _fold_scores(run: Path, cfg: GbdtConfig, k: int, features: pd.DataFrame, categories: dict) -> dict:
    """Each library's bag-averaged probabilities of the rows, from fold k's saved files."""
    out = {}
    for library in cfg.models:
        total = np.zeros(len(features))
        for bag in range(cfg.bags):
            model = boosters.load(library, rundir.fold_dir(run, k) / boosters.booster_file(library, bag))
            total += boosters.predict(library, model, features, categories)
        out[library] = total / cfg.bags
    return out


def score_rows(
    run: Path, data: Path, rows: pd.DataFrame, tta: bool = True, progress: bool = True
) -> np.ndarray:
    """Malignant probabilities of `rows` (ingested from the ISIC 2024 folder `data`, which the run
    did not train on) from each fold's boosters, shape (folds, rows): the features built on that
    folder's metadata as training built them (per-patient ones within it), each stacked image
    run's fold-averaged score of each crop, each fold's libraries blended with its own weights."""
    opened = Run(run)
    saved = opened.config
    cfg = GbdtConfig(**{k: v for k, v in saved["gbdt"].items() if k in GbdtConfig.__dataclass_fields__})
    folder = find_isic2024(Path(data))
    if folder is None:
        raise DataError(
            f"{data}: no ISIC 2024 data (train-metadata.csv) here; a tree run scores ISIC 2024 folders"
        )
    meta = metadata(folder).set_index("isic_id").loc[rows.image_name].reset_index()
    scores = {}
    for name, path in zip(image_names(len(cfg.image_run)), cfg.image_run, strict=True):
        image = Run(Path(path))
        per_fold = predict_rows(image.path, rows, None, image.trained_folds("best"), "best", tta, progress)
        scores[name] = per_fold.mean(0)[:, 1]
    features = table_features(meta, cfg, scores)
    missing = [c for c in saved["features"] if c not in features.columns]
    if missing:
        raise DataError(
            f"{data}: the run's features {', '.join(missing[:5])} cannot be built from this folder"
        )
    categories = saved.get("categories", boosters.categories_of(features[saved["features"]]))
    features = boosters.coded(features[saved["features"]], categories)
    weights = opened.blend_weights() or {}
    out = []
    for k in saved["folds"]:
        by_model = _fold_scores(Path(run), cfg, k, features, categories)
        out.append(blend.combine(by_model, weights.get(k, dict.fromkeys(cfg.models, 1.0)), cfg.blend))
    return np.stack(out)


def _stacked_scores(cfg: GbdtConfig, table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each stacked image run's score of every row (out of fold for train rows)."""
    names = image_names(len(cfg.image_run))
    return {n: image_scores(Path(r), table).to_numpy() for n, r in zip(names, cfg.image_run, strict=True)}


def _run_config(
    cfg: GbdtConfig, table: pd.DataFrame, features: pd.DataFrame, folds: list[int], data: Path
) -> dict:
    train = table.split == "train"
    return {
        "kind": "gbdt",
        "backbone": "+".join(cfg.models),
        "scheme": SCHEME,
        "k_folds": len(folds),
        "folds": folds,
        "seed": cfg.seed,
        "external": False,
        "gbdt": {k: v for k, v in asdict(cfg).items() if k != "out"},  # the run may move
        "features": features.columns.tolist(),
        "categories": boosters.categories_of(features),
        "data_identity": rundir.data_identity(table[train][["image_name", "target", "fold"]]),
        "data_folder": str(data),
        "versions": _versions(cfg.models),
    }


def train_gbdt(data: Path, cfg: GbdtConfig, progress: bool = True) -> dict:
    """Fit every fold's boosters, blend them, save everything into cfg.out, and return the
    out-of-fold summary."""
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
    features = table_features(meta, cfg, _stacked_scores(cfg, table))
    config = _run_config(cfg, table, features, folds, data)
    check_output(run, folder=True, inputs=input_paths(data, table))
    rundir.refuse_foreign(run)  # a folder of files no run made
    rundir.check(run, config, folds, resume=False)  # another run, other settings or data
    unsure = indeterminate(meta) & train.to_numpy() if cfg.drop_indeterminate else np.zeros(len(table), bool)
    with rundir.fold_locks(run, folds):  # a second gbdt into this folder is refused while this one runs
        with rundir.lock(run):
            rundir.claim(run, config, folds, False, table[train])
        rundir.log(
            run, f"gbdt: {cfg.describe()}; {len(folds)} fold(s) of {int(train.sum())} rows, "
            f"{len(features.columns)} features"
            + (f"; {int(unsure.sum())} Indeterminate row(s) left out of fitting" if cfg.drop_indeterminate else ""),
        )  # fmt: skip
        fitted, written = _fit_folds(run, cfg, table, features, folds, unsure)
        test_by_fold = _blend_folds(run, cfg, table, fitted, written)
        imp = pd.concat([f.importance.rename(k) for k, (_, f) in fitted.items()], axis=1).mean(axis=1)
        imp = imp.sort_values(ascending=False)
        write_csv(imp.rename("gain").rename_axis("feature").reset_index(), run / "feature_importance.csv")
        test = table.split != "train"
        if test_by_fold:
            classes = class_names(SCHEME)
            by_fold = pd.concat(test_by_fold, ignore_index=True)
            probs = by_fold.groupby("image_name", sort=False)[classes].mean().reset_index()
            rundir.save_test_probs(run, probs, by_fold)
            sub = to_submission(probs, run)
            write_submission(sub, table.image_name[test], run / rundir.SUBMISSION, submission_header(table))
    return _summary(run, table, imp)


def _summary(run: Path, table: pd.DataFrame, imp: pd.Series) -> dict:
    """The out-of-fold figures `melanoma gbdt` prints."""
    oof = Run(run).oof()
    classes = class_names(SCHEME)
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
