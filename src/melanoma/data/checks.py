"""The checks every reader of a data layout shares, and the table they all return.

A reader (originals.py, resized.py, isic2024.py, loose.py; ingest.py picks one per data folder)
turns a layout's files into TABLE_COLUMNS rows. Every problem is a DataError whose message names
the file, the column and the rows (the first SHOW of them by CSV line, and a count); nothing is
dropped without being reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from melanoma.data.formats import SITES_2019_TO_2020
from melanoma.targets import RAW_TO_NAME

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
SHOW = 5  # rows named in a message; the rest are counted


class DataError(ValueError):
    """Input data that cannot be used as it is; the message says where and what was expected."""


def find_folder(root: Path, marker: str, what: str) -> Path | None:
    """The folder (ROOT or a direct subfolder) holding the file `marker`, or None; two of them are
    refused, naming both (`what` says what they hold)."""
    root = Path(root)
    found = [d for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if (d / marker).is_file()]
    if len(found) > 1:
        raise DataError(f"{root}: several {what} found ({', '.join(map(str, found))}); keep one")
    return found[0] if found else None


def report_rows(path: Path, problem: str, table: pd.DataFrame, mask: Iterable[bool], show: str) -> None:
    """Raise a DataError listing the first offending rows (by CSV line) and their count."""
    bad = table[list(mask)]
    if bad.empty:
        return
    lines = [f"line {int(i) + 2} ({bad.at[i, show]})" for i in bad.index[:SHOW]]
    more = f" and {len(bad) - SHOW} more" if len(bad) > SHOW else ""
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


def check_unique(path: Path, table: pd.DataFrame, column: str) -> None:
    """Refuse rows that repeat an earlier value of `column`."""
    report_rows(path, f"repeat an earlier {column}", table, table[column].duplicated(), column)


def map_diagnosis(path: Path, table: pd.DataFrame, column: str) -> pd.Series:
    """The diagnosis names of a column of raw ISIC diagnoses; unknown ones refused."""
    names = table[column].map(RAW_TO_NAME)
    known = ", ".join(sorted(RAW_TO_NAME))
    report_rows(path, f"have an unknown {column} (known: {known})", table, names.isna(), column)
    return names


def map_sites(path: Path, table: pd.DataFrame, column: str) -> pd.Series:
    """ISIC 2020 site names from a column of 2019 or 2020 ones; unknown ones refused."""
    sites = table[column].map(SITES_2019_TO_2020)
    bad = table[column].notna() & sites.isna()
    report_rows(
        path, f"have an unknown {column} (known: {', '.join(SITES_2019_TO_2020)})", table, bad, column
    )
    return sites


def clean_meta(path: Path, table: pd.DataFrame, sex: str, age: str, name: str) -> pd.DataFrame:
    """sex (male, female or missing) and age_approx (a number or missing), checked."""
    bad_sex = table[sex].notna() & ~table[sex].isin(["male", "female"])
    report_rows(path, f"have a {sex} other than male, female or empty", table, bad_sex, name)
    ages = pd.to_numeric(table[age], errors="coerce")
    report_rows(path, f"have a non-numeric {age}", table, table[age].notna() & ages.isna(), name)
    return pd.DataFrame({"sex": table[sex], "age_approx": ages.astype(float)})


def with_images(path: Path, table: pd.DataFrame, folder: Path, name_col: str) -> pd.Series:
    """The image path of each row: a file in `folder` named by the row's `name_col`."""
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found; expected it next to {path.name}")
    files = {p.stem: p.name for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    missing = ~table[name_col].isin(files.keys())
    report_rows(path, f"have no image file in {folder}", table, missing, name_col)
    return table[name_col].map(lambda n: str(folder / files[n]))
