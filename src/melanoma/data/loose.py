"""Reader of loose images: files and folders outside any ISIC layout (predict and explain --images)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from melanoma.data.checks import SHOW, TABLE_COLUMNS, DataError, check_unique, clean_meta, map_sites, read_csv
from melanoma.data.formats import COLUMNS_2020_TEST
from melanoma.inputs.decode import check_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_images(paths: Iterable[Path], metadata: Path | None = None) -> pd.DataFrame:
    """A table (TABLE_COLUMNS, split 'test', no labels) for image files and folders of images,
    outside any ISIC layout. `metadata`, optional, is a CSV with the ISIC 2020 test columns
    (image_name = file name without extension, patient_id, sex, age_approx,
    anatom_site_general_challenge); images it does not list get missing metadata."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{path}: no .jpg, .jpeg or .png images in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such image file or folder")
    table = pd.DataFrame({"image_name": [p.stem for p in files], "image_path": [str(p) for p in files]})
    errors = [check_image(p) for p in table.image_path]
    bad = [f"{p}: {e}" for p, e in zip(table.image_path, errors, strict=True) if e]
    if bad:
        more = f" and {len(bad) - SHOW} more" if len(bad) > SHOW else ""
        raise DataError(f"{len(bad)} image(s) cannot be used: {'; '.join(bad[:SHOW])}{more}")
    dup = table.image_name.duplicated()
    if dup.any():
        raise DataError(
            f"image names must be unique; repeated: {', '.join(table.image_name[dup].head(SHOW))}"
        )
    table = table.assign(
        patient_id=pd.NA, source="images", split="test", is_ext=0, raw_diagnosis=pd.NA, diagnosis=pd.NA,
        target=-1, tfrecord=pd.array([pd.NA] * len(table), dtype="Int64"), sex=pd.NA,
        age_approx=float("nan"), anatom_site=pd.NA,
    )  # fmt: skip
    if metadata is not None:
        raw = read_csv(Path(metadata), COLUMNS_2020_TEST, "image metadata")
        check_unique(Path(metadata), raw, "image_name")
        meta = pd.DataFrame({"image_name": raw.image_name, "patient_id": raw.patient_id})
        meta[["sex", "age_approx"]] = clean_meta(Path(metadata), raw, "sex", "age_approx", "image_name")
        meta["anatom_site"] = map_sites(Path(metadata), raw, "anatom_site_general_challenge")
        meta = meta.set_index("image_name")
        known = table.image_name.isin(meta.index)
        for column in ("patient_id", "sex", "age_approx", "anatom_site"):
            table[column] = table[column].astype(object if column != "age_approx" else float)
            table.loc[known, column] = meta.loc[table.image_name[known], column].to_numpy()
    return table[TABLE_COLUMNS]
