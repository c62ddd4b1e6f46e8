"""Reading the public ISIC layouts into one table.

Layouts read: the ISIC 2020 Kaggle download (train.csv, test.csv, jpeg/), the ISIC 2019 challenge
download (ground truth + metadata CSVs, ISIC_2019_Training_Input/) and the winners' pre-resized
copies (jpeg-melanoma-NxN/, jpeg-isic2019-NxN/ with a tfrecord column). Every input problem is
caught here, once, with a message naming the file, the column or the rows; nothing is dropped
without being reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from rich.markup import escape

from melanoma.data.formats import (
    COLUMNS_2019_META,
    COLUMNS_2019_TRUTH,
    COLUMNS_2020_TEST,
    COLUMNS_2020_TRAIN,
    COLUMNS_RESIZED_2019,
    COLUMNS_RESIZED_2020_TRAIN,
    IMAGES_2019,
    META_2019,
    SITES_2019_TO_2020,
    TRUTH_2019,
)
from melanoma.inputs.decode import check_image
from melanoma.progress import console, progress_bar
from melanoma.targets import RAW_TO_NAME, Scheme, encode

Verify = Literal["decode", "header", "none"]

TABLE_COLUMNS = [
    "image_path",
    "image_name",
    "patient_id",
    "source",
    "split",
    "is_ext",
    "raw_diagnosis",
    "diagnosis",
    "target",
    "tfrecord",
    "sex",
    "age_approx",
    "anatom_site",
]
_SHOW = 5


class DataError(ValueError):
    """Input data that cannot be used as it is; the message says where and what was expected."""


def _rows(path: Path, problem: str, table: pd.DataFrame, mask: Iterable[bool], show: str) -> None:
    """Raise a DataError listing the first offending rows (by CSV line) and their count."""
    bad = table[list(mask)]
    if bad.empty:
        return
    lines = [f"line {int(i) + 2} ({bad.at[i, show]})" for i in bad.index[:_SHOW]]
    more = f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
    raise DataError(f"{path}: {len(bad)} row(s) {problem}: {', '.join(lines)}{more}")


def read_csv(path: Path, required: list[str], what: str) -> pd.DataFrame:
    """Read a CSV, checking that it exists and has the required columns."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected the {what}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from err
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the {what} with columns "
            f"{', '.join(required)} (found {', '.join(map(str, table.columns))})"
        )
    return table


def _check_unique(path: Path, table: pd.DataFrame, column: str) -> None:
    _rows(path, f"repeat an earlier {column}", table, table[column].duplicated(), column)


def _map_diagnosis(path: Path, table: pd.DataFrame, column: str) -> pd.Series:
    names = table[column].map(RAW_TO_NAME)
    known = ", ".join(sorted(RAW_TO_NAME))
    _rows(path, f"have an unknown {column} (known: {known})", table, names.isna(), column)
    return names


def _map_sites(path: Path, table: pd.DataFrame, column: str) -> pd.Series:
    sites = table[column].map(SITES_2019_TO_2020)
    bad = table[column].notna() & sites.isna()
    _rows(path, f"have an unknown {column} (known: {', '.join(SITES_2019_TO_2020)})", table, bad, column)
    return sites


def _clean_meta(path: Path, table: pd.DataFrame, sex: str, age: str, name: str) -> pd.DataFrame:
    bad_sex = table[sex].notna() & ~table[sex].isin(["male", "female"])
    _rows(path, f"have a {sex} other than male, female or empty", table, bad_sex, name)
    ages = pd.to_numeric(table[age], errors="coerce")
    _rows(path, f"have a non-numeric {age}", table, table[age].notna() & ages.isna(), name)
    return pd.DataFrame({"sex": table[sex], "age_approx": ages.astype(float)})


def _with_images(path: Path, table: pd.DataFrame, folder: Path, name_col: str) -> pd.Series:
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found; expected it next to {path.name}")
    files = {p.stem: p.name for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    missing = ~table[name_col].isin(files.keys())
    _rows(path, f"have no image file in {folder}", table, missing, name_col)
    return table[name_col].map(lambda n: str(folder / files[n]))


def _assemble(
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
    _check_unique(path, raw, name_col)
    out = pd.DataFrame({"image_name": raw[name_col]})
    out["image_path"] = _with_images(path, raw, images, name_col)
    patients = raw[patient_col] if patient_col else pd.Series(pd.NA, index=raw.index)
    out["patient_id"] = patients.where(~patients.isin(["-1", "-1.0"]), pd.NA)
    out["source"] = source
    out["split"] = split
    out["is_ext"] = int(source == "isic2019")
    out["raw_diagnosis"] = raw[diagnosis_col] if diagnosis_col else pd.NA
    out["diagnosis"] = _map_diagnosis(path, raw, diagnosis_col) if diagnosis_col else pd.NA
    if diagnosis_col and "target" in raw.columns:
        given = pd.to_numeric(raw.target, errors="coerce")
        bad = given.isna() | (given != (out.diagnosis == "melanoma").astype(int))
        _rows(
            path,
            "have a target that disagrees with the diagnosis (1 for melanoma, else 0)",
            raw,
            bad,
            name_col,
        )
    if tfrecord_col:
        tf = pd.to_numeric(raw[tfrecord_col], errors="coerce")
        bad = raw[tfrecord_col].isna() | tf.isna() | (tf != tf.round())
        _rows(path, f"have a {tfrecord_col} that is not a whole number", raw, bad, name_col)
        out["tfrecord"] = tf.astype("Int64")
    else:
        out["tfrecord"] = pd.array([pd.NA] * len(raw), dtype="Int64")
    out[["sex", "age_approx"]] = _clean_meta(path, raw, "sex", "age_approx", name_col)
    out["anatom_site"] = _map_sites(path, raw, site_col)
    return out


def read_isic2020(root: Path, split: str) -> pd.DataFrame:
    """ISIC 2020 as downloaded from Kaggle: ROOT/{train,test}.csv and ROOT/jpeg/{train,test}/."""
    path = root / f"{split}.csv"
    required = COLUMNS_2020_TRAIN if split == "train" else COLUMNS_2020_TEST
    raw = read_csv(path, required, f"ISIC 2020 {split} table")
    diagnosis = "diagnosis" if split == "train" else None
    return _assemble(
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
    _check_unique(truth_path, truth, "image")
    _check_unique(meta_path, meta, "image")
    codes = COLUMNS_2019_TRUTH[1:]
    onehot = truth[codes].apply(pd.to_numeric, errors="coerce")
    bad = onehot.isna().any(axis=1) | ~onehot.isin([0.0, 1.0]).all(axis=1) | (onehot.sum(axis=1) != 1)
    _rows(
        truth_path,
        f"are not one-hot over {', '.join(codes)} (exactly one 1.0, the rest 0.0)",
        truth,
        bad,
        "image",
    )
    truth["diagnosis"] = onehot.idxmax(axis=1)
    _rows(meta_path, f"have no row in {truth_path.name}", meta, ~meta.image.isin(truth.image), "image")
    _rows(truth_path, f"have no row in {meta_path.name}", truth, ~truth.image.isin(meta.image), "image")
    raw = truth[["image", "diagnosis"]].merge(meta, on="image", how="left", validate="one_to_one")
    return _assemble(
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
    return _assemble(
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


@dataclass
class Sources:
    """The folders found for each dataset, and which layout they use."""

    isic2020: Path
    isic2019: Path | None
    resized: int | None  # N of jpeg-*-NxN, None for the original downloads


_RESIZED = re.compile(r"jpeg-(melanoma|isic2019)-(\d+)x(\d+)$")


def find_sources(root: Path, data_size: int | None = None) -> Sources:
    """Find the ISIC folders in ROOT or its direct subfolders."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    originals_2020, originals_2019 = [], []
    resized: dict[tuple[str, int], Path] = {}
    for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (d / "train.csv").is_file() and (d / "jpeg").is_dir():
            originals_2020.append(d)
        if (d / TRUTH_2019).is_file():
            originals_2019.append(d)
        m = _RESIZED.match(d.name)
        if m and m.group(2) == m.group(3):
            resized[(m.group(1), int(m.group(2)))] = d
    sizes = sorted({n for (kind, n) in resized if kind == "melanoma"})
    if data_size is None and not originals_2020 and len(sizes) == 1:
        data_size = sizes[0]
    if data_size is not None:
        if ("melanoma", data_size) not in resized:
            have = ", ".join(f"{n}x{n}" for n in sizes) or "none"
            raise DataError(f"{root}: no jpeg-melanoma-{data_size}x{data_size} folder (found: {have})")
        return Sources(resized[("melanoma", data_size)], resized.get(("isic2019", data_size)), data_size)
    if not originals_2020:
        sized = f"; pre-resized sizes found: {', '.join(map(str, sizes))} (pass data_size)" if sizes else ""
        raise DataError(
            f"{root}: no ISIC 2020 data found. Expected ROOT or a subfolder holding train.csv and "
            f"jpeg/ (the Kaggle download), or jpeg-melanoma-NxN/ (pre-resized){sized}"
        )
    if len(originals_2020) > 1 or len(originals_2019) > 1:
        raise DataError(
            f"{root}: several ISIC folders found ({originals_2020 + originals_2019}); keep one each"
        )
    return Sources(originals_2020[0], originals_2019[0] if originals_2019 else None, None)


def verify_images(
    table: pd.DataFrame,
    mode: Verify = "decode",
    skip_bad: bool = False,
    skipped_csv: Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Check that every image can be read; raise, or drop and list the bad ones with `skip_bad`."""
    if mode == "none" or table.empty:
        return table
    paths = list(table.image_path)
    errors: list[str] = []
    with (
        progress_bar("ingest: checking images", len(paths), progress) as advance,
        ThreadPoolExecutor(4) as pool,
    ):
        for err in pool.map(lambda p: check_image(p, mode), paths, chunksize=64):
            errors.append(err)
            advance()
    bad = table.assign(error=errors)[[e != "" for e in errors]]
    if bad.empty:
        return table
    listing = "; ".join(f"{p}: {e}" for p, e in zip(bad.image_path[:_SHOW], bad.error[:_SHOW], strict=True))
    more = f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
    if not skip_bad:
        raise DataError(
            f"{len(bad)} image(s) cannot be decoded: {listing}{more}. "
            "Fix or remove them, or skip them (--skip-bad-images)."
        )
    if skipped_csv is not None:
        skipped_csv.parent.mkdir(parents=True, exist_ok=True)
        bad[["image_name", "image_path", "source", "split", "error"]].to_csv(skipped_csv, index=False)
    where = f"; listed in {skipped_csv}" if skipped_csv else ""
    console.print(f"[yellow]Skipped {len(bad)} image(s) that cannot be decoded{escape(where)}")
    return table.drop(index=bad.index)


def input_paths(root: Path, table: pd.DataFrame, data_size: int | None = None) -> list[Path]:
    """What a command reads from ROOT and must never write over: the CSVs of the datasets found,
    ROOT's folds.csv and duplicates.csv, and every folder holding the table's images."""
    from melanoma.data.isic2024 import find_isic2024

    folder_2024 = find_isic2024(Path(root))
    if folder_2024 is not None:
        folders = [folder_2024]
    else:
        src = find_sources(Path(root), data_size)
        folders = [p for p in (src.isic2020, src.isic2019) if p is not None]
    csvs = [p for folder in folders for p in folder.glob("*.csv")]
    csvs += [Path(root) / name for name in ("folds.csv", "duplicates.csv")]
    return csvs + sorted({Path(p).parent for p in table.image_path})


def _with_targets(table: pd.DataFrame, scheme: Scheme) -> pd.DataFrame:
    """`target`: the class index of each labelled row under `scheme`, -1 for unlabelled rows."""
    labelled = table.diagnosis.notna()
    table["target"] = -1
    table.loc[labelled, "target"] = encode(table.diagnosis[labelled], scheme)
    return table


def _ingest_2024(
    root: Path, folder: Path, data_size: int | None, scheme: Scheme | None, verify: Verify, skip_bad: bool,
    skipped_csv: Path | None, progress: bool,
) -> pd.DataFrame:  # fmt: skip
    from melanoma.data.isic2024 import read_isic2024

    others = [d for d in [root, *root.iterdir()] if (d / "train.csv").is_file() or (d / TRUTH_2019).is_file()]
    if others:
        raise DataError(
            f"{root}: ISIC 2024 ({folder}) and ISIC 2020/2019 ({others[0]}) in one data folder; "
            "keep each in a data folder of its own"
        )
    if data_size is not None:
        raise DataError(
            f"{folder}: ISIC 2024 crops are read from the HDF5 file as they are (about 60-240 px); "
            "there is no prepared jpeg-*-NxN copy, so leave out --data-size"
        )
    if scheme not in (None, "mb"):
        raise DataError(
            f"{folder}: ISIC 2024 is labelled malignant or benign only; use the target scheme mb "
            f"(--scheme mb, or --preset isic2024), not {scheme}"
        )
    table = _with_targets(verify_images(read_isic2024(folder), verify, skip_bad, skipped_csv, progress), "mb")
    return table[TABLE_COLUMNS + ["attribution"]].reset_index(drop=True)


def ingest(
    root: Path,
    data_size: int | None = None,
    external: bool = True,
    scheme: Scheme | None = None,
    verify: Verify = "header",
    skip_bad_images: bool = False,
    skipped_csv: Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Read every ISIC dataset under ROOT into one table (columns: TABLE_COLUMNS; ISIC 2024 adds
    its centre, `attribution`). Images are checked from their headers (and a JPEG's end marker) by
    default, which stays fast on the full 32 GB download; verify="decode" decodes every image (at
    1/8 scale for a JPEG). scheme None: the data's own (9c for 2020/2019, mb for 2024)."""
    from melanoma.data.isic2024 import find_isic2024

    if not Path(root).is_dir():
        raise DataError(f"{root}: data folder not found")
    folder_2024 = find_isic2024(Path(root))
    if folder_2024 is not None:
        return _ingest_2024(
            Path(root), folder_2024, data_size, scheme, verify, skip_bad_images, skipped_csv, progress
        )
    if scheme == "mb":
        raise DataError(f"{root}: scheme mb (malignant vs benign) is for ISIC 2024 data; use 9c, 4c or 2c")
    scheme = scheme or "9c"
    src = find_sources(Path(root), data_size)
    if src.resized:
        parts = [
            read_resized(src.isic2020, "isic2020", "train"),
            read_resized(src.isic2020, "isic2020", "test"),
        ]
        if external and src.isic2019:
            parts.append(read_resized(src.isic2019, "isic2019", "train"))
    else:
        parts = [read_isic2020(src.isic2020, "train"), read_isic2020(src.isic2020, "test")]
        if external and src.isic2019:
            parts.append(read_isic2019(src.isic2019))
    if external and src.isic2019 is None:
        console.print(f"[yellow]No ISIC 2019 data under {escape(str(root))}: using ISIC 2020 only")
    table = pd.concat(parts, ignore_index=True)
    dup = table.image_name.duplicated(keep=False)
    if dup.any():
        names = table[dup].groupby("image_name").source.apply(lambda s: "+".join(s)).head(_SHOW)
        raise DataError(
            f"{root}: {int(dup.sum())} rows share an image name across tables: "
            + ", ".join(f"{n} ({s})" for n, s in names.items())
        )
    table = _with_targets(verify_images(table, verify, skip_bad_images, skipped_csv, progress), scheme)
    return table[TABLE_COLUMNS].reset_index(drop=True)


def summarize(table: pd.DataFrame) -> str:
    """Images per source and split, with melanoma (ISIC 2024: malignant) counts, as a printable table."""
    positive = "malignant" if (table.source == "isic2024").any() else "melanoma"
    grouped = table.groupby(["source", "split"]).agg(
        images=("image_name", "size"), **{positive: ("diagnosis", lambda d: int((d == positive).sum()))}
    )
    return grouped.to_string()


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
        more = f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
        raise DataError(f"{len(bad)} image(s) cannot be used: {'; '.join(bad[:_SHOW])}{more}")
    dup = table.image_name.duplicated()
    if dup.any():
        raise DataError(
            f"image names must be unique; repeated: {', '.join(table.image_name[dup].head(_SHOW))}"
        )
    table = table.assign(
        patient_id=pd.NA, source="images", split="test", is_ext=0, raw_diagnosis=pd.NA, diagnosis=pd.NA,
        target=-1, tfrecord=pd.array([pd.NA] * len(table), dtype="Int64"), sex=pd.NA,
        age_approx=float("nan"), anatom_site=pd.NA,
    )  # fmt: skip
    if metadata is not None:
        raw = read_csv(Path(metadata), COLUMNS_2020_TEST, "image metadata")
        _check_unique(Path(metadata), raw, "image_name")
        meta = pd.DataFrame({"image_name": raw.image_name, "patient_id": raw.patient_id})
        meta[["sex", "age_approx"]] = _clean_meta(Path(metadata), raw, "sex", "age_approx", "image_name")
        meta["anatom_site"] = _map_sites(Path(metadata), raw, "anatom_site_general_challenge")
        meta = meta.set_index("image_name")
        known = table.image_name.isin(meta.index)
        for column in ("patient_id", "sex", "age_approx", "anatom_site"):
            table[column] = table[column].astype(object if column != "age_approx" else float)
            table.loc[known, column] = meta.loc[table.image_name[known], column].to_numpy()
    return table[TABLE_COLUMNS]
