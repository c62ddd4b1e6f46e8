"""Patient-grouped, stratified cross-validation folds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold


def patient_folds(table: pd.DataFrame, k: int = 5, seed: int = 0) -> pd.Series:
    """Fold number (0..k-1) of every train row; -1 for test rows and for left-out duplicates.

    No patient is in two folds; folds are stratified by melanoma and by source, so 2019 and 2020
    rows and melanomas spread evenly. Rows without a patient (ISIC 2019) are their own group.
    Rows the pre-resized copies mark as duplicates (negative tfrecord) are left out of training
    and validation, as the winners did; fold_summary shows them as fold -1.
    """
    dropped = table.tfrecord.notna() & (table.tfrecord < 0) if "tfrecord" in table else False
    train = table[(table.split == "train") & ~dropped]
    if train.empty:
        raise ValueError("no train rows to split into folds")
    groups = train.patient_id.fillna("img:" + train.image_name)
    melanoma = (train.diagnosis == "melanoma").astype(int)
    strata = melanoma * 2 + train.is_ext.astype(int)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = pd.Series(-1, index=table.index, dtype="int64")
    for i, (_, val) in enumerate(splitter.split(train, strata, groups)):
        fold.loc[train.index[val]] = i
    return fold


def fold_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per-fold counts: images, patients, melanomas and melanoma rate, 2019 share."""
    train = table[table.split == "train"]
    return train.groupby("fold").agg(
        images=("image_name", "size"),
        patients=("patient_id", "nunique"),
        melanoma=("diagnosis", lambda d: int((d == "melanoma").sum())),
        melanoma_rate=("diagnosis", lambda d: float((d == "melanoma").mean())),
        isic2019_share=("is_ext", "mean"),
    )


def save_folds(table: pd.DataFrame, path: Path) -> Path:
    """Write image_name,fold for the train rows."""
    table.loc[table.split == "train", ["image_name", "fold"]].to_csv(path, index=False)
    return path


def load_folds(table: pd.DataFrame, path: Path) -> pd.Series:
    """Folds from a folds.csv; every train row must have one."""
    folds = pd.read_csv(path, dtype={"image_name": str})
    if list(folds.columns) != ["image_name", "fold"]:
        raise ValueError(f"{path}: expected columns image_name,fold, got {','.join(folds.columns)}")
    mapping = dict(zip(folds.image_name, folds.fold, strict=True))
    fold = table.image_name.map(mapping)
    missing = table[(table.split == "train") & fold.isna()].image_name
    if len(missing):
        raise ValueError(
            f"{path}: {len(missing)} train image(s) have no fold, e.g. {', '.join(missing.head(5))}; "
            "rebuild it with `melanoma folds`"
        )
    return fold.where(table.split == "train", -1).astype("int64")
