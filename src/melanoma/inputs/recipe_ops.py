"""The recipe's operations that albumentations 2.x no longer performs as the winners' 0.4.6 did.

docs/recipe.md ("What each op did") lists the differences; each class here is an
albumentations 2.x transform (seeded and composed like any other) that behaves as 0.4.6 did:

- RecipeBlur: MotionBlur / MedianBlur / GaussianBlur with the kernel size drawn from {3, 5} only;
  GaussianBlur's sigma follows from the kernel as OpenCV's rule for sigma 0 gives it (0.8 and 1.1);
  MotionBlur's kernel is a line between two random cells of the k x k kernel, normalised.
  (2.x with blur_limit=5 also draws "no blur", and Gaussian kernels up to 21 wide.)
- VarianceNoise: Gaussian noise whose variance (not its std) is drawn uniformly in [5, 30],
  independent for every pixel and channel, added in float and truncated back to uint8.
- AffineElastic: ElasticTransform with the random affine 2.x removed (alpha_affine: the three
  reference points each move by up to +-50 px), then the elastic field (uniform noise smoothed with
  sigma 50, times alpha 3: a small fraction of a pixel; the affine carries the displacement).
- CornerCutout: one square hole whose centre is uniform over the image; a hole that starts above
  or left of the image is shifted in, one that runs off the bottom or right is cut (0.4.6's rule:
  mean erased share 0.128 for a 0.375 side, not 0.141).

GridDistortion needs no class of its own: 2.x with normalized=False draws 0.4.6's steps.
"""

from __future__ import annotations

import math
import random
from typing import Any

import albumentations as A
import cv2
import numpy as np

BLUR_KINDS = ("motion", "median", "gaussian")
BLUR_KERNELS = (3, 5)  # 0.4.6's blur_limit=5: odd sizes from 3 to 5
NOISE_VARIANCE = (5.0, 30.0)  # in (0..255 units)^2
REFLECT = cv2.BORDER_REFLECT_101  # 0.4.6's border for the distortions (2.x pads with black)


def motion_kernel(k: int, rnd: random.Random) -> np.ndarray:
    """0.4.6's motion-blur kernel: a one-pixel line between two random cells of a k x k grid
    (two distinct rows when the columns coincide), normalised to sum 1."""
    kernel = np.zeros((k, k), np.uint8)
    x0, x1 = rnd.randint(0, k - 1), rnd.randint(0, k - 1)
    if x0 == x1:
        y0, y1 = rnd.sample(range(k), 2)
    else:
        y0, y1 = rnd.randint(0, k - 1), rnd.randint(0, k - 1)
    cv2.line(kernel, (x0, y0), (x1, y1), 1, thickness=1)
    return kernel.astype(np.float32) / kernel.sum()


class RecipeBlur(A.ImageOnlyTransform):
    """One of 0.4.6's blurs (`kind`: motion, median or gaussian), kernel size 3 or 5."""

    def __init__(self, kind: str = "gaussian", p: float = 0.5) -> None:
        super().__init__(p=p)
        if kind not in BLUR_KINDS:
            raise ValueError(f"kind must be one of {BLUR_KINDS}, got {kind!r}")
        self.kind = kind

    def get_params(self) -> dict[str, Any]:
        """The kernel size, and for motion blur the kernel."""
        k = self.py_random.choice(BLUR_KERNELS)
        return {"ksize": k, "kernel": motion_kernel(k, self.py_random) if self.kind == "motion" else None}

    def apply(
        self, img: np.ndarray, ksize: int = 3, kernel: np.ndarray | None = None, **params: Any
    ) -> np.ndarray:
        """Blur with the drawn kernel."""
        if self.kind == "gaussian":
            return cv2.GaussianBlur(img, (ksize, ksize), 0)  # sigma 0: OpenCV's rule from the size
        if self.kind == "median":
            return cv2.medianBlur(img, ksize)
        return cv2.filter2D(img, -1, kernel)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("kind",)


def noise_std(rnd: random.Random, variance: tuple[float, float] = NOISE_VARIANCE) -> float:
    """0.4.6's GaussNoise draw: the variance uniform in the range, the std its square root."""
    return math.sqrt(rnd.uniform(*variance))


class VarianceNoise(A.ImageOnlyTransform):
    """GaussNoise(var_limit=(5, 30)) as 0.4.6 ran it on uint8 images: normal noise with the drawn
    std for every pixel and channel, added in float, clipped to 0..255 and truncated."""

    def __init__(self, variance: tuple[float, float] = NOISE_VARIANCE, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.variance = tuple(variance)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """The noise of every pixel and channel."""
        std = noise_std(self.py_random, self.variance)
        return {"noise": self.random_generator.normal(0.0, std, params["shape"]).astype(np.float32)}

    def apply(self, img: np.ndarray, noise: np.ndarray, **params: Any) -> np.ndarray:
        """Add the noise (uint8 images)."""
        if img.dtype != np.uint8:
            raise TypeError(f"VarianceNoise works on uint8 images, got {img.dtype}")
        return np.clip(img + noise, 0, 255).astype(np.uint8)  # astype truncates, as 0.4.6 did

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("variance",)


class AffineElastic(A.ImageOnlyTransform):
    """ElasticTransform(alpha, sigma, alpha_affine) as in 0.4.6: a random affine warp, then the
    elastic displacement field, both with the REFLECT_101 border."""

    def __init__(
        self, alpha: float = 3.0, sigma: float = 50.0, alpha_affine: float = 50.0, p: float = 0.5
    ) -> None:
        super().__init__(p=p)
        self.alpha, self.sigma, self.alpha_affine = float(alpha), float(sigma), float(alpha_affine)

    def affine_matrix(self, h: int, w: int) -> np.ndarray:
        """The 2 x 3 forward affine: three points around the centre, each moved by up to
        +-alpha_affine px. (0.4.6 built the centre as (h, w) // 2 and used it as (x, y): kept.)"""
        centre = np.float32((h, w)) // 2
        d = min(h, w) // 3
        before = np.float32([centre + d, [centre[0] + d, centre[1] - d], centre - d])
        moves = self.random_generator.uniform(-self.alpha_affine, self.alpha_affine, size=before.shape)
        return cv2.getAffineTransform(before, (before + moves).astype(np.float32))

    def field(self, h: int, w: int, coarse: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Elastic displacements (dx, dy) in px of an h x w grid: uniform noise in [-1, 1] smoothed
        with a Gaussian of sigma px (reflected edges, 4 sigma wide, as scipy's gaussian_filter),
        times alpha. On a grid `coarse` times coarser than the image (the fast pipeline), sigma is
        sigma / coarse there; smoothed white noise grows as 1 / sigma, so alpha / coarse^2 gives
        displacements (in coarse px) with the full grid's distribution."""
        sigma, alpha = self.sigma / coarse, self.alpha / coarse**2
        out = []
        for _ in range(2):
            noise = self.random_generator.uniform(-1, 1, (h, w)).astype(np.float32)
            out.append(cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) * alpha)
        return out[0], out[1]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """The affine matrix and the displacement field for this image's size."""
        h, w = params["shape"][:2]
        dx, dy = self.field(h, w)
        return {"matrix": self.affine_matrix(h, w), "dx": dx, "dy": dy}

    def apply(
        self, img: np.ndarray, matrix: np.ndarray, dx: np.ndarray, dy: np.ndarray, **params: Any
    ) -> np.ndarray:
        """Warp, then displace."""
        h, w = img.shape[:2]
        warped = cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=REFLECT)
        x, y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return cv2.remap(warped, x + dx, y + dy, cv2.INTER_LINEAR, borderMode=REFLECT)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("alpha", "sigma", "alpha_affine")


class CornerCutout(A.ImageOnlyTransform):
    """Cutout(num_holes=1, max_h_size=max_w_size=hole) as in 0.4.6: the hole's centre is drawn
    over the whole image (ends included); its top-left corner is clipped into the image and the
    hole then cut at the bottom and right edges. Filled with 0."""

    def __init__(self, hole: int, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.hole = int(hole)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """The hole as (x1, y1, x2, y2)."""
        h, w = params["shape"][:2]
        y, x = self.py_random.randint(0, h), self.py_random.randint(0, w)
        y1 = min(max(y - self.hole // 2, 0), h)
        x1 = min(max(x - self.hole // 2, 0), w)
        return {"box": (x1, y1, min(x1 + self.hole, w), min(y1 + self.hole, h))}

    def apply(self, img: np.ndarray, box: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        """Black out the hole (on a copy)."""
        x1, y1, x2, y2 = box
        out = img.copy()
        out[y1:y2, x1:x2] = 0
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("hole",)


def blur_group() -> list[A.BasicTransform]:
    """The recipe's first OneOf: motion, median and Gaussian blur, and Gaussian noise."""
    return [*(RecipeBlur(kind, p=1) for kind in BLUR_KINDS), VarianceNoise(p=1)]


def distortion_group() -> list[A.BasicTransform]:
    """The recipe's second OneOf: optical, grid (un-normalised steps) and elastic (with its affine)."""
    return [
        A.OpticalDistortion(distort_limit=1.0, border_mode=REFLECT, p=1),
        A.GridDistortion(num_steps=5, distort_limit=1.0, normalized=False, border_mode=REFLECT, p=1),
        AffineElastic(alpha=3, sigma=50, alpha_affine=50, p=1),
    ]


def cutout(size: int, p: float = 1.0) -> CornerCutout:
    """The recipe's Cutout at an image size: one hole of int(0.375 x size) px."""
    return CornerCutout(hole=int(size * 0.375), p=p)
