"""Reading a data folder into one table: which layout it holds, and its reader.

The dispatcher of the data stage. `ingest` finds what ROOT holds and calls that layout's reader:
the ISIC 2020 Kaggle download and the ISIC 2019 challenge download (originals.py), the winners'
pre-resized copies (resized.py) or ISIC 2024 (isic2024.py); loose image files have their own
(loose.py). Each returns checks.TABLE_COLUMNS rows; here the images are checked, the targets
encoded and names across tables kept unique. Every problem is a checks.DataError naming the file,
the column or the rows.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from rich.markup import escape

from melanoma.data.archive import find_archive, read_archive
from melanoma.data.checks import SHOW, TABLE_COLUMNS, DataError
from melanoma.data.folder import DataFolder
from melanoma.data.formats import DERMOSCOPIC, EXTRAS_ARCHIVE, META_2024, METADATA_ARCHIVE, TRUTH_2019
from melanoma.data.isic2024 import find_isic2024, read_isic2024
from melanoma.data.originals import read_isic2019, read_isic2020
from melanoma.data.resized import read_resized
from melanoma.inputs.decode import check_image
from melanoma.progress import console, progress_bar
from melanoma.targets import Scheme, encode

Verify = Literal["decode", "header", "none"]


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
            f"jpeg/ (the Kaggle download), jpeg-melanoma-NxN/ (pre-resized), train-metadata.csv (ISIC 2024) "
            f"or metadata.csv (an isic-cli download of the ISIC Archive){sized}"
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
    listing = "; ".join(f"{p}: {e}" for p, e in zip(bad.image_path[:SHOW], bad.error[:SHOW], strict=True))
    more = f" and {len(bad) - SHOW} more" if len(bad) > SHOW else ""
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
    folder_2024, archive = find_isic2024(Path(root)), find_archive(Path(root))
    if folder_2024 is not None or archive is not None:
        folders = [folder_2024 or archive]
    else:
        src = find_sources(Path(root), data_size)
        folders = [p for p in (src.isic2020, src.isic2019) if p is not None]
    csvs = [p for folder in folders for p in folder.glob("*.csv")]
    csvs += DataFolder(root).written()
    return csvs + sorted({Path(p).parent for p in table.image_path})


def _with_targets(table: pd.DataFrame, scheme: Scheme) -> pd.DataFrame:
    """`target`: the class index of each labelled row under `scheme`, -1 for unlabelled rows."""
    labelled = table.diagnosis.notna()
    table["target"] = -1
    table.loc[labelled, "target"] = encode(table.diagnosis[labelled], scheme)
    return table


def _alone(root: Path, folder: Path, what: str) -> None:
    """Refuse a data folder that holds another layout beside `folder`'s."""
    markers = ("train.csv", TRUTH_2019, METADATA_ARCHIVE, META_2024["train"])
    others = [
        d for d in [root, *(p for p in root.iterdir() if p.is_dir())]
        if d != folder and any((d / marker).is_file() for marker in markers)
    ]  # fmt: skip
    if others:
        raise DataError(
            f"{root}: {what} ({folder}) and another ISIC layout ({others[0]}) in one data folder; "
            "keep each in a data folder of its own"
        )


def _ingest_archive(
    root: Path, folder: Path, data_size: int | None, scheme: Scheme | None, image_types: Collection[str] | None,
    verify: Verify, skip_bad: bool, skipped_csv: Path | None, progress: bool,
) -> pd.DataFrame:  # fmt: skip
    _alone(root, folder, "an ISIC Archive download")
    if data_size is not None:
        raise DataError(
            f"{folder}: an ISIC Archive download is read as downloaded; there is no prepared jpeg-*-NxN "
            "copy of it, so leave out --data-size"
        )
    scheme = scheme or "9c"
    table = verify_images(read_archive(folder, scheme, image_types), verify, skip_bad, skipped_csv, progress)
    return _with_targets(table, scheme)[TABLE_COLUMNS + EXTRAS_ARCHIVE].reset_index(drop=True)


def _ingest_2024(
    root: Path, folder: Path, data_size: int | None, scheme: Scheme | None, verify: Verify, skip_bad: bool,
    skipped_csv: Path | None, progress: bool,
) -> pd.DataFrame:  # fmt: skip
    _alone(root, folder, "ISIC 2024")
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
    image_types: Collection[str] | None = (DERMOSCOPIC,),
) -> pd.DataFrame:
    """Read every ISIC dataset under ROOT into one table (columns: TABLE_COLUMNS; ISIC 2024 adds
    its centre, `attribution`; an ISIC Archive download formats.EXTRAS_ARCHIVE). Images are checked
    from their headers (and a JPEG's end marker) by default, which stays fast on the full 32 GB
    download; verify="decode" decodes every image (at 1/8 scale for a JPEG). scheme None: the data's
    own (9c for 2020/2019 and the archive, mb for 2024). image_types: the archive's image types to
    read (None: all; the other layouts have one)."""
    if not Path(root).is_dir():
        raise DataError(f"{root}: data folder not found")
    folder_2024, archive = find_isic2024(Path(root)), find_archive(Path(root))
    if folder_2024 is not None:
        return _ingest_2024(
            Path(root), folder_2024, data_size, scheme, verify, skip_bad_images, skipped_csv, progress
        )
    if archive is not None:
        return _ingest_archive(
            Path(root),
            archive,
            data_size,
            scheme,
            image_types,
            verify,
            skip_bad_images,
            skipped_csv,
            progress,
        )
    if scheme == "mb":
        raise DataError(
            f"{root}: scheme mb (malignant vs benign) is for ISIC 2024 data and ISIC Archive "
            "downloads; use 9c, 4c or 2c"
        )
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
        names = table[dup].groupby("image_name").source.apply(lambda s: "+".join(s)).head(SHOW)
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
