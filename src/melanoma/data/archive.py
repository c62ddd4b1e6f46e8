"""Reader of the ISIC Archive as the official isic-cli downloads it (`isic image download OUT/`).

FOLDER/metadata.csv (one row per image, the isic-metadata schema), the images beside it as
FOLDER/<isic_id>.jpg, FOLDER/attribution.txt and FOLDER/licenses/. A row's diagnosis is the path
diagnosis_1:...:diagnosis_5, checked against the isic-metadata package's vocabulary and mapped onto
the toolkit's classes by targets.archive_name; a row with no diagnosis is read unlabelled (split
test). Only the image types asked for are read (dermoscopic by default); the others are counted.
The table carries formats.EXTRAS_ARCHIVE (lesion, image type, Fitzpatrick skin type, attribution
and licence) beyond checks.TABLE_COLUMNS.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from rich.markup import escape

from melanoma.data.checks import (
    DataError,
    check_unique,
    clean_meta,
    find_folder,
    map_sites,
    read_csv,
    report_rows,
    with_images,
)
from melanoma.data.formats import (
    COLUMNS_ARCHIVE,
    DERMOSCOPIC,
    DIAGNOSIS_LEVELS,
    EXTRAS_ARCHIVE,
    METADATA_ARCHIVE,
    OPTIONAL_ARCHIVE,
)
from melanoma.progress import console
from melanoma.targets import Scheme, archive_name

SOURCE = "archive"


def find_archive(root: Path) -> Path | None:
    """The folder (ROOT or a direct subfolder) holding an isic-cli metadata.csv, or None."""
    return find_folder(root, METADATA_ARCHIVE, "ISIC Archive downloads")


@cache
def vocabulary() -> frozenset[str]:
    """Every diagnosis path of the ISIC hierarchy ("Benign", ..., "Malignant:...:Melanoma Invasive")."""
    from isic_metadata.diagnosis_hierarchical import DiagnosisEnum

    return frozenset(d.value for d in DiagnosisEnum)


@cache
def image_type_names() -> tuple[str, ...]:
    """The archive's image types (dermoscopic, clinical: close-up, TBP tile: overview, ...)."""
    from isic_metadata.fields import ImageTypeEnum

    return tuple(t.value for t in ImageTypeEnum)


def diagnosis_paths(path: Path, raw: pd.DataFrame) -> pd.Series:
    """Each row's diagnosis path ("" for none); a gap between levels or a path the vocabulary does not
    hold is refused, naming the rows and the diagnosis."""
    levels = raw[DIAGNOSIS_LEVELS].apply(lambda c: c.str.strip()).replace("", pd.NA)
    given = levels.notna().to_numpy()
    gap = (given[:, 1:] & ~given[:, :-1]).any(axis=1)
    report_rows(path, "have a diagnosis level after an empty one (diagnosis_1 .. diagnosis_5 fill from the left)",
                raw, gap, "isic_id")  # fmt: skip
    joined = levels.apply(lambda row: ":".join(v for v in row if isinstance(v, str)), axis=1)
    named = raw.assign(named=raw.isic_id + ": " + joined)
    report_rows(
        path,
        f"have a diagnosis that the ISIC vocabulary (isic-metadata {version('isic-metadata')}) does not hold, "
        "so it cannot be mapped onto the 9c / 4c / 2c / mb classes (a newer isic-metadata may know it)",
        named,
        (joined != "") & ~joined.isin(vocabulary()),
        "named",
    )
    return joined


def wanted_types(path: Path, raw: pd.DataFrame, image_types: Collection[str] | None) -> pd.Series:
    """Which rows are of the image types asked for (None or "all": every row); the rest are counted aloud."""
    if image_types is None or "all" in image_types:
        return pd.Series(True, index=raw.index)
    unknown = sorted(set(image_types) - set(image_type_names()))
    if unknown:
        raise DataError(
            f"{path}: unknown image type(s) {', '.join(unknown)} asked for; the archive has "
            + ", ".join(image_type_names())
        )
    kinds = raw.image_type.fillna("(no image_type)")
    keep = kinds.isin(list(image_types))
    if not keep.all():
        counts = ", ".join(f"{kind} {n}" for kind, n in kinds[~keep].value_counts().items())
        console.print(
            f"[yellow]{escape(str(path))}: left out {int((~keep).sum())} image(s) that are not "
            f"{' or '.join(image_types)} ({escape(counts)}); --image-types chooses the types"
        )
    return keep


def read_archive(
    folder: Path, scheme: Scheme = "9c", image_types: Collection[str] | None = (DERMOSCOPIC,)
) -> pd.DataFrame:
    """The rows of an isic-cli download of the types asked for, as TABLE_COLUMNS + EXTRAS_ARCHIVE:
    diagnosed rows split train (classes of `scheme`), the others split test."""
    from isic_metadata.fields import FitzpatrickSkinType

    path = Path(folder) / METADATA_ARCHIVE
    raw = read_csv(path, COLUMNS_ARCHIVE, "ISIC Archive metadata (isic-cli's metadata.csv)")
    raw = raw.reindex(columns=list(dict.fromkeys([*raw.columns, *OPTIONAL_ARCHIVE])))
    report_rows(path, "have no isic_id", raw.assign(line=raw.index + 2), raw.isic_id.isna(), "line")
    check_unique(path, raw, "isic_id")
    diagnosis = diagnosis_paths(path, raw)
    keep = wanted_types(path, raw, image_types)
    raw, diagnosis = raw[keep], diagnosis[keep]
    out = pd.DataFrame(
        {"image_name": raw.isic_id, "image_path": with_images(path, raw, Path(folder), "isic_id")}
    )
    patients = raw.patient_id.str.strip()
    out["patient_id"] = patients.where(patients != "", pd.NA)
    labelled = diagnosis != ""
    out["source"], out["split"], out["is_ext"] = SOURCE, labelled.map({True: "train", False: "test"}), 0
    out["raw_diagnosis"] = diagnosis.where(labelled, pd.NA)
    out["diagnosis"] = diagnosis.map(lambda d: archive_name(d, scheme) if d else pd.NA)
    out["tfrecord"] = pd.array([pd.NA] * len(raw), dtype="Int64")
    fitzpatrick = [t.value for t in FitzpatrickSkinType]
    report_rows(path, f"have a fitzpatrick_skin_type other than {', '.join(fitzpatrick)} or empty", raw,
                raw.fitzpatrick_skin_type.notna() & ~raw.fitzpatrick_skin_type.isin(fitzpatrick), "isic_id")  # fmt: skip
    out[["sex", "age_approx"]] = clean_meta(path, raw, "sex", "age_approx", "isic_id")
    out["anatom_site"] = map_sites(path, raw, "anatom_site_general")
    for column in EXTRAS_ARCHIVE:
        out[column] = raw[column]
    return out.reset_index(drop=True)
