"""Reading the ISIC 2024 (SLICE-3D) layout: lesion crops from 3D total-body photographs.

FOLDER/train-metadata.csv with the crops in FOLDER/train-image.hdf5 (one dataset per isic_id
holding the JPEG's bytes) or, unpacked, FOLDER/train-image/image/<isic_id>.jpg; optionally
FOLDER/test-metadata.csv with FOLDER/test-image.hdf5. Images are never unpacked: a row's
image_path is "FILE.hdf5::isic_id", which every reader here decodes straight from the file.

The image pipeline gets the usual table (checks.TABLE_COLUMNS; diagnosis malignant or benign,
scheme mb); the tabular model gets every metadata column (metadata()).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.checks import DataError, check_unique, find_folder, read_csv, report_rows
from melanoma.data.formats import (
    CATEGORICAL_2024,
    COLUMNS_2024_TEST,
    COLUMNS_2024_TRAIN,
    HDF5_2024,
    IMAGES_2024,
    META_2024,
    NUMERIC_2024,
)
from melanoma.inputs.decode import hdf5_path
from melanoma.targets import NAMES_2024

SOURCE = "isic2024"


def find_isic2024(root: Path) -> Path | None:
    """The folder (ROOT or a direct subfolder) holding train-metadata.csv, or None."""
    return find_folder(root, META_2024["train"], "ISIC 2024 folders")


def _blank(column: pd.Series) -> pd.Series:
    return column.isna() | (column.astype("string").str.strip() == "")


def _check_values(path: Path, raw: pd.DataFrame, split: str) -> None:
    report_rows(path, "have no isic_id", raw.assign(line=raw.index + 2), _blank(raw.isic_id), "line")
    check_unique(path, raw, "isic_id")
    report_rows(path, "have no patient_id (empty or only spaces)", raw, _blank(raw.patient_id), "isic_id")
    for column in NUMERIC_2024:
        number = pd.to_numeric(raw[column], errors="coerce")
        bad = raw[column].notna() & (number.isna() | ~np.isfinite(number.fillna(0)))
        report_rows(path, f"have a {column} that is not a number", raw, bad, "isic_id")
    if split == "train":
        target = pd.to_numeric(raw.target, errors="coerce")
        report_rows(
            path, "have a target other than 0 (benign) or 1 (malignant)", raw, ~target.isin([0, 1]), "isic_id"
        )
    sex = raw.sex.fillna("missing").str.lower()
    report_rows(
        path,
        "have a sex other than male, female or empty",
        raw,
        ~sex.isin(["male", "female", "missing"]),
        "isic_id",
    )


def read_metadata(folder: Path, split: str) -> pd.DataFrame:
    """FOLDER/{train,test}-metadata.csv, checked: every column of the layout, unique isic_id,
    a patient for every row, numbers where numbers belong, target 0/1 in train."""
    path = Path(folder) / META_2024[split]
    required = COLUMNS_2024_TRAIN if split == "train" else COLUMNS_2024_TEST
    raw = read_csv(path, required, f"ISIC 2024 {split} metadata")
    _check_values(path, raw, split)
    raw["isic_id"] = raw.isic_id.astype(str)
    raw["patient_id"] = raw.patient_id.astype(str).str.strip()  # " IP_1" and "IP_1" are one patient
    for column in NUMERIC_2024:
        raw[column] = pd.to_numeric(raw[column], errors="coerce")
    if split == "train":  # checked above: 0 or 1, however written ("1.0" is 1)
        raw["target"] = pd.to_numeric(raw.target).astype("int64")
    return raw


def check_train_test(folder: Path, train: pd.DataFrame, test: pd.DataFrame) -> None:
    """An isic_id is a train or a test lesion, never both (a row scored on itself)."""
    path = Path(folder) / META_2024["test"]
    report_rows(
        path,
        f"repeat an isic_id of {META_2024['train']}",
        test,
        test.isic_id.isin(set(train.isic_id)),
        "isic_id",
    )


def image_paths(folder: Path, split: str, raw: pd.DataFrame) -> pd.Series:
    """Each row's image: inside {split}-image.hdf5 when there is one (every isic_id must be a key),
    else the unpacked train-image/image/<isic_id>.jpg."""
    import h5py

    metadata = Path(folder) / META_2024[split]
    hdf5 = Path(folder) / HDF5_2024[split]
    if hdf5.is_file():
        try:
            with h5py.File(hdf5, "r") as f:
                keys = set(f.keys())
                found = raw.isic_id.isin(keys)
                report_rows(metadata, f"have no image in {hdf5}", raw, ~found, "isic_id")
                kinds = [f.get(key, getclass=True) for key in raw.isic_id]
        except OSError as err:
            raise DataError(f"{hdf5}: not a readable HDF5 file ({err})") from None
        not_data = [kind is not h5py.Dataset for kind in kinds]
        report_rows(
            metadata, f"name an HDF5 group, not an image's bytes, in {hdf5}", raw, not_data, "isic_id"
        )
        return raw.isic_id.map(lambda key: hdf5_path(hdf5, key))
    images = Path(folder) / IMAGES_2024
    if split == "train" and images.is_dir():
        files = raw.isic_id.map(lambda key: images / f"{key}.jpg")
        report_rows(metadata, f"have no image file in {images}", raw, ~files.map(Path.is_file), "isic_id")
        return files.map(str)
    raise DataError(
        f"{folder}: no images for {metadata.name}; expected {hdf5.name}"
        + (f" or {IMAGES_2024}/<isic_id>.jpg" if split == "train" else "")
    )


def read_isic2024(folder: Path) -> pd.DataFrame:
    """The 2024 train (and test, when present) rows as an ingest table (checks.TABLE_COLUMNS)."""
    parts, raws = [], {}
    for split in ("train", "test"):
        if split == "test" and not (Path(folder) / META_2024["test"]).is_file():
            continue
        raw = raws[split] = read_metadata(folder, split)
        if split == "test":
            check_train_test(folder, raws["train"], raw)
        out = pd.DataFrame({"image_name": raw.isic_id, "image_path": image_paths(folder, split, raw)})
        out["patient_id"] = raw.patient_id.astype(str)
        out["source"], out["split"], out["is_ext"] = SOURCE, split, 0
        if split == "train":
            out["raw_diagnosis"] = raw.iddx_1
            out["diagnosis"] = raw.target.map(NAMES_2024)
        else:
            out["raw_diagnosis"] = out["diagnosis"] = pd.NA
        out["tfrecord"] = pd.array([pd.NA] * len(raw), dtype="Int64")
        sex = raw.sex.astype("string").str.lower()
        out["sex"] = sex.where(sex.isin(["male", "female"]), pd.NA)
        out["age_approx"] = raw.age_approx
        out["anatom_site"] = raw.anatom_site_general
        out["attribution"] = raw.attribution
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


def metadata(folder: Path) -> pd.DataFrame:
    """Every metadata column of train and test (test rows: the train-only columns empty), with
    `split`; categories as strings, measurements as numbers. For the tabular model."""
    parts = []
    for split in ("train", "test"):
        if split == "test" and not (Path(folder) / META_2024["test"]).is_file():
            continue
        parts.append(read_metadata(folder, split).assign(split=split))
        if split == "test":
            check_train_test(folder, parts[0], parts[1])
    table = pd.concat(parts, ignore_index=True)
    for column in CATEGORICAL_2024:
        table[column] = table[column].astype("string")
    return table
