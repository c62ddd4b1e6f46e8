"""Reader of the winners' pre-resized copies (Kaggle datasets cdeotte/jpeg-melanoma-NxN and
cdeotte/jpeg-isic2019-NxN): the 2020 and 2019 tables with a tfrecord column, images in train/, test/."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from melanoma.data.checks import read_csv
from melanoma.data.formats import COLUMNS_2020_TEST, COLUMNS_RESIZED_2019, COLUMNS_RESIZED_2020_TRAIN
from melanoma.data.originals import assemble


def read_resized(root: Path, source: str, split: str) -> pd.DataFrame:
    """The winners' pre-resized copies: jpeg-melanoma-NxN/ and jpeg-isic2019-NxN/."""
    path = root / f"{split}.csv"
    if source == "isic2019":
        required = COLUMNS_RESIZED_2019
    else:
        required = COLUMNS_RESIZED_2020_TRAIN if split == "train" else COLUMNS_2020_TEST
    raw = read_csv(path, required, f"pre-resized {source} {split} table")
    tfrecord = "tfrecord" if "tfrecord" in raw.columns else None
    diagnosis = "diagnosis" if split == "train" else None
    patients = "patient_id" if source == "isic2020" else None
    return assemble(
        path,
        raw,
        "image_name",
        root / split,
        source,
        split,
        diagnosis,
        "anatom_site_general_challenge",
        patients,
        tfrecord,
    )
