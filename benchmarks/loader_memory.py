"""Peak memory of the training loader at 8 workers (fast pipeline, uint8 batches).

Renders JPEGs at 512, then iterates a DataLoader exactly as training builds it (8 workers, batch
48 at 384, prefetch 2 per worker) and samples, every 50 ms, the proportional set size (PSS: shared
pages split between the processes that share them) of the main process and every worker, summed.
Also prints what one batch occupies in shared memory as uint8 and as float32.

Run: .venv/bin/python benchmarks/loader_memory.py [--workers 8] [--batches 40]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from melanoma.inputs.dataset import LesionDataset
from melanoma.inputs.fast_transforms import FastTrainTransform
from melanoma.inputs.loader import PREFETCH, batch_bytes, make_loader
from melanoma.synthetic.render import render, sample_lesion, sample_patient


def pss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(64):
            look = sample_patient(rng)
            path = Path(tmp) / f"{i}.jpg"
            Image.fromarray(render(i, look, sample_lesion(rng, "nevus", look), 512, 512)).save(
                path, quality=95
            )
            paths.append(str(path))
        rows = pd.DataFrame({"image_path": paths * 40, "target": 0})
        ds = LesionDataset(rows, FastTrainTransform(args.size))
        ds.reseed(0)
        loader = make_loader(ds, args.batch_size, args.workers, shuffle=True, drop_last=True)
        it = iter(loader)
        peak, peak_main, done = 0.0, 0.0, False

        def sample() -> None:
            nonlocal peak, peak_main
            while not done:
                pids = [w.pid for w in getattr(it, "_workers", None) or []]
                main = pss_mib(os.getpid())
                peak_main = max(peak_main, main)
                peak = max(peak, main + sum(pss_mib(p) for p in pids))
                time.sleep(0.05)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        start = time.perf_counter()
        n = 0
        for _ in range(args.batches):
            try:
                batch = next(it)
            except StopIteration:
                break
            n += 1
            time.sleep(0.02)  # a consumer that is not instantaneous
        done = True
        watcher.join()
        seconds = time.perf_counter() - start
        it = None  # stop the workers before their files go
    one = batch_bytes(args.batch_size, args.size, 1)
    print(
        f"{args.workers} workers, batch {args.batch_size} at {args.size} px, prefetch {PREFETCH} per worker"
    )
    print(
        f"one batch in shared memory: {one / 2**20:.1f} MiB as uint8 ({4 * one / 2**20:.1f} MiB as float32)"
    )
    print(
        f"batches in flight at most: {args.workers * PREFETCH} = {args.workers * PREFETCH * one / 2**20:.0f} MiB"
    )
    print(
        f"peak PSS, main + workers: {peak:.0f} MiB (main alone {peak_main:.0f} MiB); {n} batches in {seconds:.0f} s"
    )
    print(f"batches are {batch['image'].dtype}")


if __name__ == "__main__":
    main()
