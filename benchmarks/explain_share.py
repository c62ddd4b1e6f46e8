"""Where Grad-CAM heatmaps fall: the share of each heatmap's mass inside the lesion.

Synthetic data whose truth records each lesion's centre and radius; an ImageNet-pretrained
EfficientNet-Lite0 (offline weights) fine-tuned on fold 0; then Grad-CAM of the melanoma score
(8 orientations averaged) for fold 0's out-of-fold rows, by the fold-0 model. Printed: the mean
share of heatmap mass inside the lesion's nominal circle (and inside 1.25 x its radius, where
streaks end) for melanomas, for the 20 rows scored highest, and for the other lesions, against the
share a uniform heatmap would put there. docs/commands.md quotes these figures.

    python benchmarks/explain_share.py            # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.config import TrainConfig
from melanoma.data.ingest import ingest
from melanoma.evaluation.explain import heatmaps, lesion_in_square, lesion_share
from melanoma.rundir import latest_oof
from melanoma.synthetic.generate import SynthConfig, generate
from melanoma.training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-2019", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="explain_share_"))
    try:
        data, run = work / "data", work / "run"
        generate(data, SynthConfig(n_train_2020=args.n_train, n_test_2020=20, n_2019=args.n_2019,
                                   duplicate_rate=0.0, seed=args.seed), workers=2, progress=False)  # fmt: skip
        table = ingest(data, verify="none", progress=False)
        cfg = TrainConfig(out=str(run), backbone="tf_efficientnet_lite0", pretrained=True, image_size=args.image_size,
                          batch_size=16, lr=1e-4, epochs=args.epochs, folds=[0], num_workers=2)  # fmt: skip
        metrics = train(table, cfg, progress=False)
        oof = latest_oof(run)
        rows = table.set_index("image_name").loc[oof.image_name].reset_index().assign(fold=0)
        maps, _ = heatmaps(run, rows, None, None, tta=True, progress=False)
        truth = pd.read_csv(data / "truth" / "images.csv").set_index("image_name").loc[oof.image_name]
        x, y, r = lesion_in_square(truth.width, truth.height, truth.lesion_x, truth.lesion_y, truth.lesion_r)
        mel = (oof.target == 6).to_numpy()
        top = np.argsort(-oof.melanoma.to_numpy())[:20]
        print(f"{len(oof)} out-of-fold rows ({mel.sum()} melanomas); fold-0 AUC {metrics.auc.iloc[-1]:.3f}; "
              f"input {args.image_size} px; {time.perf_counter() - start:.0f} s")  # fmt: skip
        print(f"{'rows':<24}{'inside r':>10}{'inside 1.25 r':>15}{'uniform, r':>12}")
        for name, at in [("melanomas", mel), ("20 highest scores", top), ("other lesions", ~mel)]:
            inside = lesion_share(maps[at], x[at], y[at], r[at]).mean()
            wider = lesion_share(maps[at], x[at], y[at], 1.25 * r[at]).mean()
            uniform = lesion_share(np.ones_like(maps[at]), x[at], y[at], r[at]).mean()
            print(f"{name:<24}{inside:>10.3f}{wider:>15.3f}{uniform:>12.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
