"""Near-duplicate search against the generator's planted duplicates (OUT/truth/duplicates.csv).

Embeds the default demo data (or --data DIR), searches at each threshold, and prints recall (planted
pairs found, counting copies of one original as duplicates of each other) and precision (found
pairs that are planted). Run: .venv/bin/python benchmarks/dedup_quality.py [--size 96] [--views 8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.dedup import DEFAULT_THRESHOLD, embed, group_pairs, neighbour_pairs, whiten
from melanoma.data.ingest import ingest
from melanoma.demo import default_cache, synthetic_data
from melanoma.synthetic.generate import SynthConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--views", type=int, default=8, help="orientations averaged: 8, 4, 2 or 1")
    parser.add_argument("--thresholds", default="0.4,0.45,0.5,0.52,0.54,0.55,0.6,0.7")
    args = parser.parse_args()
    data = args.data or synthetic_data(default_cache(), SynthConfig(), progress=False)
    table = ingest(data, verify="none", progress=False)
    start = time.time()
    x = whiten(embed(table, args.size, progress=False, views=args.views))
    seconds = time.time() - start
    index = {n: i for i, n in enumerate(table.image_name)}
    truth = pd.read_csv(Path(data) / "truth" / "duplicates.csv")
    i = truth.groupby("group").image_name.first().map(index).to_numpy()
    j = truth.groupby("group").image_name.last().map(index).to_numpy()
    same = group_pairs(len(table), i, j)  # copies of one original are duplicates of each other too
    planted = {(min(a, b), max(a, b)) for a, b in zip(i, j, strict=True)}
    print(f"{len(table)} images, {len(planted)} planted pairs; embedding {seconds:.0f} s at {args.size} px, "
          f"{args.views} view(s)")  # fmt: skip
    print(f"{'threshold':>9s} {'recall':>7s} {'precision':>9s} {'pairs':>6s}")
    for threshold in sorted({float(v) for v in args.thresholds.split(",")} | {DEFAULT_THRESHOLD}):
        pairs = neighbour_pairs(x, threshold, progress=False)
        found = {(int(a), int(b)) for a, b in zip(pairs.i, pairs.j, strict=True)}
        true = sum(1 for a, b in found if same[a] >= 0 and same[a] == same[b])
        recall = len(planted & found) / len(planted)
        precision = true / len(found) if found else float("nan")
        mark = "  <- default" if threshold == DEFAULT_THRESHOLD else ""
        print(f"{threshold:9.2f} {recall:7.3f} {precision:9.3f} {len(found):6d}{mark}")
    print(f"(median similarity of planted pairs {np.median([x[a] @ x[b] for a, b in planted]):.3f})")


if __name__ == "__main__":
    main()
