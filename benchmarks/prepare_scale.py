"""`prepare` on real-size images, extrapolated to the real download.

Writes a synthetic dataset at real sizes (`melanoma synth --sizes real`: 6000x4000 and the other
ISIC 2020 / 2019 shapes), then times `prepare` into 512, 768 and 1024 px with one process and with
every core, and `ingest` (header check) of the same folder. The real download is 69,439 images
(33,126 + 10,982 from 2020, 25,331 from 2019); the extrapolation assumes prepare scales with the
number of images (per-image work) and with cores up to the disk's speed (not measured here).

    python benchmarks/prepare_scale.py [--images 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from melanoma.data.ingest import ingest
from melanoma.data.prepare import prepare
from melanoma.synthetic.generate import SynthConfig, generate

REAL_IMAGES = 33_126 + 10_982 + 25_331


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="about this many images in all")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prepare_scale_"))
    try:
        data = work / "data"
        n = max(20, args.images // 2)
        start = time.perf_counter()
        generate(data, SynthConfig(n_train_2020=n, n_test_2020=20, n_2019=max(20, args.images - n - 20),
                                   duplicate_rate=0.0, sizes="real"), progress=False)  # fmt: skip
        made = time.perf_counter() - start
        start = time.perf_counter()
        table = ingest(data, progress=False)
        ingest_s = time.perf_counter() - start
        size_gb = sum(os.path.getsize(p) for p in table.image_path) / 1e9
        cores = os.cpu_count() or 1
        per_image = {}
        for workers in sorted({1, cores}):
            out = work / f"out{workers}"
            start = time.perf_counter()
            report = prepare(data, out, workers=workers, progress=False)
            per_image[workers] = (time.perf_counter() - start) / len(table)
            assert report.failed.empty and report.written == len(table)
        print(
            f"{len(table)} real-size images ({size_gb:.2f} GB, written in {made:.0f} s); {cores} cores here"
        )
        print(f"ingest (header check): {ingest_s:.2f} s = {1000 * ingest_s / len(table):.1f} ms per image "
              f"-> {_minutes(ingest_s / len(table) * REAL_IMAGES)} for the real {REAL_IMAGES:,}")  # fmt: skip
        print(f"{'prepare to 512, 768, 1024':<28}{'per image':>12}{'real download':>16}")
        one = per_image[1]
        print(f"{'1 process':<28}{1000 * one:>10.0f} ms{_minutes(one * REAL_IMAGES):>16}")
        if cores > 1:
            print(f"{f'{cores} processes (measured)':<28}{1000 * per_image[cores]:>10.0f} ms"
                  f"{_minutes(per_image[cores] * REAL_IMAGES):>16}")  # fmt: skip
        for c in (2, 16):
            print(
                f"{f'{c} cores (1 process / {c})':<28}{1000 * one / c:>10.0f} ms{_minutes(one / c * REAL_IMAGES):>16}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
