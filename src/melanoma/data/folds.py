"""Cross-validation folds: triple-stratified by patient, or the winners' published fold maps.

Triple stratification, as the winners did it: (1) no patient in two folds, (2) the melanoma rate
balanced across folds, (3) patients with few and with many images spread evenly. ISIC 2019 rows
have no patient; they are stratified by class. Images found to be near-duplicates of each other
(dedup) are tied together so that one group never straddles two folds.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from melanoma.data.folder import DataFolder
from melanoma.fileio import write_csv
from melanoma.progress import console

POSITIVE = ("melanoma", "malignant")  # the class stratified on: melanoma, or ISIC 2024's malignant

# tfrecord (0..14) -> fold, as published with the winning solution.
FOLD_MAPS = {
    "default": {
        2: 0,
        4: 0,
        5: 0,
        1: 1,
        10: 1,
        13: 1,
        0: 2,
        9: 2,
        12: 2,
        3: 3,
        8: 3,
        11: 3,
        6: 4,
        7: 4,
        14: 4,
    },
    "newfold": {
        8: 0,
        5: 0,
        11: 0,
        7: 1,
        0: 1,
        6: 1,
        10: 2,
        12: 2,
        13: 2,
        9: 3,
        1: 3,
        3: 3,
        14: 4,
        2: 4,
        4: 4,
    },
}


def _dropped(table: pd.DataFrame) -> pd.Series:
    """Rows the pre-resized CSVs mark as duplicates (negative tfrecord)."""
    if "tfrecord" not in table:
        return pd.Series(False, index=table.index)
    return (table.tfrecord.notna() & (table.tfrecord < 0)).astype(bool)


def _units(train: pd.DataFrame, groups: pd.Series | None) -> np.ndarray:
    """A unit id per row (0..units-1): rows of one patient, or tied by a duplicate group, share one."""
    keys = train.patient_id.fillna("img:" + train.image_name).to_numpy()
    _, node = np.unique(keys, return_inverse=True)
    rows, cols = [np.arange(len(train))], [node]
    if groups is not None and len(groups):  # an image may be listed in several groups
        position = pd.Series(np.arange(len(train)), index=train.image_name)
        members = pd.DataFrame({"name": groups.index, "group": groups.to_numpy()})
        members = members[members.name.isin(position.index)]
        _, gid = np.unique(members.group.astype(str), return_inverse=True)
        rows.append(position.loc[members.name].to_numpy())
        cols.append(node.max() + 1 + gid)
    r, c = np.concatenate(rows), np.concatenate(cols)
    n = len(train) + int(c.max()) + 1
    graph = coo_matrix((np.ones(len(r)), (r, len(train) + c)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    return label[: len(train)]


def patient_folds(
    table: pd.DataFrame,
    k: int = 5,
    seed: int = 0,
    groups: pd.Series | None = None,
    dropped: Collection[str] = (),
) -> pd.Series:
    """Triple-stratified fold (0..k-1) of every train row; -1 for test rows and dropped duplicates.

    `groups` maps image_name -> duplicate-group id; members of a group land in one fold, and the
    images named in `dropped` (duplicates not kept) get -1. Greedy
    assignment, in a seeded random order within ties: units with melanomas first (to the fold with
    the fewest melanomas), then the other 2020 patients from the largest to the smallest (to the
    fold with the fewest patients of that size band, then the fewest images), then 2019 images by
    class (to the fold with the fewest of that class).
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    keep = (table.split == "train") & ~_dropped(table) & ~table.image_name.isin(set(dropped))
    train = table[keep]
    if train.empty:
        raise ValueError("no train rows to split into folds")
    unit = _units(train, groups)
    rows = pd.DataFrame(
        {
            "unit": unit,
            "mel": train.diagnosis.isin(POSITIVE).to_numpy(),  # ISIC 2024: malignant
            "is_2020": (train.is_ext == 0).to_numpy(),
            "diagnosis": train.diagnosis.to_numpy(),
        }
    )
    units = rows.groupby("unit").agg(
        n=("mel", "size"), mel=("mel", "sum"), n2020=("is_2020", "sum"), diagnosis=("diagnosis", "first")
    )
    rng = np.random.default_rng(seed)
    units["tie"] = rng.permutation(len(units))
    # Size bands by quantile of the 2020 patients' image counts (few ... many images).
    sized = units[units.n2020 > 0]
    edges = np.unique(np.quantile(sized.n, np.linspace(0, 1, 6)[1:-1])) if len(sized) else []
    units["band"] = np.searchsorted(edges, units.n, side="right")

    n, mel, band = units.n.to_numpy(), units.mel.to_numpy(), units.band.to_numpy()
    fold_of = np.full(len(units), -1)
    images, melanomas, members = np.zeros(k), np.zeros(k), np.zeros(k)
    stratum_count: dict[object, np.ndarray] = {}

    def place(i: int, first: np.ndarray, stratum: object) -> None:
        counts = stratum_count.setdefault(stratum, np.zeros(k))
        f = int(np.lexsort((rng.random(k), images, members, counts, first))[0])  # last key is primary
        fold_of[i] = f
        images[f] += n[i]
        melanomas[f] += mel[i]
        members[f] += 1
        counts[f] += n[i] if stratum[0] == "2019" else 1  # 2019: images per class; 2020: patients

    has_2020 = units.n2020 > 0
    with_mel = units[has_2020 & (units.mel > 0)].sort_values(
        ["mel", "n", "tie"], ascending=[False, False, True]
    )
    for u in with_mel.index:
        place(u, melanomas, ("2020", band[u]))
    no_mel = np.zeros(k)
    others = units[has_2020 & (units.mel == 0)].sort_values(["n", "tie"], ascending=[False, True])
    for u in others.index:
        place(u, no_mel, ("2020", band[u]))
    # 2019 images tied to a 2020 patient by a duplicate group are placed already: count them.
    row_fold = fold_of[rows.unit.to_numpy()]
    tied = rows.assign(fold=row_fold)[~rows.is_2020 & (row_fold >= 0)]
    for (f, diagnosis), count in tied.groupby(["fold", "diagnosis"]).size().items():
        stratum_count.setdefault(("2019", diagnosis), np.zeros(k))[f] += count
    members[:] = 0  # 2019 images balance among themselves, by class
    ext = units[~has_2020].sort_values(["diagnosis", "tie"])
    for u, diagnosis in zip(ext.index, ext.diagnosis, strict=True):
        place(u, no_mel, ("2019", diagnosis))

    fold = pd.Series(-1, index=table.index, dtype="int64")
    fold.loc[train.index] = fold_of[unit]
    return fold


def published_folds(table: pd.DataFrame, name: str) -> pd.Series:
    """The winners' fold maps from the tfrecord column (default, newfold, oldfold)."""
    if name not in ("default", "newfold", "oldfold"):
        raise ValueError(f"unknown fold map {name!r}; expected default, newfold or oldfold")
    if "tfrecord" not in table or table.loc[table.split == "train", "tfrecord"].isna().any():
        raise ValueError(
            f"fold map {name!r} needs the tfrecord column of the pre-resized CSVs "
            "(jpeg-melanoma-NxN, jpeg-isic2019-NxN) on every train row"
        )
    tf = table.tfrecord.astype("Int64")
    ext = table.is_ext == 1
    if name == "oldfold":
        fold = tf % 5
    elif name == "default":
        fold = tf.map(FOLD_MAPS["default"]).where(~ext, tf % 5)
    else:
        fold = (tf % 15).map(FOLD_MAPS["newfold"])
    fold = fold.where((table.split == "train") & (tf >= 0), -1)
    return fold.fillna(-1).astype("int64")


def make_folds(
    table: pd.DataFrame,
    method: str = "triple",
    k: int = 5,
    seed: int = 0,
    groups: pd.Series | None = None,
    dropped: Collection[str] = (),
) -> pd.Series:
    """Folds by method: 'triple' (patient_folds) or a published map by name."""
    if method == "triple":
        return patient_folds(table, k, seed, groups, dropped)
    fold = published_folds(table, method)
    return fold.where(~table.image_name.isin(set(dropped)), -1) if dropped else fold


def fold_rows(table: pd.DataFrame, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """The one fold contract: positions of the rows that train fold `fold` and of those that
    validate it, for every trainer (images and trees). Labelled rows (split train) of the other
    folds train it and its own rows validate it; rows at fold -1 (duplicates left out, rows no
    fold holds) do neither; pseudo-labelled rows (a true `pseudo` column) train every fold and
    validate none; test rows do neither."""
    labelled = (table.split == "train").to_numpy()
    at = table.fold.to_numpy()
    pseudo = table.pseudo.to_numpy(bool) if "pseudo" in table else np.zeros(len(table), bool)
    train = labelled & (((at != fold) & (at >= 0)) | pseudo)
    return np.flatnonzero(train), np.flatnonzero(labelled & (at == fold) & ~pseudo)


def fold_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per fold: images, patients, melanomas and the 2020 melanoma rate, 2019 share (ISIC 2024:
    malignant lesions and their rate), and the quantiles of the patients' image counts (q10,
    median, q90, max). Fold -1: left out."""
    train = table[table.split == "train"]
    rate_2020 = train[train.is_ext == 0].groupby("fold").diagnosis.apply(lambda d: d.isin(POSITIVE).mean())
    per_patient = train.dropna(subset=["patient_id"]).groupby(["fold", "patient_id"]).size()
    quantiles = per_patient.groupby("fold").quantile([0.1, 0.5, 0.9, 1.0]).unstack()
    quantiles.columns = ["patient_q10", "patient_median", "patient_q90", "patient_max"]
    summary = train.groupby("fold").agg(
        images=("image_name", "size"),
        patients=("patient_id", "nunique"),
        melanoma=("diagnosis", lambda d: int(d.isin(POSITIVE).sum())),
        isic2019_share=("is_ext", "mean"),
    )
    summary["melanoma_rate_2020"] = rate_2020
    if "source" in train and len(train) and (train.source == "isic2024").all():  # malignant, no 2019/2020
        summary = summary.drop(columns="isic2019_share").rename(columns={"melanoma": "malignant"})
        summary["malignant_rate"] = summary.pop("melanoma_rate_2020")
    return summary.join(quantiles)


def save_folds(table: pd.DataFrame, path: Path) -> Path:
    """Write image_name,fold for the train rows."""
    return write_csv(table.loc[table.split == "train", ["image_name", "fold"]], path)


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


def saved_k(data: Path) -> int | None:
    """The number of folds in DATA/folds.csv (None when there is no such file)."""
    path = DataFolder(data).folds
    if not path.is_file():
        return None
    folds = pd.read_csv(path, usecols=["fold"]).fold
    return int(folds.max()) + 1 if len(folds) else None


def write_folds(
    data: Path,
    method: str = "triple",
    k: int = 5,
    seed: int = 0,
    data_size: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> tuple[pd.DataFrame, Path]:
    """Folds of DATA's rows (confirmed duplicate groups from DATA/duplicates.csv share a fold, their
    dropped members get -1) written to DATA/folds.csv; returns the table with `fold` and the path.

    An existing DATA/folds.csv that assigns other folds is replaced only with `force` (runs trained
    on it refuse data with other folds); the same folds again write nothing."""
    from melanoma.data.dedup import load_duplicates
    from melanoma.data.ingest import ingest

    # Every image type of an archive download: a run on any of them finds its folds, and a patient's
    # clinical and dermoscopic images share one.
    table = ingest(data, data_size, verify="none", progress=progress, image_types=None)
    groups, dropped = load_duplicates(data)
    if groups is not None:
        console.print(
            f"Duplicates from {DataFolder(data).duplicates}: {len(dropped)} image(s) leave training"
        )
    table["fold"] = make_folds(table, method, k, seed, groups, dropped)
    path = DataFolder(data).folds
    if path.is_file():
        new = table.loc[table.split == "train", ["image_name", "fold"]].reset_index(drop=True)
        old = pd.read_csv(path, dtype={"image_name": str})
        same = list(old.columns) == ["image_name", "fold"] and len(old) == len(new)
        if (
            same
            and (old.image_name.to_numpy() == new.image_name.to_numpy()).all()
            and (old.fold.to_numpy() == new.fold.to_numpy()).all()
        ):
            return table, path  # the same folds: nothing to write
        if not force:
            moved = len(
                new.merge(old, how="outer", on=["image_name", "fold"], indicator=True).query(
                    "_merge == 'left_only'"
                )
            )
            raise ValueError(
                f"{path} exists with other folds ({moved} of {len(new)} rows would change; runs trained on "
                "it would refuse the new ones): pass --force to replace it"
            )
    return table, save_folds(table, path)
