"""One decoder, one set of rules, for every reader of images."""

import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.inputs import decode as decoder
from melanoma.inputs.decode import ImageError, check_image, decode, read_rgb

RNG = np.random.default_rng(0)


def _picture(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth RGB picture with distinct channels and an asymmetric layout."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], -1).astype(np.uint8)


def _truncate(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height and which holds no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = struct.pack(">I", 1 << 20) + b"IDAT"  # pixel data announced, none there
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + idat)
    return path


def test_pixel_formats_keep_the_picture(tmp_path):
    rgb = _picture()
    grey = rgb[..., 0]
    # 16-bit greyscale: scaled to 8 bits, not clipped to white (what prepare did before)
    cv2.imwrite(str(tmp_path / "g16.png"), grey.astype(np.uint16) * 257)
    got = read_rgb(tmp_path / "g16.png")
    assert got.shape == (48, 64, 3) and np.abs(got[..., 0].astype(int) - grey).max() <= 1
    assert (got[..., 0] == got[..., 2]).all()
    # 16-bit colour: the high byte of each channel
    cv2.imwrite(str(tmp_path / "c16.png"), rgb[..., ::-1].astype(np.uint16) * 257)
    assert np.abs(read_rgb(tmp_path / "c16.png").astype(int) - rgb).max() <= 1
    # palette, greyscale + alpha, RGBA, CMYK, 1-bit
    Image.fromarray(rgb).quantize(256).save(tmp_path / "p.png")
    assert np.abs(read_rgb(tmp_path / "p.png").astype(int) - rgb).mean() < 4
    Image.fromarray(grey).convert("LA").save(tmp_path / "la.png")
    assert (read_rgb(tmp_path / "la.png")[..., 1] == grey).all()
    rgba = np.dstack([rgb, np.full(grey.shape, 7, np.uint8)])  # nearly transparent: colours kept
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert (read_rgb(tmp_path / "rgba.png") == rgb).all()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert np.abs(read_rgb(tmp_path / "cmyk.jpg").astype(int) - rgb).mean() < 3
    Image.fromarray((grey > 128).astype(np.uint8) * 255).convert("1").save(tmp_path / "bw.png")
    assert set(np.unique(read_rgb(tmp_path / "bw.png"))) == {0, 255}


def test_exif_orientation_is_applied(tmp_path):
    rgb = _picture()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored as is, shown rotated 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", quality=100, exif=exif)
    got = read_rgb(tmp_path / "rot.jpg")
    assert got.shape == (64, 48, 3)
    assert np.abs(got.astype(int) - np.rot90(rgb, -1)).mean() < 3
    assert decoder.image_size(tmp_path / "rot.jpg") == (48, 64)


def test_refused_files_are_named(tmp_path):
    noise = Image.fromarray(RNG.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    noise.save(tmp_path / "ok.jpg", quality=90)
    noise.save(tmp_path / "ok.png")
    cases = {
        "truncated": (_truncate(tmp_path / "ok.jpg", tmp_path / "half.jpg", 0.5), "truncated or damaged"),
        "truncated PNG": (_truncate(tmp_path / "ok.png", tmp_path / "half.png", 0.5), "truncated or damaged"),
        "header only": (_truncate(tmp_path / "ok.jpg", tmp_path / "head.jpg", 0.01), "truncated or damaged"),
        "not an image": (tmp_path / "text.jpg", "not an image"),
        "1x1": (tmp_path / "dot.png", "at least 16 pixels"),
        "huge header": (_png_header_only(tmp_path / "huge.png", 30000, 30000), "more than the limit"),
        "large header": (_png_header_only(tmp_path / "large.png", 12000, 10000), "more than the limit"),
        "header only, in limits": (_png_header_only(tmp_path / "empty.png", 5000, 4000), "truncated or"),
    }
    (tmp_path / "text.jpg").write_text("hello")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    for case, (path, message) in cases.items():
        with pytest.raises(ImageError, match=message) as err:
            decode(path)
        assert str(err.value).startswith(f"{path}: "), case
        assert message in check_image(path, "decode"), case
    # the header check is cheap: it sees what the header says and a missing JPEG end marker
    assert check_image(tmp_path / "half.jpg", "header") == "truncated JPEG (no end-of-image marker)"
    assert check_image(tmp_path / "half.png", "header") == ""  # only a full decode sees this one
    assert "more than the limit" in check_image(tmp_path / "huge.png", "header")
    assert check_image(tmp_path / "ok.jpg", "header") == check_image(tmp_path / "ok.jpg", "decode") == ""
    padded = tmp_path / "padded.jpg"  # some cameras write bytes after the end marker
    padded.write_bytes((tmp_path / "ok.jpg").read_bytes() + b"\0" * 100)
    assert check_image(padded, "header") == check_image(padded, "decode") == ""


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    Image.fromarray(_picture(100, 100)).save(tmp_path / "a.png")
    assert read_rgb(tmp_path / "a.png").shape == (100, 100, 3)
    monkeypatch.setattr(decoder, "MAX_PIXELS", 9_999)
    with pytest.raises(ImageError, match="100x100 is 10,000 pixels, more than the limit of 9,999"):
        read_rgb(tmp_path / "a.png")


def test_reduced_decoding_keeps_the_requested_size(tmp_path):
    Image.fromarray(np.kron(_picture(60, 80), np.ones((10, 10, 1), np.uint8))).save(tmp_path / "big.jpg")
    assert decode(tmp_path / "big.jpg").size == (800, 600)
    small = decode(tmp_path / "big.jpg", at_least=150)
    assert small.size == (200, 150)  # 1/4 scale: the smallest that keeps 150 pixels
    assert min(decode(tmp_path / "big.jpg", at_least=151).size) == 300


@pytest.fixture()
def broken_data(tiny_data, tmp_path) -> tuple[Path, dict[str, Path]]:
    """A copy of the tiny data with a 16-bit PNG, a truncated PNG (the header check cannot see
    that) and a header-only JPEG, each standing in for a training image (same .jpg names)."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    images = sorted((data / "isic2020" / "jpeg" / "train").glob("*.jpg"))
    grey16 = images[0]
    picture = np.asarray(Image.open(grey16).convert("L")).astype(np.uint16) * 257
    cv2.imwrite(str(grey16.with_suffix(".png")), picture)  # written as PNG under the .jpg name
    grey16.with_suffix(".png").replace(grey16)
    png = cv2.imencode(".png", cv2.imread(str(images[1])))[1].tobytes()
    images[1].write_bytes(png[: len(png) // 2])
    images[2].write_bytes(images[2].read_bytes()[:600])
    return data, {"grey16": grey16, "truncated": images[1], "header_only": images[2]}


def test_every_reader_follows_the_rules(broken_data, tmp_path, monkeypatch):
    from melanoma.data import dedup
    from melanoma.data.checks import DataError
    from melanoma.data.ingest import ingest
    from melanoma.data.prepare import prepare
    from melanoma.inputs.dataset import LesionDataset

    data, files = broken_data
    # ingest's full check names both broken files; the 16-bit one passes
    with pytest.raises(DataError, match="2 image") as err:
        ingest(data, verify="decode", progress=False)
    assert str(files["truncated"]) in str(err.value) and str(files["header_only"]) in str(err.value)
    assert str(files["grey16"]) not in str(err.value)
    # prepare: the 16-bit image keeps its picture (it came out white before); broken ones are listed
    report = prepare(data, tmp_path / "prepared", sizes=(32,), workers=1, progress=False)
    assert set(report.failed.image_path) == {str(files["truncated"]), str(files["header_only"])}
    assert report.failed.error.str.contains("truncated or damaged").all()
    listed = pd.read_csv(tmp_path / "prepared" / "prepare_report.csv")
    assert len(listed) == 2
    out = next((tmp_path / "prepared").glob(f"jpeg-melanoma-32x32/train/{files['grey16'].stem}.jpg"))
    made, expected = read_rgb(out).astype(float), np.asarray(Image.open(files["grey16"])) / 257
    h, w = expected.shape
    side = min(h, w)
    centre = expected[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    assert made.mean() < 250 and abs(made.mean() - centre.mean()) < 4  # prepare's centre square, not white
    # the training dataset refuses the truncated file by name
    table = ingest(data, verify="none", progress=False)
    row = table.index[table.image_path == str(files["truncated"])]
    dataset = LesionDataset(table.loc[row], lambda image: {"image": image})
    with pytest.raises(ImageError, match=f"{files['truncated']}: truncated or damaged"):
        dataset[0]
    # dedup embeds nothing it cannot decode: the header-only file is refused before any work,
    # and the truncated PNG when the embedding decodes it
    monkeypatch.setattr(dedup, "embed", lambda *a, **k: pytest.fail("embedded a header-only file"))
    with pytest.raises(DataError, match=f"{files['header_only']}: truncated"):
        dedup.find_duplicates(data, progress=False)
    shutil.copy(
        next(p for p in files["grey16"].parent.glob("*.jpg") if p not in files.values()), files["header_only"]
    )
    monkeypatch.undo()
    with pytest.raises(ImageError, match=f"{files['truncated']}: truncated or damaged"):
        dedup.find_duplicates(data, progress=False)


def test_predict_images_refuses_broken_files_by_name(tiny_runs, broken_data, tmp_path):
    from melanoma.data.checks import DataError
    from melanoma.evaluation.predict import predict_images

    _, files = broken_data
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in files.values():
        shutil.copy(f, folder)
    with pytest.raises(DataError, match="2 image") as err:
        predict_images(tiny_runs["plain"], [folder], progress=False)
    assert f"{folder / files['truncated'].name}: truncated or damaged" in str(err.value)
    assert f"{folder / files['header_only'].name}: truncated or damaged" in str(err.value)
    out = predict_images(tiny_runs["plain"], [folder / files["grey16"].name], progress=False)
    assert len(out) == 1 and out.melanoma.between(0, 1).all()
