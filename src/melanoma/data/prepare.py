"""Preparation: centre-crop every image to a square and resize it, writing the pre-resized layout.

Output, for each size N: jpeg-melanoma-NxN/{train.csv,test.csv,train/,test/} and
jpeg-isic2019-NxN/{train.csv,train/}, the layout of the winners' downloaded copies, so prepared
data and those copies are read the same way afterwards (`ingest(..., data_size=N)`).

Speed: a JPEG is decoded at reduced size by libjpeg's DCT scaling (PIL's draft mode) to the
smallest power-of-two scale that still covers the largest requested size, then cropped and
resized once per size. Every core works; finished outputs are skipped, so a killed run resumes;
each file is written to a temporary name and renamed, so a kill never leaves a truncated JPEG.
Files that cannot be read are listed in prepare_report.csv and do not stop the batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from melanoma.data.dedup import load_duplicates
from melanoma.data.folds import patient_folds
from melanoma.data.formats import COLUMNS_2020_TEST, COLUMNS_2020_TRAIN
from melanoma.data.ingest import ingest
from melanoma.fileio import atomic_write, check_output, write_csv
from melanoma.inputs.decode import ImageError, decode_with_size, image_size
from melanoma.progress import console, map_chunks

DEFAULT_SIZES = (512, 768, 1024)
REPORT = "prepare_report.csv"  # in OUT; also marks OUT's jpeg-*-NxN folders as prepare's
N_TFRECORDS = 15  # as the winners: 15 triple-stratified groups, 3 per fold


def load_square(path: str | Path, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decode an image at the smallest scale that still covers `size` after a centre crop.

    Returns the centre square (RGB, EXIF orientation applied) and the original width x height.
    """
    im, (width, height) = decode_with_size(path, at_least=size)
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    return im.crop((left, top, left + side, top + side)), (width, height)


def _write_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="JPEG", quality=quality))


def prepare_one(src: str, targets: list[tuple[int, str]], quality: int = 95) -> tuple[int, int, str]:
    """Write each (size, path) square of `src`; returns (width, height, error) of the original."""
    try:
        square, (width, height) = load_square(src, max(size for size, _ in targets))
    except ImageError as err:  # one bad file is reported, not fatal; a failing write (disk full) is
        return 0, 0, str(err).removeprefix(f"{src}: ")
    for size, dst in targets:
        out = square if square.width == size else square.resize((size, size), Image.Resampling.LANCZOS)
        _write_jpeg(out, Path(dst), quality)
    return width, height, ""


def _chunk(jobs: list[tuple[str, list[tuple[int, str]]]], quality: int) -> list[tuple[int, int, str]]:
    return [prepare_one(src, targets, quality) for src, targets in jobs]


@dataclass
class PrepareReport:
    """What prepare did."""

    written: int
    skipped: int
    failed: pd.DataFrame  # image_name, source, image_path, error


def _folder(out: Path, source: str, size: int) -> Path:
    return out / (f"jpeg-melanoma-{size}x{size}" if source == "isic2020" else f"jpeg-isic2019-{size}x{size}")


def prepare(
    data: Path,
    out: Path,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    workers: int = 0,
    quality: int = 95,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> PrepareReport:
    """Centre-crop and resize every image under DATA (original ISIC layouts) into OUT.

    A jpeg-*-NxN folder in OUT that prepare did not write (OUT has no prepare_report.csv), such
    as a downloaded pre-resized copy, is written into only with `force`."""
    if not sizes or min(sizes) < 8:
        raise ValueError(f"sizes must be a list of square sizes of at least 8 pixels, got {sizes}")
    table = ingest(data, verify="none", progress=progress)
    if (table.source == "isic2024").any():
        raise ValueError(
            f"{data}: ISIC 2024 crops are small squares (about 60-240 px), read from their HDF5 file as they "
            "are; there is nothing to prepare (train and predict read DATA directly)"
        )
    if (table.source == "archive").any():
        raise ValueError(
            f"{data}: an ISIC Archive download is read as downloaded (train and predict read DATA "
            "directly); prepare writes the ISIC 2020 / 2019 layouts only"
        )
    out = Path(out)
    check_output(out, folder=True, inputs=sorted({Path(p).parent for p in table.image_path}))
    theirs = [
        _folder(out, source, size)
        for source in table.source.unique()
        for size in sizes
        if (_folder(out, source, size) / "train.csv").is_file()
    ]
    if theirs and not (out / REPORT).is_file() and not force:
        raise ValueError(
            f"{theirs[0]} holds data that prepare did not write (no {out / REPORT}): "
            "choose another OUT, or pass --force to write into it"
        )
    for source, split in table[["source", "split"]].drop_duplicates().itertuples(index=False):
        for size in sizes:
            folder = _folder(out, source, size) / split
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.part"):  # left by a killed run
                stale.unlink()
    jobs, indices, skipped = [], [], 0
    for i, row in enumerate(table.itertuples(index=False)):
        targets = [
            (size, str(_folder(out, row.source, size) / row.split / f"{row.image_name}.jpg"))
            for size in sizes
        ]
        todo = [t for t in targets if not Path(t[1]).is_file()]
        if todo:
            jobs.append((row.image_path, todo))
            indices.append(i)
        else:
            skipped += 1
    workers = workers or os.cpu_count() or 1
    results = map_chunks(_chunk, jobs, "prepare: crop and resize", workers, progress, extra=(quality,))
    width, height = np.zeros(len(table), int), np.zeros(len(table), int)
    error = np.full(len(table), "", dtype=object)
    for i, (w, h, err) in zip(indices, results, strict=True):
        width[i], height[i], error[i] = w, h, err
    for i in sorted(set(range(len(table))) - set(indices)):  # done before: size from the header
        width[i], height[i] = image_size(table.image_path.iat[i])
    table["width"], table["height"], table["error"] = width, height, error
    failed = table[table.error != ""]
    report_path = out / REPORT
    write_csv(failed[["image_name", "source", "split", "image_path", "error"]], report_path)
    if len(failed):
        console.print(
            f"[yellow]{len(failed)} image(s) could not be read; listed in {report_path} and left out of the CSVs"
        )
    _write_tables(table[table.error == ""], out, sizes, seed, data)
    return PrepareReport(
        len(jobs) - len(failed), skipped, failed[["image_name", "source", "image_path", "error"]]
    )


def _write_tables(table: pd.DataFrame, out: Path, sizes: tuple[int, ...], seed: int, data: Path) -> None:
    """train.csv / test.csv per size: the 2020 columns plus tfrecord, width, height.

    tfrecord: 15 triple-stratified groups; -1 for duplicates dropped by DATA/duplicates.csv.
    """
    table = table.copy()
    groups, dropped = load_duplicates(data)
    table["tfrecord"] = patient_folds(table, k=N_TFRECORDS, seed=seed, groups=groups, dropped=dropped)
    table["benign_malignant"] = (table.diagnosis == "melanoma").map({True: "malignant", False: "benign"})
    table["target"] = (table.diagnosis == "melanoma").astype(int)
    table = table.rename(columns={"raw_diagnosis": "diagnosis_raw"})
    table["diagnosis"] = table.diagnosis_raw
    table["anatom_site_general_challenge"] = table.anatom_site
    table.loc[table.source == "isic2019", "patient_id"] = "-1"
    extra = ["tfrecord", "width", "height"]
    for size in sizes:
        for (source, split), rows in table.groupby(["source", "split"]):
            columns = (COLUMNS_2020_TRAIN if split == "train" else COLUMNS_2020_TEST) + extra
            path = _folder(out, source, size) / f"{split}.csv"
            write_csv(rows[columns], path)
