"""Triple-stratified folds on a synthetic set of 5,000+ ISIC 2020 images (plus 2019).

Prints the per-fold table and the largest gap between a fold's 2020 melanoma rate and the overall
rate (the goal: under 0.5 percentage points), on generator data with its planted duplicates tied.
Run: .venv/bin/python benchmarks/folds_balance.py [--n-train 5000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from melanoma.data.folds import fold_summary, patient_folds
from melanoma.data.ingest import ingest
from melanoma.synthetic.generate import SynthConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthConfig(n_train_2020=args.n_train, n_test_2020=100, n_2019=2500, seed=5)
        generate(Path(tmp), cfg, progress=False)
        table = ingest(Path(tmp), verify="none", progress=False)
        truth = pd.read_csv(Path(tmp) / "truth" / "duplicates.csv")
    groups = pd.Series(truth.group.to_numpy(), index=truth.image_name)
    table["fold"] = patient_folds(table, k=5, seed=0, groups=groups)
    summary = fold_summary(table)
    train = table[(table.split == "train") & (table.is_ext == 0)]
    overall = (train.diagnosis == "melanoma").mean()
    print(summary.round(4).to_string())
    print(f"\n{len(train)} ISIC 2020 train images, melanoma rate {100 * overall:.2f}%")
    print(
        f"largest fold gap from it: {100 * (summary.melanoma_rate_2020 - overall).abs().max():.2f} percentage points"
    )
    print(
        f"patients in two folds: {int((table[table.split == 'train'].groupby('patient_id').fold.nunique() > 1).sum())}"
    )
    fold_of = table.set_index("image_name").fold
    in_folds = truth.assign(fold=truth.image_name.map(fold_of)).query("fold >= 0")  # test rows have none
    print(f"duplicate groups split across folds: {int((in_folds.groupby('group').fold.nunique() > 1).sum())}")


if __name__ == "__main__":
    main()
