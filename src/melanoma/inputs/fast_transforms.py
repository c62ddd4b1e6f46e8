"""The winners' training augmentation, rebuilt to be fast on the CPU; uint8 in, uint8 out.

Every operation of the recipe (transforms.train_transform) is kept with the same probability and
the same parameter ranges; albumentations itself samples each operation's parameters. What changes
is where the pixels are touched:

- Geometry is fused. The recipe resamples the full-resolution image three times (one of Optical /
  Grid / Elastic distortion, then the shift-scale-rotate Affine, then Resize). Here the three
  coordinate maps are composed and the source image is sampled once, directly at the output size:
  one warpAffine without a distortion, else one remap whose map is composed on a grid 4 pixels
  apart and interpolated (the maps are smooth). The distortion maps are computed on a quarter of
  the source size; the elastic field is generated there with its scale adjusted so that its
  displacements have the same distribution as at full size.
- Colour operations (brightness, contrast, CLAHE with the same 8 x 8 tiles, hue-saturation-value)
  run after the geometry, at the output size, on uint8 through lookup tables. They act pixel by
  pixel (CLAHE tile by tile) so their order relative to the geometry does not change what they do;
  the black border the Affine adds is blacked again after them, as in the recipe where the border
  appears after the colour changes.
- Flips and transposes (the dihedral group) are applied last, as array views: the other operations'
  parameter distributions are symmetric under them, so the output distribution is the same.
- Blur and noise stay at the source resolution, before the geometry, as in the recipe (kernel sizes
  are in source pixels). The blurs, the elastic affine, GridDistortion's steps and Cutout are
  recipe_ops.py's (albumentations 0.4.6's behaviour); the noise is drawn by the same rule (variance
  uniform in [5, 30], every pixel and channel, truncated) in integers here.
- No normalisation: the uint8 image goes to the device, which normalises (model.MelanomaNet).
"""

from __future__ import annotations

import math

import albumentations as A
import cv2
import numpy as np

from melanoma.inputs.recipe_ops import NOISE_VARIANCE, blur_group, cutout, distortion_group

COARSE = 4  # distortion maps are computed at 1/COARSE of the source size
# The recipe's probabilities (docs/recipe.md); blur and distortion are OneOf groups.
PROBABILITIES = {
    "transpose": 0.5, "vflip": 0.5, "hflip": 0.5, "brightness": 0.75, "contrast": 0.75, "blur": 0.7,
    "distortion": 0.7, "clahe": 0.7, "hsv": 0.5, "affine": 0.85, "cutout": 0.7,
}  # fmt: skip


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


class FastTrainTransform:
    """Callable like an albumentations transform: t(image=uint8 HxWx3 RGB) -> {"image": uint8 SxSx3}.

    `last` records which operations the latest call applied (for tests and for curiosity).
    """

    def __init__(self, size: int, p: dict[str, float] | None = None) -> None:
        unknown = set(p or {}) - set(PROBABILITIES)
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)}; known: {', '.join(PROBABILITIES)}")
        self.p = {**PROBABILITIES, **(p or {})}  # the recipe's unless a test says otherwise
        self.size = size
        self.blurs = blur_group()  # motion, median, Gaussian blur (used as they are) and noise (below)
        self.optical, self.grid, self.elastic = distortion_group()  # maps taken, composed, sampled once
        self.brightness = A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0, p=1)
        self.contrast = A.RandomBrightnessContrast(brightness_limit=0, contrast_limit=0.2, p=1)
        self.clahe = A.CLAHE(clip_limit=4.0, p=1)
        self.hsv = A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=10, p=1)
        self.affine = A.Affine(
            translate_percent=(-0.1, 0.1),
            scale=(0.9, 1.1),
            rotate=(-15, 15),
            border_mode=cv2.BORDER_CONSTANT,
            p=1,
        )
        self.cutout = cutout(size)
        self.rng = np.random.default_rng()
        self.last: dict[str, object] = {}
        self._white = np.zeros((0, 0), np.uint8)

    def _members(self) -> list:
        return [
            *self.blurs, self.optical, self.grid, self.elastic, self.brightness, self.contrast, self.clahe,
            self.hsv, self.affine, self.cutout,
        ]  # fmt: skip

    def set_random_seed(self, seed: int) -> None:
        """Seed every random choice (the same seed gives the same output)."""
        self.rng = np.random.default_rng(seed)
        for t in self._members():
            t.set_random_seed(_seed(self.rng))

    def __call__(self, *, image: np.ndarray) -> dict[str, np.ndarray]:
        rng, last, p = self.rng, {}, self.p
        # Decisions in the recipe's order, with its probabilities.
        transpose, vflip, hflip = (rng.random(3) < [p["transpose"], p["vflip"], p["hflip"]]).tolist()
        bright, contrast = (rng.random(2) < [p["brightness"], p["contrast"]]).tolist()
        blur = int(rng.integers(4)) if rng.random() < p["blur"] else None  # OneOf: members alike
        distort = int(rng.integers(3)) if rng.random() < p["distortion"] else None
        clahe, hsv = rng.random() < p["clahe"], rng.random() < p["hsv"]
        affine, cutout = rng.random() < p["affine"], rng.random() < p["cutout"]
        last.update(
            transpose=transpose, vflip=vflip, hflip=hflip, brightness=bright, contrast=contrast, blur=blur,
            distortion=distort, clahe=clahe, hsv=hsv, affine=affine, cutout=cutout,
        )  # fmt: skip
        if blur is not None:  # at the source resolution, as in the recipe
            image = self._noise(image) if blur == 3 else self.blurs[blur](image=image)["image"]
        out, inside = self._geometry(image, distort, affine)
        if bright:
            out = self.brightness(image=out)["image"]
        if contrast:
            out = self.contrast(image=out)["image"]
        if clahe:
            out = self.clahe(image=out)["image"]
        if hsv:
            out = self.hsv(image=out)["image"]
        if inside is not None:
            out = cv2.bitwise_and(out, out, mask=inside)  # the Affine's border stays black
        if cutout:
            out = self.cutout(image=out)["image"]
        if transpose:
            out = out.transpose(1, 0, 2)
        if vflip:
            out = out[::-1]
        if hflip:
            out = out[:, ::-1]
        self.last = last
        return {"image": out}  # may be a flipped view: the dataset copies it once, to CHW

    def _noise(self, image: np.ndarray) -> np.ndarray:
        """GaussNoise of the recipe (variance uniform in [5, 30], normal noise for every pixel and
        channel) added in integers with saturation, without a float copy of the image. Normal noise
        of mean -0.5 rounded to integers is the recipe's float noise truncated (floor)."""
        channels = 1 if image.ndim == 2 else image.shape[2]
        std = math.sqrt(self.rng.uniform(*NOISE_VARIANCE))
        noise = np.empty(image.shape, np.int16)
        cv2.setRNGSeed(int(self.rng.integers(2**31 - 1)))  # OpenCV's generator, seeded from ours
        cv2.randn(noise, (-0.5,) * channels, (std,) * channels)  # a scalar would fill channel 0 only
        return cv2.add(image, noise, dtype=cv2.CV_8U)

    def _geometry(
        self, image: np.ndarray, distort: int | None, affine: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Distortion, Affine and Resize as one sampling of the source image at the output size.
        Returns the image and, with the Affine, the mask of pixels that come from inside the source."""
        h, w = image.shape[:2]
        s = self.size
        # Forward maps between pixel centres: R (source -> output size), A (the Affine).
        resize = np.array([[s / w, 0, 0.5 * s / w - 0.5], [0, s / h, 0.5 * s / h - 0.5], [0, 0, 1]])
        a = self.affine.get_params_dependent_on_data({"shape": (h, w)}, {})["matrix"] if affine else np.eye(3)
        forward = resize @ a
        inside = None
        if affine:  # pixels mostly covered by the source under the Affine (resampled like the image)
            if self._white.shape != (h, w):  # made once per source size, not per image
                self._white = np.full((h, w), 255, np.uint8)
            cover = cv2.warpAffine(self._white, forward[:2], (s, s), flags=cv2.INTER_LINEAR)
            inside = cv2.threshold(cover, 127, 1, cv2.THRESH_BINARY)[1]
        if distort is None:  # linear: one warp
            out = cv2.warpAffine(
                image, forward[:2], (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
            )
            return out, inside
        # Non-linear: the composed map on a coarse grid of output pixels, interpolated to all.
        n = max(2, s // COARSE)
        centres = (np.arange(n, dtype=np.float64) + 0.5) * (s / n) - 0.5
        qx, qy = np.meshgrid(centres, centres)
        inv = np.linalg.inv(forward)
        xs = (inv[0, 0] * qx + inv[0, 1] * qy + inv[0, 2]).astype(np.float32)
        ys = (inv[1, 0] * qx + inv[1, 1] * qy + inv[1, 2]).astype(np.float32)
        xs, ys = self._distortion_map(distort, h, w, xs, ys)
        map_x = cv2.resize(xs, (s, s), interpolation=cv2.INTER_LINEAR)
        map_y = cv2.resize(ys, (s, s), interpolation=cv2.INTER_LINEAR)
        out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        return out, inside

    def _distortion_map(
        self, which: int, h: int, w: int, xs: np.ndarray, ys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Where the distortion takes each point (xs, ys) from, in source pixels, reflected at the
        edges as the recipe's distortions do (BORDER_REFLECT_101)."""
        ch, cw = max(2, h // COARSE), max(2, w // COARSE)
        fy, fx = h / ch, w / cw
        if which == 2:
            map_x, map_y = self._elastic_map(ch, cw, min(fx, fy))
        else:
            t = self.optical if which == 0 else self.grid
            maps = t.get_params_dependent_on_data({"shape": (ch, cw)}, {})
            map_x, map_y = maps["map_x"], maps["map_y"]
        # Sample the coarse maps at the points (in coarse coordinates), then back to source pixels.
        cx = (xs + 0.5) / fx - 0.5
        cy = (ys + 0.5) / fy - 0.5
        sx = cv2.remap(map_x.astype(np.float32), cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        sy = cv2.remap(map_y.astype(np.float32), cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        sx, sy = _reflect101((sx + 0.5) * fx - 0.5, w), _reflect101((sy + 0.5) * fy - 0.5, h)
        if which == 2:  # the elastic op warped the source by its affine first: read through it
            inv = cv2.invertAffineTransform(self.elastic.affine_matrix(h, w))
            sx, sy = (
                _reflect101(inv[0, 0] * sx + inv[0, 1] * sy + inv[0, 2], w),
                _reflect101(inv[1, 0] * sx + inv[1, 1] * sy + inv[1, 2], h),
            )
        return sx, sy

    def _elastic_map(self, ch: int, cw: int, f: float) -> tuple[np.ndarray, np.ndarray]:
        """The recipe's elastic field (alpha 3, sigma 50 source pixels) generated on the coarse grid
        (recipe_ops.AffineElastic.field), as the coarse points it takes each coarse point from."""
        dx, dy = self.elastic.field(ch, cw, coarse=f)
        gx, gy = np.meshgrid(np.arange(cw, dtype=np.float32), np.arange(ch, dtype=np.float32))
        return gx + dx, gy + dy


def _reflect101(v: np.ndarray, n: int) -> np.ndarray:
    """Coordinates reflected into [0, n - 1] as OpenCV's BORDER_REFLECT_101 does."""
    if n == 1:
        return np.zeros_like(v)
    period = 2 * (n - 1)
    v = np.abs(np.mod(v, period))
    return np.where(v > n - 1, period - v, v).astype(np.float32)
