"""Nearest-neighbour search at ISIC scale: 60,000 embeddings.

Widths: 300, what `melanoma dedup` searches (three Lite0 stages, 384 features, whitened to 300),
and 1,280, the width of the network's pooled head features.

Random unit vectors stand in for the embeddings; a few planted near-copies check that the search
still finds what it should. Prints the wall time and the peak resident memory of this process.
--method exact (every pair, n^2), hnsw (faiss's HNSW graph, about n log n) or both (and how many of
the exact pairs the graph finds).
--data DATA: instead of random vectors, the embeddings `melanoma dedup DATA --image-size 64` cached
(whitened, threshold 0.55 as dedup searches), the first --n rows, with the planted duplicates of a
synthetic DATA (truth/duplicates.csv) as the copies to find (benchmarks/scale.py --keep leaves such a
folder: its 1.00/data).
Run: .venv/bin/python benchmarks/dedup_scale.py [--n 60000] [--dim 300] [--method both] [--data DATA]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from melanoma.data.dedup import DEFAULT_THRESHOLD, neighbour_pairs, whiten


def _data_embeddings(data: Path, n: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The first n cached embeddings of DATA, whitened, and the planted duplicate pairs among them."""
    import pandas as pd

    from melanoma.data.ingest import ingest

    table = ingest(data, verify="none", progress=False)
    x = whiten(np.load(data / "dedup" / "embeddings_64.npy")[:n])
    position = {name: i for i, name in enumerate(table.image_name[: len(x)])}
    planted = []
    for _, group in pd.read_csv(data / "truth" / "duplicates.csv").groupby("group"):
        rows = sorted(position[name] for name in group.image_name if name in position)
        planted += [(a, b) for k, a in enumerate(rows) for b in rows[k + 1 :]]
    return x, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--method", choices=["exact", "hnsw", "both"], default="exact")
    parser.add_argument("--data", type=Path, default=None, help="a synthetic data folder dedup has embedded")
    args = parser.parse_args()
    if args.data is not None:
        x, planted = _data_embeddings(args.data, args.n)
        args.n, args.dim, args.threshold = len(x), x.shape[1], DEFAULT_THRESHOLD
    else:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
        planted = rng.choice(args.n, size=(100, 2), replace=False)
        x[planted[:, 1]] = x[planted[:, 0]] + 0.2 * rng.standard_normal((100, args.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found_by = {}
    for method in ("exact", "hnsw") if args.method == "both" else (args.method,):
        start = time.time()
        pairs = neighbour_pairs(x, args.threshold, progress=False, method=method)
        seconds = time.time() - start
        found = set(zip(pairs.i, pairs.j, strict=True))
        found_by[method] = found
        hits = sum((min(a, b), max(a, b)) in found for a, b in planted)
        print(f"{args.n} x {args.dim} embeddings, {method}: neighbour search {seconds:.1f} s; planted near-copies "
              f"found: {hits}/{len(planted)}; pairs above {args.threshold}: {len(pairs)}")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak resident memory {peak:.0f} MiB (embeddings alone {x.nbytes / 2**20:.0f} MiB; before search {before:.0f} MiB)"
    )
    if len(found_by) == 2:
        both = len(found_by["exact"] & found_by["hnsw"])
        print(f"hnsw finds {both} of the {len(found_by['exact'])} pairs the exact search finds")


if __name__ == "__main__":
    main()
