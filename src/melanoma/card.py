"""A model card for a run (RUN/MODEL_CARD.md), in the layout Hugging Face model cards use.

Every figure comes from the run directory (config.json, folds.csv, the out-of-fold files and the
results of evaluate, calibrate, operating-points, subgroups and explain) or, with the data folder,
from the data itself; what has not been computed is said to be missing, with the command that
computes it. Nothing is estimated or filled in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from melanoma import __version__, rundir
from melanoma.data.formats import ATTRIBUTION_ARCHIVE, LICENSES_ARCHIVE
from melanoma.fileio import atomic_write
from melanoma.results import (
    MISSING,
    Calibration,
    Evaluation,
    Gallery,
    OperatingPoints,
    Subgroups,
    make_command,
)
from melanoma.run import Run
from melanoma.targets import class_names, melanoma_index, positive_words, source_names

CITATIONS = """\
- This toolkit: melanoma (version {version}), a rebuild of the SIIM-ISIC 2020 winning solution.
- The winning solution: Q. Ha, B. Liu, F. Liu. Identifying Melanoma Images using EfficientNet
  Ensemble: Winning Solution to the SIIM-ISIC Melanoma Classification Challenge. arXiv:2010.05351, 2020.
- ISIC 2020 data: V. Rotemberg et al. A patient-centric dataset of images and metadata for
  identifying melanomas using clinical context. Scientific Data 8, 34 (2021).
- ISIC 2019 data: P. Tschandl et al., The HAM10000 dataset (Scientific Data 5, 180161, 2018);
  N. Codella et al., ISIC 2017 challenge (ISBI 2018); M. Combalia et al., BCN20000 (arXiv:1908.02288, 2019).
"""
CITATIONS_2024 = """- This toolkit: melanoma (version {version}); its ISIC 2024 part follows the challenge's top teams.
- ISIC 2024 data (SLICE-3D): the dataset paper, Scientific Data (2024), doi 10.1038/s41597-024-03743-w;
  the Kaggle competition "ISIC 2024 - Skin Cancer Detection with 3D-TBP".
"""


def _md_table(frame: pd.DataFrame, digits: int = 4) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "-" if pd.isna(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _missing(kind: type, run: Run) -> str:
    return f"{MISSING}: run `{make_command(kind, run.path)}`, then `melanoma card` again."


def _training_data(run: Run, data: Path | None) -> list[str]:
    scheme = run.scheme
    names = class_names(scheme)
    oof, folds = run.latest_oof(), run.folds
    lines = [
        f"Trained and evaluated on {run.describe_data()}: {int((folds >= 0).sum())} labelled images in "
        f"{run.config.get('k_folds')} folds ({int((folds < 0).sum())} near-duplicates left out).",
        "",
    ]
    oof = oof.assign(
        source=source_names(oof.is_ext, scheme, run.data_sources), diagnosis=[names[t] for t in oof.target]
    )
    counts = pd.crosstab(oof.source, oof.diagnosis, margins=True, margins_name="all").reset_index()
    lines += ["Out-of-fold rows by source and class:", "", _md_table(counts.rename_axis(columns=None)), ""]
    if data is not None:
        synthetic = (Path(data) / "truth" / "config.json").is_file()
        lines.append(
            f"Data folder `{data}`: "
            + ("**synthetic** (written by `melanoma synth`; not patients)." if synthetic else "ISIC layouts.")
        )
        lines += ["", *_licences(run, Path(data))]
    return lines


def _licences(run: Run, data: Path) -> list[str]:
    """For an ISIC Archive download: the out-of-fold images by licence and by attribution."""
    from melanoma.data.archive import find_archive, read_archive

    folder = find_archive(data)
    if folder is None:
        return []
    table = read_archive(folder, run.scheme, image_types=None)
    used = table[table.image_name.isin(set(run.latest_oof().image_name))]
    by_licence = used.groupby("copyright_license", dropna=False).size().rename("images").reset_index()
    by_source = (
        used.groupby(["attribution", "copyright_license"], dropna=False).size().rename("images")
        .sort_values(ascending=False).reset_index()
    )  # fmt: skip
    return [
        f"The {len(used)} images of the ISIC Archive it was validated on, by licence (the licences' texts are in "
        f"`{folder / LICENSES_ARCHIVE}`, the attributions in `{folder / ATTRIBUTION_ARCHIVE}`; share them "
        "with the model):",
        "",
        _md_table(by_licence),
        "",
        "By attribution:",
        "",
        _md_table(by_source),
        "",
    ]


def _metrics(run: Run) -> list[str]:
    results = run.evaluations()
    if not results:
        return [_missing(Evaluation, run)]
    lines = []
    for r in results:
        lines.append(f"`{Path(r.file).name}` ({r.title()}; bootstrap {r.bootstrap['resamples']} resamples, "
                     "95% intervals):")  # fmt: skip
        lines += ["", _md_table(r.table(run.scheme)), ""]
        if r.multiclass:
            lines += [f"{r.multiclass_text()} Rows: true class; columns: predicted.", "",
                      _md_table(r.confusion_table()), ""]  # fmt: skip
        if r.unfinished_folds:
            lines.append(f"Folds whose training stopped early were used: {r.unfinished_folds}.")
    return lines


def _calibration(run: Run) -> list[str]:
    fit, word = run.calibration(), positive_words(run.scheme)[0]
    if fit is None:
        return [_missing(Calibration, run)]
    return [
        f"Temperature scaling on the {word} logit: {fit.summary()}.",
        "",
        _md_table(fit.table()),
        "",
        "`melanoma predict` reports the calibrated probability. Calibration holds for data like the "
        f"out-of-fold rows (the same mix of sources and the same {word} rate).",
    ]


def _operating_points(run: Run) -> list[str]:
    ops = run.operating_points()
    if ops is None:
        return [_missing(OperatingPoints, run)]
    return [f"From {ops.summary(run.scheme)}.", "", _md_table(ops.table(run.scheme))]


def _explanations(run: Run) -> list[str]:
    if run.is_tree:  # no image to explain: what the trees used
        importance = run.feature_importance()
        if importance is None:
            return ["No feature_importance.csv in the run (written by `melanoma gbdt`)."]
        return ["Feature importances (gain, mean over the fold models), the first 15:", "",
                _md_table(importance.head(15), 1)]  # fmt: skip
    gallery = run.gallery()
    if gallery is not None:
        return [f"{gallery.summary(run.scheme)}: {len(gallery.items)} images in `{Gallery.FILE}`."]
    return [_missing(Gallery, run)]


def _validations(run: Run) -> list[str]:
    results = run.validations()
    if not results:
        return ["None yet: the figures above are all out of fold, on the population the model trained on. "
                f"`melanoma validate {run.path} --data EXTERNAL --name NAME` measures it on labelled data it did "
                "not train on (another clinic, a later year), then `melanoma card` again."]  # fmt: skip
    lines = []
    for r in results:
        groups = r.groups()
        lines += [f"{r.summary(run.scheme)}.", "", _md_table(r.table(run.scheme)), "",
                  f"Subgroups of {r.name}: {groups.summary()}.", "", _md_table(groups.table(run.scheme)), ""]  # fmt: skip
        if r.gaps:
            lines += ["Equity gaps:", "", _md_table(groups.gap_table()), ""]
    return lines


def _subgroups(run: Run) -> list[str]:
    sub, scheme = run.subgroups(), run.scheme
    if sub is None:
        return [_missing(Subgroups, run)]
    plural = positive_words(scheme)[1]
    return [
        f"Out-of-fold AUC and sensitivity per group, 95% bootstrap intervals; {sub.summary()}. Groups with "
        f"fewer than {sub.min_each} {plural} or other lesions are listed but not scored.",
        "",
        _md_table(sub.table(scheme)),
        *(["", "Equity gaps (largest minus smallest across each column's scored groups, 95% bootstrap intervals):",
           "", _md_table(sub.gap_table())] if sub.gaps else []),
    ]  # fmt: skip


_USE_DERMOSCOPY = [
    "Research on melanoma classification from dermoscopy images: ranking lesion images by their "
    "melanoma probability, measuring models, and studies in which a clinician reads the output. It "
    "is not a medical device and has no regulatory clearance.",
    "",
    "### Out-of-scope use",
    "",
    "- Diagnosis or triage without a clinician.",
    "- Images unlike the training data: clinical (non-dermoscopic) photographs, phone pictures, "
    "total-body-photo crops, other devices, non-skin images.",
]
_USE_2024 = [
    "Research on skin-cancer triage from 3D total-body photographs (ISIC 2024 / SLICE-3D): ranking a "
    "patient's lesions by their probability of malignancy from the lesion crops and the TBP system's "
    "measurements, measuring models, and studies in which a clinician reads the output. It is not a "
    "medical device and has no regulatory clearance.",
    "",
    "### Out-of-scope use",
    "",
    "- Diagnosis or triage without a clinician.",
    "- Inputs unlike the training data: dermoscopy images, phone pictures, other total-body imaging "
    "systems (the measurements are one system's own).",
]


def _image_details(cfg: dict, names: list[str], scheme: str) -> list[str]:
    meta = cfg.get("meta_columns") or []
    return [
        f"- Backbone: `{cfg.get('backbone')}` ({'ImageNet-pretrained' if cfg.get('pretrained') else 'trained from scratch'}"
        f"{', weights file ' + str(cfg['weights']) if cfg.get('weights') else ''}), input {cfg.get('image_size')} px "
        f"from images pre-resized to {cfg.get('data_size') or 'their original size'}.",
        f"- Output: {len(names)} classes ({', '.join(names)}); the score is the probability of "
        f"`{names[melanoma_index(scheme)]}`.",
        f"- Metadata branch: {'yes, ' + str(len(meta)) + ' features (' + ', '.join(meta) + ')' if cfg.get('use_meta') else 'no'}.",
        f"- Training: {cfg.get('epochs')} epochs, Adam, initial LR {cfg.get('lr')} (warm-up to 10x, then cosine), "
        f"batch {cfg.get('batch_size')}, folds {cfg.get('folds')} of {cfg.get('k_folds')}, seed {cfg.get('seed')}, "
        f"preset `{cfg.get('preset') or '-'}`.",
        "- Prediction (`melanoma predict`): the fold models' probabilities averaged, by default also over "
        "the 8 flips and rotations of each image.",
    ]


TREE_LIBRARIES = {"lightgbm": "LightGBM", "xgboost": "XGBoost", "catboost": "CatBoost"}


def tree_model_words(g: dict) -> str:
    """A tree run's model in words, from its gbdt settings: "LightGBM", or "LightGBM + XGBoost +
    CatBoost, 3 bags each, mean blend"."""
    models = g.get("models") or ["lightgbm"]
    words = " + ".join(TREE_LIBRARIES.get(m, m) for m in models)
    if (g.get("bags") or 1) > 1:
        words += f", {g['bags']} bags each"
    return words + (f", {g.get('blend', 'mean')} blend" if len(models) > 1 else "")


def _tree_details(cfg: dict) -> list[str]:
    g = cfg.get("gbdt", {})
    features = cfg.get("features") or []
    runs = g.get("image_run") or []  # a list: rundir reads an older run's lone path as one
    stacked = (
        f"; stacked on the image run(s) {', '.join(f'`{r}`' for r in runs)} (their scores are the features "
        "`image_score`, `image2_score`, ..., with their patient-relative versions)"
        if runs
        else ""
    )
    sampling = (
        f", positives oversampled to {g.get('pos_rate')} and negatives under to {g.get('neg_rate')} of the other class"
        if g.get("pos_rate") or g.get("neg_rate")
        else ""
    )
    stopping = (
        f", early stopping after {g['early_stopping']} rounds on held-out patients"
        if g.get("early_stopping")
        else ""
    )
    return [
        f"- Model: {tree_model_words(g)} (gradient-boosted trees, `melanoma gbdt`) per fold, on {len(features)} features "
        f"of the ISIC 2024 metadata: the TBP measurements, ratios, per-patient and neighbourhood z-scores, min-max, "
        f"ranks, counts, outlier scores, per-centre normalisation{stacked}.",
        "- Output: the probability that a lesion is malignant"
        + (" (a rank, with the rank blend)." if g.get("blend") == "rank" else "."),
        f"- Training: at most {g.get('n_estimators')} rounds per model, parameters "
        + (
            f"tuned by Optuna ({g['tune']} trials per library and fold, in the training fold)"
            if g.get("tune")
            else f"`{g.get('params', 'default')}`"
        )
        + f"{sampling}{stopping}, folds by {g.get('fold_method')} ({cfg.get('k_folds')}), seed {cfg.get('seed')}; "
        "features used: `config.json`, their importance: `feature_importance.csv`.",
        "- Prediction: the fold models' blended scores averaged.",
    ]


def model_card(run: Path, data: Path | None = None) -> str:
    """The card's Markdown for a trained run."""
    run = Run(run)
    cfg, scheme, tree = run.config, run.scheme, run.is_tree
    names = class_names(scheme)
    word = positive_words(scheme)[0]
    if tree:
        front = {"library_name": "melanoma", "tags": ["tabular-classification", "dermatology", "isic-2024", *(cfg.get("gbdt", {}).get("models") or ["lightgbm"])],
                 "pipeline_tag": "tabular-classification"}  # fmt: skip
    else:
        front = {"library_name": "melanoma", "tags": ["image-classification", "dermatology", "melanoma", "timm"],
                 "pipeline_tag": "image-classification"}  # fmt: skip
    lines = [
        "---",
        *[f"{k}: {json.dumps(v)}" for k, v in front.items()],
        "---",
        "",
        f"# Model card: {run.name}",
        "",
        "## Model details",
        "",
        *(_tree_details(cfg) if tree else _image_details(cfg, names, scheme)),
        f"- Software: melanoma {cfg.get('versions', {}).get('melanoma', '?')} "
        f"(card written by {__version__}); the full configuration is `config.json` in the run.",
        "",
        "## Intended use",
        "",
        *(_USE_2024 if scheme == "mb" else _USE_DERMOSCOPY),
        "- Patients or lesions the training data does not represent (see Limitations).",
        "",
        "## Training data",
        "",
        *_training_data(run, data),
        "## Evaluation data and folds",
        "",
        f"Out-of-fold: each image is scored by the fold model that did not train on it ({cfg.get('k_folds')} "
        f"folds, `{cfg.get('fold_method') or cfg.get('gbdt', {}).get('fold_method')}` method; each patient stays in one fold). "
        f"Figures below use `{run.latest_oof_name}`. No separate test set with labels is part of the run.",
        "",
        "## Metrics",
        "",
        *_metrics(run),
        "",
        "## Calibration",
        "",
        *_calibration(run),
        "",
        "## Operating points",
        "",
        *_operating_points(run),
        "",
        "## Subgroups",
        "",
        *_subgroups(run),
        "",
        "## External validation",
        "",
        *_validations(run),
        "",
        "## Explanations" if not tree else "## What the model uses",
        "",
        *_explanations(run),
        "",
        "## Limitations",
        "",
        "- The ISIC metadata records sex, approximate age and anatomic site only: ethnicity and the imaging "
        "device are not recorded, and skin tone only as estimated from the pixels (ITA, which a device's "
        "colour moves), so performance across them is measured approximately at best.",
        "- Out-of-fold figures come from the same sources as the training data; performance on other "
        "centres, devices or populations is known only where measured (External validation).",
        f"- Predictive values and calibration depend on the {word} rate of the population scored.",
        "",
        "## How to cite",
        "",
        (CITATIONS_2024 if scheme == "mb" else CITATIONS).format(version=__version__),
    ]
    return "\n".join(lines)


def write_card(run: Path, data: Path | None = None) -> Path:
    """RUN/MODEL_CARD.md."""
    text = model_card(run, data)
    return atomic_write(Path(run) / rundir.MODEL_CARD, lambda tmp: tmp.write_text(text, encoding="utf-8"))
