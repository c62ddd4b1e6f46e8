"""Image-quality flags: what a picture is too poor to be scored for, said per image.

Read at about SIDE pixels a side (the flags need no detail): no colour (a greyscale picture: skin
and lesions always have some; mean saturation below GREY), blurry (the variance of the Laplacian
of the grey picture below BLUR), under-exposed (mean grey below DARK, or most pixels near black),
over-exposed (mean grey above BRIGHT, or a large share of pixels clipped at white), too small (a
side shorter than half the model's input, so the model would see it upscaled). The thresholds
are fixed, documented numbers (docs/commands.md gives what they flag on the synthetic images);
the flags go in a column beside the scores, and no row is ever dropped for them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from melanoma.inputs.decode import decode_with_size

SIDE = 256
BLUR = 20.0  # variance of the Laplacian (grey levels squared) at SIDE px
DARK, BRIGHT = 35.0, 225.0  # mean grey level
CLIPPED = 0.25  # share of pixels at 250 or above (over) or 5 or below (under)
GREY = 0.04  # mean HSV saturation (0..1) below which a picture has no colour: skin always has some


def quality_flags(rgb: np.ndarray, original: tuple[int, int], input_size: int) -> list[str]:
    """The flags of one picture (uint8 RGB at about SIDE px) whose file is `original` (width,
    height), for a model of `input_size` px; empty when it passes."""
    h, w = rgb.shape[:2]
    scale = SIDE / min(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    flags = []
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    if float(saturation.mean()) < GREY * 255:
        flags.append("no colour (greyscale)")
    if cv2.Laplacian(grey, cv2.CV_64F).var() < BLUR:
        flags.append("blurry")
    mean = float(grey.mean())
    if mean < DARK or np.mean(grey <= 5) > CLIPPED:
        flags.append("under-exposed")
    if mean > BRIGHT or np.mean(grey >= 250) > CLIPPED:
        flags.append("over-exposed")
    if min(original) < input_size / 2:
        flags.append(f"too small ({original[0]}x{original[1]} for {input_size} px)")
    return flags


def file_flags(path: str | Path, input_size: int) -> str:
    """The flags of an image file, joined by '; ' ('' when it passes)."""
    image, size = decode_with_size(path, at_least=SIDE)
    return "; ".join(quality_flags(np.asarray(image), size, input_size))
