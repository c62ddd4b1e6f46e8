"""How hard is the default demo data? Out-of-fold melanoma AUC of two models on it.

1. a logistic regression on each image's mean colour (R, G, B): a floor that says the data is not
   trivially separable by colour alone;
2. the demo model (the `demo` preset), trained on every fold: what the demo's small CNN
   reaches from scratch on a CPU;
3. for reference, the generator's own latent atypia value read from OUT/truth/images.csv (no
   model: a ceiling for what the drawn cues can tell).

Both use the demo's folds (patient-grouped, 5 folds, seed 0) on the demo's synthetic data.
Run: .venv/bin/python benchmarks/synthetic_difficulty.py [--folds 0,1,2,3,4] [--models lr,truth,cnn]
(about 10 minutes with the CNN)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from melanoma.config import resolve
from melanoma.data.folds import patient_folds
from melanoma.data.ingest import ingest
from melanoma.demo import default_cache, synthetic_data
from melanoma.metrics import melanoma_auc
from melanoma.synthetic.generate import SynthConfig
from melanoma.training.train import train


def mean_colour_oof(train_rows: pd.DataFrame) -> np.ndarray:
    x = np.stack([cv2.imread(p)[..., ::-1].reshape(-1, 3).mean(0) for p in train_rows.image_path])
    y = (train_rows.diagnosis == "melanoma").to_numpy()
    oof = np.full(len(train_rows), np.nan)
    for k in sorted(train_rows.fold.unique()):
        val = (train_rows.fold == k).to_numpy()
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[~val], y[~val])
        oof[val] = model.predict_proba(x[val])[:, 1]
    return oof


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--models", default="lr,truth,cnn")
    args = parser.parse_args()
    models = args.models.split(",")
    folds = [int(f) for f in args.folds.split(",")]

    data = synthetic_data(default_cache(), SynthConfig(), progress=False)
    table = ingest(data, progress=False)
    table["fold"] = patient_folds(table, k=5, seed=0)
    rows = table[(table.split == "train") & table.fold.isin(folds)].reset_index(drop=True)
    is_mel = (rows.diagnosis == "melanoma").to_numpy()
    is_2020 = (rows.is_ext == 0).to_numpy()

    results = []
    if "lr" in models:
        lr = mean_colour_oof(table[table.split == "train"].reset_index(drop=True))
        lr = pd.Series(lr, index=table[table.split == "train"].image_name).loc[rows.image_name].to_numpy()
        results.append(("mean-colour logistic regression", lr, 0.0))
    if "truth" in models:
        truth = pd.read_csv(data / "truth" / "images.csv").set_index("image_name")
        results.append(
            ("generator's atypia (truth, no model)", truth.atypia.loc[rows.image_name].to_numpy(), 0.0)
        )
    if "cnn" not in models:
        return _print(data, args.folds, rows, is_mel, is_2020, results)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        cfg = resolve("demo", {"out": tmp, "folds": folds})
        train(table, cfg, progress=False)
        oof = pd.concat(pd.read_csv(Path(tmp) / f"fold{k}" / "oof.csv") for k in folds)
        cnn = oof.set_index("image_name").loc[rows.image_name, "melanoma"].to_numpy()
        results.append((f"demo model ({cfg.backbone} {cfg.image_size}px)", cnn, time.time() - start))

    _print(data, args.folds, rows, is_mel, is_2020, results)


def _print(
    data: Path, folds: str, rows: pd.DataFrame, is_mel: np.ndarray, is_2020: np.ndarray, results: list
) -> None:
    print(f"\nSynthetic demo data: {data}")
    print(f"Out-of-fold melanoma AUC over folds {folds} ({len(rows)} train images, {is_mel.sum()} melanoma)")
    print(f"{'model':45s} {'AUC all':>8s} {'AUC 2020':>9s} {'AUC fold 0':>11s} {'train s':>8s}")
    fold0 = (rows.fold == 0).to_numpy()
    for name, score, seconds in results:
        f0 = melanoma_auc(score[fold0], is_mel[fold0]) if fold0.any() else float("nan")
        print(
            f"{name:45s} {melanoma_auc(score, is_mel):8.3f} "
            f"{melanoma_auc(score[is_2020], is_mel[is_2020]):9.3f} {f0:11.3f} {seconds:8.0f}"
        )


if __name__ == "__main__":
    main()
