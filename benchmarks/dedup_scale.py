"""Nearest-neighbour search at ISIC scale: 60,000 embeddings.

Widths: 300, what `melanoma dedup` searches (three Lite0 stages, 384 features, whitened to 300),
and 1,280, the width of the network's pooled head features.

Random unit vectors stand in for the embeddings; a few planted near-copies check that the search
still finds what it should. Prints the wall time and the peak resident memory of this process.
Run: .venv/bin/python benchmarks/dedup_scale.py [--n 60000] [--dim 300]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from melanoma.data.dedup import neighbour_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    planted = rng.choice(args.n, size=(100, 2), replace=False)
    x[planted[:, 1]] = x[planted[:, 0]] + 0.2 * rng.standard_normal((100, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.time()
    pairs = neighbour_pairs(x, args.threshold, progress=False)
    seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = set(zip(pairs.i, pairs.j, strict=True))
    hits = sum((min(a, b), max(a, b)) in found for a, b in planted)
    print(f"{args.n} x {args.dim} embeddings: neighbour search {seconds:.1f} s")
    print(
        f"peak resident memory {peak:.0f} MiB (embeddings alone {x.nbytes / 2**20:.0f} MiB; before search {before:.0f} MiB)"
    )
    print(f"planted near-copies found: {hits}/100; pairs above {args.threshold}: {len(pairs)}")


if __name__ == "__main__":
    main()
