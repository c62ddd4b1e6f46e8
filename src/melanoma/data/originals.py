"""Readers of the original downloads: ISIC 2020 from Kaggle, ISIC 2019 from the challenge site."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from melanoma.data.checks import (
    check_unique,
    clean_meta,
    map_diagnosis,
    map_sites,
    read_csv,
    report_rows,
    with_images,
)
from melanoma.data.formats import (
    COLUMNS_2019_META,
    COLUMNS_2019_TRUTH,
    COLUMNS_2020_TEST,
    COLUMNS_2020_TRAIN,
    IMAGES_2019,
    META_2019,
    TRUTH_2019,
)


def assemble(
    path: Path,
    raw: pd.DataFrame,
    name_col: str,
    images: Path,
    source: str,
    split: str,
    diagnosis_col: str | None,
    site_col: str,
    patient_col: str | None,
    tfrecord_col: str | None,
) -> pd.DataFrame:
    """TABLE_COLUMNS rows from an ISIC 2020-style table (the originals and the pre-resized copies
    share it): names, images, patients, diagnoses checked against the targets, sites, sex, age."""
    check_unique(path, raw, name_col)
    out = pd.DataFrame({"image_name": raw[name_col]})
    out["image_path"] = with_images(path, raw, images, name_col)
    patients = raw[patient_col] if patient_col else pd.Series(pd.NA, index=raw.index)
    out["patient_id"] = patients.where(~patients.isin(["-1", "-1.0"]), pd.NA)
    out["source"] = source
    out["split"] = split
    out["is_ext"] = int(source == "isic2019")
    out["raw_diagnosis"] = raw[diagnosis_col] if diagnosis_col else pd.NA
    out["diagnosis"] = map_diagnosis(path, raw, diagnosis_col) if diagnosis_col else pd.NA
    if diagnosis_col and "target" in raw.columns:
        given = pd.to_numeric(raw.target, errors="coerce")
        bad = given.isna() | (given != (out.diagnosis == "melanoma").astype(int))
        report_rows(
            path,
            "have a target that disagrees with the diagnosis (1 for melanoma, else 0)",
            raw,
            bad,
            name_col,
        )
    if tfrecord_col:
        tf = pd.to_numeric(raw[tfrecord_col], errors="coerce")
        bad = raw[tfrecord_col].isna() | tf.isna() | (tf != tf.round())
        report_rows(path, f"have a {tfrecord_col} that is not a whole number", raw, bad, name_col)
        out["tfrecord"] = tf.astype("Int64")
    else:
        out["tfrecord"] = pd.array([pd.NA] * len(raw), dtype="Int64")
    out[["sex", "age_approx"]] = clean_meta(path, raw, "sex", "age_approx", name_col)
    out["anatom_site"] = map_sites(path, raw, site_col)
    return out


def read_isic2020(root: Path, split: str) -> pd.DataFrame:
    """ISIC 2020 as downloaded from Kaggle: ROOT/{train,test}.csv and ROOT/jpeg/{train,test}/."""
    path = root / f"{split}.csv"
    required = COLUMNS_2020_TRAIN if split == "train" else COLUMNS_2020_TEST
    raw = read_csv(path, required, f"ISIC 2020 {split} table")
    diagnosis = "diagnosis" if split == "train" else None
    return assemble(
        path,
        raw,
        "image_name",
        root / "jpeg" / split,
        "isic2020",
        split,
        diagnosis,
        "anatom_site_general_challenge",
        "patient_id",
        None,
    )


def read_isic2019(root: Path) -> pd.DataFrame:
    """ISIC 2019 as downloaded from the challenge site: ground truth, metadata and images."""
    truth_path = root / TRUTH_2019
    meta_path = root / META_2019
    truth = read_csv(truth_path, COLUMNS_2019_TRUTH, "ISIC 2019 ground truth")
    meta = read_csv(meta_path, COLUMNS_2019_META, "ISIC 2019 metadata")
    check_unique(truth_path, truth, "image")
    check_unique(meta_path, meta, "image")
    codes = COLUMNS_2019_TRUTH[1:]
    onehot = truth[codes].apply(pd.to_numeric, errors="coerce")
    bad = onehot.isna().any(axis=1) | ~onehot.isin([0.0, 1.0]).all(axis=1) | (onehot.sum(axis=1) != 1)
    report_rows(
        truth_path,
        f"are not one-hot over {', '.join(codes)} (exactly one 1.0, the rest 0.0)",
        truth,
        bad,
        "image",
    )
    truth["diagnosis"] = onehot.idxmax(axis=1)
    report_rows(meta_path, f"have no row in {truth_path.name}", meta, ~meta.image.isin(truth.image), "image")
    report_rows(truth_path, f"have no row in {meta_path.name}", truth, ~truth.image.isin(meta.image), "image")
    raw = truth[["image", "diagnosis"]].merge(meta, on="image", how="left", validate="one_to_one")
    return assemble(
        truth_path,
        raw,
        "image",
        root / IMAGES_2019,
        "isic2019",
        "train",
        "diagnosis",
        "anatom_site_general",
        None,
        None,
    )
