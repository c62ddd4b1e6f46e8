"""What refusing JPEGs cut short costs: the strict decoder (libjpeg-turbo through simplejpeg, which
raises on libjpeg's "premature end of data" warning) against Pillow's decode, which fills the rest
with grey, per image, on real-size synthetic ISIC images (`melanoma synth --sizes real`: 6000x4000
and the other ISIC 2020 / 2019 shapes) and on the demo's small ones.

Times, per image, on one process: a full decode, a reduced one as prepare does it (`at_least` 512
and 1024, DCT scaling), and `ingest --verify decode`'s check (at_least 1: 1/8 scale). Both decoders
read the same bytes and give the same pixels (tests/system/test_hostile.py pins that).

    python benchmarks/decode_strict.py [--images 40]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

from melanoma.inputs.decode import decode
from melanoma.synthetic.generate import SynthConfig, generate


def pillow_decode(path: Path, at_least: int | None) -> Image.Image:
    """The decode every reader used before: Pillow's draft (DCT scaling), load, EXIF orientation."""
    with Image.open(path) as im:
        if at_least is not None and at_least / min(im.size) < 1:
            scale = at_least / min(im.size)
            im.draft("RGB", (math.ceil(im.width * scale), math.ceil(im.height * scale)))
        im.load()
        return ImageOps.exif_transpose(im).convert("RGB")


def per_image_ms(files: list[Path], read, at_least: int | None, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for path in files:
            read(path, at_least)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="about this many images of each size")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="decode_strict_"))
    try:
        for sizes in ("real", "small"):
            data = work / sizes
            n = max(20, args.images // 2)
            cfg = SynthConfig(n_train_2020=n, n_test_2020=20, n_2019=20, duplicate_rate=0.0, sizes=sizes)
            generate(data, cfg, progress=False)
            every = sorted(data.rglob("*.jpg"))
            files = [
                every[i] for i in random.Random(0).sample(range(len(every)), min(args.images, len(every)))
            ]
            pixels = []
            for path in files:
                with Image.open(path) as im:
                    pixels.append(im.width * im.height)
                path.read_bytes()  # in the page cache for both decoders
            print(f"{len(files)} {sizes} images ({sum(pixels) / len(pixels) / 1e6:.1f} megapixels on average), "
                  "per image on one process (best of 3):")  # fmt: skip
            for label, at_least in (("full decode", None), ("prepare at 1024", 1024), ("prepare at 512", 512),
                                    ("ingest --verify decode", 1)):  # fmt: skip
                old = per_image_ms(files, pillow_decode, at_least, 3)
                new = per_image_ms(files, decode, at_least, 3)
                print(f"  {label:24s} Pillow {old:8.2f} ms   strict {new:8.2f} ms   ({new / old - 1:+.0%})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
