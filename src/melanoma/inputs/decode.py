"""Decoding image files: one function and one set of rules for every reader (ingest's check,
prepare, dedup, the training and prediction datasets, predict --images).

The rules:
- Any format Pillow reads; the first frame of a multi-frame file.
- The picture is kept whatever the pixel format: 16-bit greyscale is scaled to 8 bits (not
  clipped, which turns it white), 16-bit colour is read at its high byte, palette and
  greyscale images become RGB, an alpha channel is dropped (the colours stay, as OpenCV reads
  them), CMYK is converted to RGB, and the EXIF orientation is applied.
- Refused, with the file named: a file that is not an image, one whose header claims more than
  MAX_PIXELS pixels (checked before any pixel is decoded: a header-only file claiming a huge
  image would otherwise take gigabytes), one smaller than MIN_SIDE pixels a side, and one whose
  data stops early (truncated or header-only) or is damaged.
- A JPEG whose image data stops short of what its header declares is refused even when an
  end-of-image marker follows (a damaged transfer, a rewritten header): libjpeg then fills the rest
  with flat grey and only warns ("premature end of data segment"), which Pillow does not surface.
  So colour and greyscale JPEGs are decoded by libjpeg-turbo through simplejpeg, which raises on
  that warning, at the same DCT scale Pillow would choose (the pixels are identical to Pillow's:
  tests/system/test_hostile.py); other JPEGs (CMYK) and other formats go through Pillow. Measured per
  image (benchmarks/decode_strict.py, one process): on real-size ISIC photos (5.3 megapixels on
  average) 27 ms against Pillow's 53 for a full decode, 10 against 19 at prepare's 1024 px, 6.4
  against 6.9 for `--verify decode`; on 80-150 px images 0.02-0.07 ms more (0.28-0.40 ms).

Every refusal is an ImageError (a ValueError) whose message starts with the file's path.

An image may also live inside an HDF5 file, as ISIC 2024 ships its crops (one dataset per image
holding the JPEG's bytes): its path is "FILE.hdf5::KEY" (see hdf5_path). Each process opens its
own read-only handle, once, on first use (a handle must not cross a fork into loader workers),
and reads only the bytes of the image asked for, so memory stays bounded however large the file.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = int(os.environ.get("MELANOMA_MAX_PIXELS", 100_000_000))  # the largest ISIC photo has ~37 M
MIN_SIDE = 16
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height

_TAIL = 1024

Check = Literal["decode", "header"]


class ImageError(ValueError):
    """An image file that the rules refuse; the message names the file."""


HDF5_SEP = "::"
_HDF5_HANDLES: dict[str, tuple[int, object]] = {}  # file -> (pid that opened it, h5py.File)


def hdf5_path(file: str | Path, key: str) -> str:
    """The path of image KEY inside the HDF5 file FILE, as every reader here accepts it."""
    return f"{file}{HDF5_SEP}{key}"


def split_hdf5(path: str | Path) -> tuple[str, str] | None:
    """(file, key) of an image inside an HDF5 file, or None for an ordinary path."""
    text = str(path)
    file, sep, key = text.partition(HDF5_SEP)
    return (file, key) if sep and file.endswith((".hdf5", ".h5")) else None


def _hdf5_file(file: str) -> object:
    import h5py

    pid, handle = _HDF5_HANDLES.get(file, (None, None))
    if pid != os.getpid():  # first use in this process (a forked worker opens its own)
        handle = h5py.File(file, "r")
        _HDF5_HANDLES[file] = (os.getpid(), handle)
    return handle


def read_bytes(path: str | Path) -> bytes:
    """The bytes of an image file, or of an image inside an HDF5 file."""
    inside = split_hdf5(path)
    if inside is None:
        return Path(path).read_bytes()
    file, key = inside
    try:
        item = _hdf5_file(file)[key]
        if not hasattr(item, "dtype"):  # a group, not a dataset holding an image's bytes
            raise ImageError(f"{path}: {key!r} in {file} is an HDF5 group, not an image")
        return bytes(item[()])
    except FileNotFoundError as err:
        raise ImageError(f"{path}: no such file ({file})") from err
    except KeyError as err:
        raise ImageError(f"{path}: no image {key!r} in {file}") from err
    except (OSError, TypeError) as err:
        raise ImageError(f"{path}: {file} is not a readable HDF5 file ({err})") from err


def _open(path: str | Path, data: bytes | None = None) -> Image.Image:
    """Open (header only) and check what the header says: a known format, the pixel count and
    the smallest side. `data`: the file's bytes when already read (an HDF5 crop is read whole)."""
    try:
        if data is None and split_hdf5(path):
            data = read_bytes(path)
        with warnings.catch_warnings():  # Pillow warns above its own limit; ours is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path if data is None else io.BytesIO(data))
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError(f"{path}: no such file") from err
    except Image.DecompressionBombError as err:  # Pillow's own limit, above ours
        raise ImageError(f"{path}: more than the limit of {MAX_PIXELS:,} pixels ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{path}: not an image that can be decoded") from err
    except Exception as err:  # a header that stops early, or a damaged one
        raise ImageError(f"{path}: truncated or damaged ({type(err).__name__}: {err})") from err
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise ImageError(
            f"{path}: {width}x{height} is {width * height:,} pixels, more than the limit of {MAX_PIXELS:,} "
            "(set MELANOMA_MAX_PIXELS to allow more)"
        )
    if min(width, height) < MIN_SIDE:
        im.close()
        raise ImageError(f"{path}: {width}x{height} pixels; an image needs at least {MIN_SIDE} pixels a side")
    return im


def displayed_size(im: Image.Image) -> tuple[int, int]:
    """Width x height as shown, after the EXIF orientation (read from the header only)."""
    rotated = im.getexif().get(0x0112, 1) in _ROTATED
    return (im.height, im.width) if rotated else im.size


def image_size(path: str | Path) -> tuple[int, int]:
    """Width x height as shown, from the header (which the rules check; a PNG's EXIF may come
    after its pixels, so a PNG is read whole)."""
    with _open(path) as im:
        try:
            return displayed_size(im)
        except Exception as err:
            raise ImageError(f"{path}: truncated or damaged ({type(err).__name__}: {err})") from err


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in _SIXTEEN_BIT:
        grey = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)  # 65535 -> 255
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
    if im.mode == "F":
        raise ValueError("32-bit floating-point pixels (mode F) have no agreed 8-bit scale")
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    return im if im.mode == "RGB" else im.convert("RGB")


def decode(path: str | Path, at_least: int | None = None) -> Image.Image:
    """The picture in `path` as an RGB image, EXIF orientation applied.

    `at_least`: the shorter side may come out smaller than the file's, but not below this
    (a JPEG is then decoded at a reduced scale by libjpeg, which is much faster).
    """
    return decode_with_size(path, at_least)[0]


def decode_with_size(path: str | Path, at_least: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """decode(), and the file's own width x height as shown (before any reduced decoding)."""
    data = read_bytes(path) if split_hdf5(path) else None
    im = _open(path, data)
    try:
        size = displayed_size(im)  # a JPEG's orientation is in its header; a PNG is read here
        if at_least is not None:
            scale = at_least / min(im.size)
            if scale < 1:  # DCT scaling keeps the aspect ratio, so the stored orientation is fine
                im.draft("RGB", (math.ceil(im.width * scale), math.ceil(im.height * scale)))
        if im.format == "JPEG" and im.mode in ("RGB", "L"):
            out = _orient(_strict_jpeg(path, data, im), im.getexif().get(0x0112, 1))
        else:
            im.load()
            out = _to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except Exception as err:
        raise ImageError(f"{path}: truncated or damaged ({type(err).__name__}: {err})") from err
    finally:
        im.close()
    return out, size


def _strict_jpeg(path: str | Path, data: bytes | None, im: Image.Image) -> Image.Image:
    """The JPEG's pixels (RGB) at the size Pillow's draft chose for `im`; data that stops short of
    what the header declares is an ImageError, not a grey picture."""
    import simplejpeg

    if data is None:
        data = Path(path).read_bytes()
    width = simplejpeg.decode_jpeg_header(data)[1]
    try:  # the factor and the smallest size together pick the very scale Pillow's draft picked
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_factor=width / im.width, min_height=im.height, min_width=im.width
        )
    except ValueError as err:  # libjpeg's warnings and errors, raised (strict)
        raise ImageError(f"{path}: truncated or damaged JPEG ({err})") from None
    return Image.fromarray(pixels)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # the EXIF orientations, as ImageOps.exif_transpose applies them


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)


def read_rgb(path: str | Path) -> np.ndarray:
    """The picture in `path` as an RGB uint8 array (height x width x 3), by the rules above."""
    return np.asarray(decode(path))


def check_image(path: str | Path, how: Check = "decode") -> str:
    """'' if `path` passes the rules, else why not (the path is not repeated).

    decode: the whole file is decoded (at 1/8 scale for a JPEG: every byte is still read);
    header: the header rules, and for a JPEG that its end-of-image marker is there (near the end).
    """
    try:
        if how == "decode":
            decode(path, at_least=1)
        else:
            data = read_bytes(path) if split_hdf5(path) else None  # read once, for both checks
            with _open(path, data) as im:
                jpeg = im.format == "JPEG"
            if jpeg:  # cameras may pad after the end-of-image marker, so look at the last 1 KiB
                if data is not None:
                    tail = data[-_TAIL:]
                else:
                    with open(path, "rb") as f:
                        f.seek(-min(_TAIL, os.path.getsize(path)), os.SEEK_END)
                        tail = f.read()
                if b"\xff\xd9" not in tail:
                    return "truncated JPEG (no end-of-image marker)"
        return ""
    except ImageError as err:
        return str(err).removeprefix(f"{path}: ")
