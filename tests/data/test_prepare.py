import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.data.folds import published_folds
from melanoma.data.ingest import ingest
from melanoma.data.prepare import load_square, prepare

from .test_ingest import write_2020


@pytest.fixture
def odd(tmp_path):
    """A 2020 layout whose images are awkward in every way the real archives are."""
    root = tmp_path / "data"
    write_2020(root)
    train, test = root / "jpeg/train", root / "jpeg/test"
    # EXIF orientation 6 (shown rotated 90 degrees clockwise): left half red, right half blue.
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (255, 0, 0)
    pixels[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(train / "ISIC_0100001.jpg", exif=exif, quality=95)
    Image.new("L", (50, 30), 128).save(train / "ISIC_0100002.jpg")  # grayscale
    Image.new("CMYK", (30, 50), (0, 255, 255, 0)).save(train / "ISIC_0100003.jpg")  # CMYK, red
    Image.new("RGB", (20, 20), (0, 200, 0)).save(test / "ISIC_0200001.jpg", format="PNG")  # PNG named .jpg
    return root


def test_odd_inputs(odd, tmp_path):
    out = tmp_path / "out"
    report = prepare(odd, out, sizes=(32,), workers=1, progress=False)
    assert report.written == 5 and len(report.failed) == 0
    folder = out / "jpeg-melanoma-32x32"
    rotated = np.asarray(Image.open(folder / "train/ISIC_0100001.jpg"))
    assert rotated.shape == (32, 32, 3)
    assert rotated[2, 16, 0] > 200 and rotated[2, 16, 2] < 60  # red on top after the EXIF rotation
    assert rotated[29, 16, 2] > 200 and rotated[29, 16, 0] < 60  # blue at the bottom
    gray = Image.open(folder / "train/ISIC_0100002.jpg")
    assert gray.mode == "RGB" and np.ptp(np.asarray(gray).astype(int), axis=2).max() <= 2
    cmyk = np.asarray(Image.open(folder / "train/ISIC_0100003.jpg")).astype(int)
    assert cmyk[16, 16, 0] > 200 and cmyk[16, 16, 1] < 60
    png = np.asarray(Image.open(folder / "test/ISIC_0200001.jpg")).astype(int)
    assert png[16, 16, 1] > 150 and png[16, 16, 0] < 60
    train = pd.read_csv(folder / "train.csv").set_index("image_name")
    assert train.loc["ISIC_0100001", ["width", "height"]].tolist() == [40, 60]  # as displayed
    assert train.loc["ISIC_0100002", ["width", "height"]].tolist() == [50, 30]


def test_unreadable_files_are_reported_not_fatal(odd, tmp_path):
    bad = odd / "jpeg/train/ISIC_0100002.jpg"
    good = odd / "jpeg/train/ISIC_0100003.jpg"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 3])  # truncated JPEG
    (odd / "jpeg/test/ISIC_0200002.jpg").write_bytes(b"")  # zero bytes
    out = tmp_path / "out"
    report = prepare(odd, out, sizes=(16, 24), workers=2, progress=False)
    assert sorted(report.failed.image_name) == ["ISIC_0100002", "ISIC_0200002"]
    listed = pd.read_csv(out / "prepare_report.csv")
    assert sorted(listed.image_name) == ["ISIC_0100002", "ISIC_0200002"] and listed.error.str.len().min() > 0
    for size in (16, 24):
        folder = out / f"jpeg-melanoma-{size}x{size}"
        assert sorted(p.name for p in (folder / "train").iterdir()) == [
            "ISIC_0100001.jpg",
            "ISIC_0100003.jpg",
        ]
        assert "ISIC_0100002" not in set(pd.read_csv(folder / "train.csv").image_name)
        # what was written reads back through the pre-resized layout
    assert len(ingest(out, data_size=16, progress=False)) == 3


def test_generator_data_round_trip_and_published_folds(tiny_data, tmp_path):
    out = tmp_path / "out"
    report = prepare(tiny_data, out, sizes=(32, 48), progress=False)
    original = ingest(tiny_data, verify="none", progress=False)
    assert report.written == len(original) and report.skipped == 0
    prepared = ingest(out, data_size=48, progress=False)
    assert sorted(prepared.image_name) == sorted(original.image_name)
    merged = prepared.merge(original, on="image_name", suffixes=("", "_orig"))
    for col in ["patient_id", "diagnosis", "target", "is_ext", "split", "sex", "anatom_site"]:
        assert merged[col].equals(merged[f"{col}_orig"]), col
    with Image.open(prepared.image_path.iloc[0]) as im:
        assert im.size == (48, 48)
    train = prepared[prepared.split == "train"]
    assert set(train.tfrecord) == set(range(15))
    assert train.groupby("patient_id").tfrecord.nunique().max() == 1
    assert set(published_folds(prepared, "default")[prepared.split == "train"]) == {0, 1, 2, 3, 4}
    again = prepare(tiny_data, out, sizes=(32, 48), progress=False)
    assert again.written == 0 and again.skipped == len(original)


def test_square_decode_covers_the_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (10, 20, 30)).save(path)
    square, size = load_square(path, 300)
    assert size == (3000, 2000)
    assert square.width == square.height and 300 <= square.width < 2000  # decoded at reduced scale


def test_resumes_after_a_kill(tiny_data, tmp_path):
    out = tmp_path / "out"
    code = (
        "from melanoma.data.prepare import prepare; "
        f"prepare({str(tiny_data)!r}, {str(out)!r}, sizes=(400, 600), workers=1, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    folder = out / "jpeg-melanoma-600x600" / "train"
    deadline = time.time() + 60
    while time.time() < deadline and (not folder.is_dir() or len(list(folder.glob("*.jpg"))) < 10):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list(out.rglob("*.jpg"))
    assert 10 <= len(done)
    for path in done:  # nothing truncated: every file written completely decodes
        with Image.open(path) as im:
            im.load()
    total = len(ingest(tiny_data, verify="none", progress=False))
    assert len(done) < 2 * total, "the run finished before it could be killed"
    report = prepare(tiny_data, out, sizes=(400, 600), workers=2, progress=False)
    assert report.skipped >= len(done) // 2 - 1
    assert report.skipped + report.written == total
    assert len(list(out.rglob("*.jpg"))) == 2 * total
    assert not list(out.rglob(".*.part"))
    assert not list(out.rglob("*.tmp"))  # temporary files are named PATH.tmp (fileio)
    assert os.path.isfile(out / "jpeg-melanoma-400x400" / "train.csv")
