"""Estimated skin tone: the individual typology angle (ITA) of the healthy skin around a lesion.

ISIC 2019 and 2020 carry no skin-type labels, so the field estimates one from the pixels:
ITA = arctan((L* - 50) / b*) in degrees, from CIELAB L* and b* of the skin (Chardon et al. 1991),
binned as Kinyanjui et al. (2020) did for dermoscopy (> 55 very light, 48-55, 41-48, 34.5-41,
28-34.5, 19-28, 10-19, <= 10 dark). The skin is what is left of the picture once the lesion and
whatever is darker than skin are taken out: the centre disc where dermoscopy puts the lesion, then
the corners beyond the inscribed circle (where a dermoscope's vignette falls), then every pixel
much darker than the rest (the lesion's edge, hair, ruler marks; a robust distance below the median
L*); the colour of what is left, each channel averaged over its 10th-90th percentiles (trimmed),
gives L* and b*, so a lighting gradient and leftover hair or glare move them little. ISIC 2024 measures the skin around each lesion itself (tbp_lv_Lext,
tbp_lv_Bext): ita() takes those.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from melanoma.inputs.decode import decode

# (lower bound, name), lightest first: an ITA above the bound falls in the group (Kinyanjui 2020).
ITA_BINS = (
    (55.0, "very light (> 55)"),
    (48.0, "light 1 (48-55)"),
    (41.0, "light 2 (41-48)"),
    (34.5, "intermediate 1 (34.5-41)"),
    (28.0, "intermediate 2 (28-34.5)"),
    (19.0, "tan 1 (19-28)"),
    (10.0, "tan 2 (10-19)"),
    (-np.inf, "dark (<= 10)"),
)
SIDE = 128  # the picture is read at about this size: skin colour needs no detail
CENTRE = 0.3  # radius of the centre disc left out, as a share of the short side
INSIDE = 0.5  # and the corners beyond the inscribed circle, where a dermoscope's vignette falls
DARKER = 3.0  # pixels this many robust deviations below the median L* are not skin
TRIM = (10, 90)  # percentiles of each channel averaged


def ita(lightness: np.ndarray | float, b: np.ndarray | float) -> np.ndarray | float:
    """The individual typology angle in degrees from CIELAB L* and b* (arctan2: b* <= 0 is defined)."""
    return np.degrees(np.arctan2(np.asarray(lightness, dtype=float) - 50.0, np.asarray(b, dtype=float)))


def ita_group(angle: float | pd.Series) -> str | pd.Series:
    """The Kinyanjui et al. (2020) group of an ITA (or of each in a Series; NaN gives 'unknown')."""

    def one(a: float) -> str:
        if a is None or not np.isfinite(a):
            return "unknown"
        return next(name for bound, name in ITA_BINS if a > bound)

    return angle.map(one) if isinstance(angle, pd.Series) else one(angle)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8, or floats in 0..1) to CIELAB under D65: L* in 0..100, a* and b* about -128..127."""
    rgb = np.asarray(rgb)
    floats = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    shape = floats.shape
    lab = cv2.cvtColor(floats.reshape(-1, 1, 3), cv2.COLOR_RGB2LAB)
    return lab.reshape(shape)


def skin_mask(rgb: np.ndarray) -> np.ndarray:
    """Which pixels of an RGB picture read as healthy skin: between the centre disc and the inscribed
    circle, and not much darker than the median of those."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) / min(h, w)
    ring = (radius > CENTRE) & (radius < INSIDE)
    lightness = rgb_to_lab(rgb)[..., 0]
    median = np.median(lightness[ring])
    spread = 1.4826 * np.median(np.abs(lightness[ring] - median)) + 0.5  # MAD as a standard deviation
    return ring & (lightness >= median - DARKER * spread)


def image_ita(rgb: np.ndarray) -> float:
    """The estimated ITA of the skin in an RGB picture (uint8, height x width x 3): of the skin
    pixels' colour, each channel averaged over its 10th-90th percentiles (averaged as colours, then
    converted: L* is not linear, so the mean of L* over a textured skin is darker than its colour)."""
    h, w = rgb.shape[:2]
    scale = SIDE / min(h, w)
    if scale < 1:
        rgb = cv2.resize(
            rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    skin = rgb[skin_mask(rgb)].astype(np.float64) / 255.0
    if len(skin) < 20:
        return float("nan")
    low, high = np.percentile(skin, TRIM, axis=0)
    kept = (skin >= low) & (skin <= high)
    colour = np.array([skin[kept[:, c], c].mean() for c in range(3)], np.float32)
    lab = rgb_to_lab(colour[None])[0]
    return float(ita(lab[0], lab[2]))


def file_ita(path: str | Path) -> float:
    """The estimated ITA of an image file (decoded at about SIDE pixels a side)."""
    return image_ita(np.asarray(decode(path, at_least=SIDE)))


def estimate(paths: Iterable[str | Path]) -> np.ndarray:
    """The estimated ITA of each image file, in order."""
    return np.array([file_ita(p) for p in paths], dtype=float)
