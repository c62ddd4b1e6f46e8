"""The augmentation's measured figures against docs/recipe.md ("What each op did"), in both
pipelines: noise std and variance per channel on flat grey, mean displacement of a 512 coordinate
image at 384 (source pixels) for each distortion, and Cutout's erased share at 384. The same
draws as tests/inputs/test_recipe_ops.py, so the table in docs/recipe.md can be rerun.

Run: .venv/bin/python benchmarks/augmentation_figures.py  (about a minute)
"""

from __future__ import annotations

import argparse

import albumentations as A
import numpy as np

from melanoma.inputs import recipe_ops as R
from melanoma.inputs.fast_transforms import PROBABILITIES, FastTrainTransform

OFF = dict.fromkeys(PROBABILITIES, 0.0)
SOURCE, OUT = 512, 384
NOISE = 3  # the noise member of the first OneOf


def noise(pipeline: str) -> tuple[float, float]:
    """Mean per-channel std and variance of the noise on flat grey (128)."""
    flat = np.full((64, 64, 3), 128, np.uint8)
    if pipeline == "reference":
        op = R.VarianceNoise(p=1)
        op.set_random_seed(0)
        outputs = [op(image=flat)["image"] for _ in range(500)]
    else:
        t = FastTrainTransform(64, {**OFF, "blur": 1.0})
        t.set_random_seed(0)
        outputs = [o for o in (t(image=flat)["image"] for _ in range(2000)) if t.last["blur"] == NOISE]
    var = np.stack([o.astype(float) - 128 for o in outputs]).var(axis=(1, 2))
    return float(np.sqrt(var).mean()), float(var.mean())


def displacements() -> tuple[list[float], list[float]]:
    """Mean displacement (source px) of optical, grid and elastic: reference, then fast."""
    xs, ys = np.meshgrid(np.arange(SOURCE, dtype=np.float32), np.arange(SOURCE, dtype=np.float32))
    coords = np.dstack([xs, ys, np.zeros_like(xs)])
    centres = (np.arange(OUT) + 0.5) * SOURCE / OUT - 0.5
    ix, iy = np.meshgrid(centres, centres)

    def moved(out: np.ndarray) -> float:
        return float(np.mean(np.hypot(out[..., 0] - ix, out[..., 1] - iy)))

    ref = []
    for op, n in zip(R.distortion_group(), (60, 150, 40), strict=True):
        pipeline = A.Compose([op, A.Resize(OUT, OUT)], seed=1)
        ref.append(float(np.mean([moved(pipeline(image=coords)["image"]) for _ in range(n)])))
    fast = FastTrainTransform(OUT, {**OFF, "distortion": 1.0})
    fast.set_random_seed(2)
    by_member: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for _ in range(300):
        out = fast(image=coords)["image"]
        by_member[fast.last["distortion"]].append(moved(out))
    return ref, [float(np.mean(by_member[i])) for i in range(3)]


def cutout(pipeline: str) -> float:
    """Mean share of a 384 image Cutout erases."""
    white = np.full((OUT, OUT, 3), 255, np.uint8)
    if pipeline == "reference":
        op = R.cutout(OUT)
        op.set_random_seed(0)
        outs = (op(image=white)["image"] for _ in range(1500))
    else:
        t = FastTrainTransform(OUT, {**OFF, "cutout": 1.0})
        t.set_random_seed(0)
        outs = (t(image=white)["image"] for _ in range(1500))
    return float(np.mean([(o[..., 0] == 0).mean() for o in outs]))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    ref_d, fast_d = displacements()
    print("what                                          spec            reference       fast")
    rs, rv = noise("reference")
    fs, fv = noise("fast")
    print(
        f"noise std per channel (mean variance)         3.9 (U(5,30))   {rs:.2f} ({rv:.1f})     {fs:.2f} ({fv:.1f})"
    )
    print(
        "displacement optical / grid / elastic (group)  23/111/38 (55)  "
        f"{'/'.join(f'{d:.1f}' for d in ref_d)} ({np.mean(ref_d):.1f})  "
        f"{'/'.join(f'{d:.1f}' for d in fast_d)} ({np.mean(fast_d):.1f})"
    )
    print(
        f"Cutout erased share at 384                    0.127-0.129     {cutout('reference'):.4f}          {cutout('fast'):.4f}"
    )


if __name__ == "__main__":
    main()
