"""Prediction: each fold model over 8 orientations (test-time augmentation), averaged; submissions.

Probabilities are softmax outputs averaged over the 8 dihedral orientations of each image and over
the run's fold models, as the winners did. The orientations go through the model as one batch of
8 x B images (fewer at a time if the GPU runs out of memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma import rundir
from melanoma.data.metadata import meta_features
from melanoma.evaluation.calibration import apply_temperature
from melanoma.evaluation.operating_points import threshold_for
from melanoma.fileio import write_csv
from melanoma.inputs.loader import eval_loader
from melanoma.models.inference import pick_device, predict_probs
from melanoma.progress import console
from melanoma.results import Calibration
from melanoma.run import Run
from melanoma.targets import class_names, melanoma_index


class SubmissionError(ValueError):
    """A submission that would be rejected; nothing is written."""


def meta_matrix(table: pd.DataFrame, run: Path) -> np.ndarray | None:
    """The run's metadata features for the table's rows, in the columns it was trained on
    (None for a model without metadata). Sites never seen in training are reported."""
    opened = Run(run)
    columns = opened.meta_columns
    if not opened.config.get("use_meta"):
        return None
    # n_images leaves out the near-duplicates training dropped (fold -1 in the run's folds.csv)
    folds = opened.folds if (opened.path / rundir.FOLDS).is_file() else pd.Series(dtype=int)
    dropped = set(folds.index[folds < 0])
    features = meta_features(table, ((table.split == "train") & table.image_name.isin(dropped)).to_numpy())
    unseen = [c for c in features.columns if c not in columns and features[c].any()]
    if unseen:
        console.print(
            f"[yellow]warning:[/] metadata values unseen in training, encoded as missing: {', '.join(unseen)}"
        )
        features.loc[features[unseen].any(axis=1), "site_nan"] = 1.0
    return features.reindex(columns=columns, fill_value=0.0).to_numpy(np.float32)


def predict_rows(
    run: Path,
    rows: pd.DataFrame,
    meta: np.ndarray | None,
    folds: list[int],
    checkpoint: str = "best",
    tta: bool = True,
    progress: bool = True,
    batch_size: int | None = None,
) -> np.ndarray:
    """Class probabilities of `rows` from each of the given fold models (averaged over the
    orientations with `tta`): an array of shape (folds, rows, classes)."""
    opened = Run(run)
    cfg = opened.settings
    device = pick_device(cfg.device)
    loader = eval_loader(
        cfg, rows, meta, batch_size or max(1, cfg.batch_size // (8 if tta else 1))
    )  # 8 views a pass
    probs = [
        predict_probs(
            opened.model(k, checkpoint),
            loader,
            device,
            f"predict fold {k}",
            progress,
            cfg.amp,
            cfg.channels_last,
            tta,
        )
        for k in folds
    ]
    return np.stack(probs)  # (folds, rows, classes)


@dataclass
class TestPrediction:
    """Test-set class probabilities: averaged over the folds, and each fold model's own."""

    probs: pd.DataFrame  # image_name + one column per class
    by_fold: pd.DataFrame  # image_name, fold + one column per class

    def save(self, run: Path) -> None:
        """RUN/test_probs.csv and RUN/test_probs_by_fold.csv (used by `melanoma select`)."""
        rundir.save_test_probs(run, self.probs, self.by_fold)


def predict_test(
    run: Path,
    table: pd.DataFrame,
    checkpoint: str = "best",
    tta: bool = True,
    progress: bool = True,
    allow_unfinished: bool = False,
) -> TestPrediction:
    """Class probabilities of every test row, averaged over the run's fold models and, with
    `tta`, the 8 orientations."""
    run = Path(run)
    test = table.split.to_numpy() == "test"
    if not test.any():
        raise ValueError("the table has no test rows to predict")
    meta = meta_matrix(table, run)
    rows = table[test]
    opened = Run(run)
    folds = opened.trained_folds(checkpoint, allow_unfinished)
    per_fold = predict_rows(run, rows, None if meta is None else meta[test], folds, checkpoint, tta, progress)
    names = class_names(opened.scheme)
    image_names = rows.image_name.to_numpy()
    probs = pd.DataFrame({"image_name": image_names})
    probs[names] = per_fold.mean(0)
    by_fold = pd.concat(
        [pd.DataFrame({"image_name": image_names, "fold": k}).assign(**dict(zip(names, p.T, strict=True)))
         for k, p in zip(folds, per_fold, strict=True)],
        ignore_index=True,
    )  # fmt: skip
    return TestPrediction(probs, by_fold)


def calibrated(run: Path, melanoma: np.ndarray) -> np.ndarray:
    """Melanoma probabilities through the run's temperature (RUN/calibration.json), if it has one."""
    fit = Calibration.load(run)
    return melanoma if fit is None else apply_temperature(melanoma, fit.temperature)


def to_submission(probs: pd.DataFrame, run: Path) -> pd.DataFrame:
    """image_name,target (the melanoma probability, calibrated when the run has a temperature)
    from a class-probability table."""
    scheme = Run(run).scheme
    melanoma = class_names(scheme)[melanoma_index(scheme)]
    return pd.DataFrame(
        {"image_name": probs.image_name, "target": calibrated(run, probs[melanoma].to_numpy())}
    )


def score_problems(sub: pd.DataFrame) -> list[str]:
    """What is wrong with a table of scores (image_name,target): repeated images, NaN or
    non-numeric targets, targets outside [0, 1]; empty when nothing is."""
    if list(sub.columns) != ["image_name", "target"]:
        return [f"columns must be image_name,target, got {','.join(map(str, sub.columns))}"]
    problems = []
    dup = sub.image_name[sub.image_name.duplicated()]
    if len(dup):
        problems.append(f"{len(dup)} repeated image(s), e.g. {', '.join(map(str, dup.head(3)))}")
    target = pd.to_numeric(sub.target, errors="coerce")
    if target.isna().any():  # infinite targets count as outside [0, 1] below
        problems.append(f"{int(target.isna().sum())} NaN or non-numeric target(s)")
    if ((target < 0) | (target > 1)).any():
        problems.append(f"{int(((target < 0) | (target > 1)).sum())} target(s) outside [0, 1]")
    return problems


def validate_submission(sub: pd.DataFrame, test_names: pd.Series) -> None:
    """Every test image exactly once, no NaN, scores in [0, 1]; raise SubmissionError otherwise."""
    problems = score_problems(sub)
    if problems and problems[0].startswith("columns"):
        raise SubmissionError(problems[0])
    missing = set(test_names) - set(sub.image_name)
    if missing:
        problems.append(f"{len(missing)} test image(s) missing, e.g. {', '.join(sorted(missing)[:3])}")
    extra = set(sub.image_name) - set(test_names)
    if extra:
        problems.append(f"{len(extra)} image(s) not in the test set, e.g. {', '.join(sorted(extra)[:3])}")
    if problems:
        raise SubmissionError("invalid submission: " + "; ".join(problems))


def submission_header(table: pd.DataFrame) -> str:
    """The id column a challenge's submission is read by: isic_id for ISIC 2024 (Kaggle's
    sample_submission.csv), image_name for ISIC 2020 and the rest."""
    test = table[table.split == "test"] if "split" in table else table
    return "isic_id" if len(test) and "source" in test and (test.source == "isic2024").all() else "image_name"


def write_submission(
    sub: pd.DataFrame, test_names: pd.Series, path: Path, header: str = "image_name"
) -> Path:
    """Validate, then write a submission CSV, its id column named `header` (submission_header())."""
    validate_submission(sub, test_names)
    return write_csv(sub.rename(columns={"image_name": header}), Path(path))


def flagged_path(run: Path, out: Path | None) -> Path:
    """Where predict writes the flags of an operating point: beside --out (OUT_flagged.csv) when
    given, else RUN/flagged.csv."""
    return Path(run) / rundir.FLAGGED if out is None else Path(out).with_name(f"{Path(out).stem}_flagged.csv")


def predict_submission(
    run: Path,
    table: pd.DataFrame,
    checkpoint: str = "best",
    tta: bool = True,
    out: Path | None = None,
    progress: bool = True,
    allow_unfinished: bool = False,
    operating_point: float | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Predict the test rows, write the validated submission (default RUN/submission.csv) and
    RUN/test_probs.csv, RUN/test_probs_by_fold.csv and the input checks (checks_path(): quality, the
    OOD scores and flag per test image); returns the submission and its path. With
    `operating_point` (a sensitivity), also flagged_path(): image_name, melanoma, flagged, at that
    point's threshold on this checkpoint's out-of-fold scores."""
    run = Path(run)
    pred = predict_test(run, table, checkpoint, tta, progress, allow_unfinished)
    sub = to_submission(pred.probs, run)
    if operating_point is not None:
        scheme = Run(run).scheme
        raw = pred.probs[class_names(scheme)[melanoma_index(scheme)]].to_numpy()
        flags = pd.DataFrame({"image_name": sub.image_name, "melanoma": sub.target})
        flags["flagged"] = raw >= threshold_for(run, operating_point, checkpoint)
        write_csv(flags, flagged_path(run, out))
    test_names = table.image_name[table.split == "test"]
    path = write_submission(sub, test_names, out or run / rundir.SUBMISSION, submission_header(table))
    pred.save(run)
    from melanoma.evaluation.ood import input_checks

    test = (table.split == "test").to_numpy()
    meta = meta_matrix(table, run)
    checks = input_checks(run, table[test], None if meta is None else meta[test], progress)
    write_csv(checks, checks_path(run, out))
    if checks.flag.any():
        console.print(f"[yellow]{int(checks.flag.sum())} of {len(checks)} test image(s) flagged by the input checks[/]: "
                      f"{checks_path(run, out)}")  # fmt: skip
    return sub, path


def checks_path(run: Path, out: Path | None) -> Path:
    """Where predict writes the input checks of a test set: beside --out (OUT_input_checks.csv) when
    given, else RUN/input_checks.csv."""
    return (
        Path(run) / rundir.INPUT_CHECKS
        if out is None
        else Path(out).with_name(f"{Path(out).stem}_input_checks.csv")
    )


def predict_images(
    run: Path,
    paths: list[Path],
    metadata: Path | None = None,
    checkpoint: str = "best",
    tta: bool = True,
    progress: bool = True,
    allow_unfinished: bool = False,
    operating_point: float | None = None,
) -> pd.DataFrame:
    """Predict image files and folders outside any ISIC layout: image_name, image_path, the
    melanoma probability (calibrated when the run has a temperature), the most likely class and
    every class's probability (as the models give them); with `operating_point` (a sensitivity,
    e.g. 0.95), `flagged`: the melanoma probability is at or above that point's threshold. Then
    the input checks (evaluation/ood.py): quality, ood_distance, ood_energy, ood and flag."""
    from melanoma.data.loose import read_images

    run = Path(run)
    table = read_images(paths, metadata)
    opened = Run(run)
    cfg = opened.settings
    if cfg.use_meta and metadata is None:
        console.print(
            "[yellow]warning:[/] this model uses metadata and none was given; sex, age and site count as missing"
        )
    probs = predict_rows(
        run,
        table,
        meta_matrix(table, run),
        opened.trained_folds(checkpoint, allow_unfinished),
        checkpoint,
        tta,
        progress,
    )
    probs = probs.mean(0)
    names = class_names(cfg.scheme)
    out = pd.DataFrame({"image_name": table.image_name, "image_path": table.image_path})
    raw = probs[:, melanoma_index(cfg.scheme)]
    out["melanoma"] = calibrated(run, raw)
    if operating_point is not None:
        out["flagged"] = raw >= threshold_for(run, operating_point, checkpoint)  # on the raw scale
    out["predicted"] = [names[i] for i in probs.argmax(1)]
    out[[f"p_{n}" for n in names]] = probs
    from melanoma.evaluation.ood import input_checks

    checks = input_checks(run, table, meta_matrix(table, run), progress)
    return pd.concat([out.reset_index(drop=True), checks.drop(columns="image_name")], axis=1)
