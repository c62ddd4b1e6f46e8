"""Training input pipeline speed per core: the reference way against ours, on the same files.

Reference (the original way): cv2.imread, BGR to RGB, the full recipe of docs/recipe.md with
albumentations at the source resolution and Resize near the end, Normalize, then a float32 CHW
tensor per image. Ours (melanoma.fast_transforms): the same operations with the same
probabilities and ranges, geometry fused into one sampling at the output size, colour at the
output size, a uint8 CHW tensor (normalised later, on the device). One process, one thread, in
one run: JPEG 512 -> input 384 and JPEG 768 -> input 640. Also writes a PNG with sample grids of
both pipelines side by side (--samples, default docs/augmentation_samples.png).

Run: .venv/bin/python benchmarks/loader_speed.py [--files 40] [--passes 5]  (about 2 minutes)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from melanoma.inputs.decode import read_rgb
from melanoma.inputs.fast_transforms import FastTrainTransform
from melanoma.inputs.transforms import train_transform
from melanoma.models.weights import IMAGENET_MEAN, IMAGENET_STD
from melanoma.synthetic.render import render, sample_lesion, sample_patient


def reference_pipeline(size: int):  # noqa: ANN201
    transform = train_transform(size)

    def load(path: str) -> torch.Tensor:
        image = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return torch.from_numpy(transform(image=image)["image"].transpose(2, 0, 1).copy())

    return load, transform


def our_pipeline(size: int):  # noqa: ANN201
    transform = FastTrainTransform(size)

    def load(path: str) -> torch.Tensor:
        return torch.from_numpy(transform(image=read_rgb(path)).pop("image").transpose(2, 0, 1).copy())

    return load, transform


def rate(pipeline, files: list[str], passes: int) -> float:  # noqa: ANN001
    """Images per second over `passes` passes through the files, each image seeded the same way for
    both pipelines (as dataset.LesionDataset seeds it in training); the mean, not the best: the recipe's cost varies a lot from draw to draw (its
    full-size ElasticTransform alone takes 60-120 ms when drawn)."""
    load, transform = pipeline
    start = time.perf_counter()
    for k in range(passes):
        for i, f in enumerate(files):
            transform.set_random_seed(k * len(files) + i)  # per image, as the training dataset does
            load(f)
    return passes * len(files) / (time.perf_counter() - start)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    image = t.numpy().transpose(1, 2, 0)
    if image.dtype != np.uint8:  # normalised float: back to pixels for the picture
        image = np.clip((image * IMAGENET_STD + IMAGENET_MEAN) * 255, 0, 255).astype(np.uint8)
    return image


def sample_grid(files: list[str], size: int, out: Path, n: int = 4) -> None:
    ref, ref_t = reference_pipeline(size)
    ours, our_t = our_pipeline(size)
    ref_t.set_random_seed(1)
    our_t.set_random_seed(1)
    rows = []
    for f in files[:n]:
        left = np.hstack([to_uint8(ref(f)) for _ in range(4)])
        right = np.hstack([to_uint8(ours(f)) for _ in range(4)])
        gap = np.full((size, 16, 3), 255, np.uint8)
        rows.append(np.hstack([left, gap, right]))
    grid = np.vstack([np.vstack([r, np.full((8, r.shape[1], 3), 255, np.uint8)]) for r in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] // 2, grid.shape[0] // 2), Image.Resampling.LANCZOS).save(out)
    print(f"sample grids (left: reference, right: ours; 4 draws per image): {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--samples", type=Path, default=Path("docs/augmentation_samples.png"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"per core, images/s (mean over {args.passes} passes x {args.files} files)")
        print(f"{'JPEG -> input':>14s} {'reference':>10s} {'ours':>8s} {'ratio':>6s}")
        for source, size in [(512, 384), (768, 640)]:
            files = []
            for i in range(args.files):
                look = sample_patient(rng)
                kind = "melanoma" if i % 3 == 0 else "nevus"
                path = Path(tmp) / f"{source}_{i}.jpg"
                Image.fromarray(render(i, look, sample_lesion(rng, kind, look), source, source)).save(
                    path, quality=95
                )
                files.append(str(path))
            ref = rate(reference_pipeline(size), files, args.passes)
            ours = rate(our_pipeline(size), files, args.passes)
            print(f"{f'{source} -> {size}':>14s} {ref:10.1f} {ours:8.1f} {ours / ref:5.2f}x")
            if source == 512:
                sample_grid(files, size, args.samples)


if __name__ == "__main__":
    main()
