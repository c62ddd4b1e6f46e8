"""Crop-and-resize speed per core: our reduced-size decode against a full cv2 decode.

Reference (the usual way): cv2.imread the full 6000x4000 JPEG, centre crop, cv2.resize with
INTER_AREA to 512. Ours (melanoma.data.prepare.load_square + resize): libjpeg DCT scaling through PIL's
draft mode, centre crop, LANCZOS resize. Same files, one process, in one run.
Run: .venv/bin/python benchmarks/prepare_speed.py [--files 6] [--size 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from melanoma.data.prepare import load_square
from melanoma.synthetic.render import render, sample_lesion, sample_patient


def reference(path: str, size: int) -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return cv2.resize(image[y : y + s, x : x + s], (size, size), interpolation=cv2.INTER_AREA)


def ours(path: str, size: int) -> np.ndarray:
    square, _ = load_square(path, size)
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))


def timed(fn, files: list[str], size: int, repeats: int = 3) -> tuple[float, list[np.ndarray]]:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = [fn(f, size) for f in files]
        best = min(best, time.perf_counter() - start)
    return best / len(files), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.files):
            look = sample_patient(rng)
            pixels = render(i, look, sample_lesion(rng, "nevus", look), 6000, 4000)
            path = Path(tmp) / f"img{i}.jpg"
            Image.fromarray(pixels).save(path, quality=95)
            files.append(str(path))
        ref_s, ref_out = timed(reference, files, args.size)
        our_s, our_out = timed(ours, files, args.size)
    diff = np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(ref_out, our_out, strict=True)])
    print(f"6000x4000 JPEG -> {args.size}, {args.files} files, one core")
    print(f"reference (cv2 full decode + crop + INTER_AREA): {1000 * ref_s:7.1f} ms/image")
    print(f"ours (draft decode + crop + LANCZOS):            {1000 * our_s:7.1f} ms/image")
    print(f"speed-up: {ref_s / our_s:.2f}x   mean absolute pixel difference: {diff:.2f} / 255")


if __name__ == "__main__":
    main()
