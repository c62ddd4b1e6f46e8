"""ISIC 2024's tree models, one change at a time: what each library, the bagged blend and each
feature group are worth, with 95% intervals, time and peak memory.

On a synthetic ISIC 2024 set (default 20,000 lesions, 0.5% malignant, 5 centres, 0.5% of the
benign rows Indeterminate), `melanoma gbdt` is trained with 5 patient folds for each row of
ARMS, each in its own process (its peak resident memory is that process's); printed and written
(--out, JSON): out-of-fold pAUC above 80% TPR with its bootstrap 95% interval, its gain over the
first row with a paired bootstrap 95% interval (both scored on the same resampled rows, so the
rows' shared luck cancels: a gain whose interval excludes 0 is real), AUC, the per-patient top-15
sensitivity, wall time and peak memory. The first row is the model as it was
before the tree ensembles (one LightGBM on the measurements, ratios and per-patient z-scores,
min-max and counts); the feature rows add one group at a time to it; the library rows use every
group; the blend rows bag all three libraries over 3 seeds on the top teams' samples.

The last row stacks an image model's out-of-fold scores (in context: over the patient's mean,
z-scored within patient, centre, location, age): the isic2024 preset with its iddx_1 auxiliary
head, on Lite0 with its built-in ImageNet weights at 48 px for 2 epochs (IMAGE; small enough for
2 CPU cores, so a weak image model), trained first over the same 5 folds; its time is printed
and not in the row's.

Run:  .venv/bin/python benchmarks/isic2024_ablation.py [--lesions 20000] [--out results.json]
      (about 25 minutes on 2 cores; --only 1,9 runs some rows); benchmarks/readme_figures.py
      --only isic2024-ablation runs it and writes the tables into README.md and docs/isic2024.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

LATER = ("neighbourhood", "ugly_duckling", "centre", "outlier", "ranks")
BLEND = {"models": ["lightgbm", "xgboost", "catboost"], "bags": 3, "pos_rate": 0.003, "neg_rate": 0.01,
         "early_stopping": 50, "params": "tuned", "n_estimators": 400}  # fmt: skip


def _arms() -> list[tuple[str, dict]]:
    arms = [("LightGBM, earlier features", {"drop_features": [f"group:{g}" for g in LATER]})]
    for i, group in enumerate(LATER):
        arms.append((f"+ {group}", {"drop_features": [f"group:{g}" for g in LATER[i + 1 :]]}))
    arms += [
        ("XGBoost, every group", {"models": ["xgboost"]}),
        ("CatBoost, every group", {"models": ["catboost"]}),
    ]
    arms += [("bagged blend (mean)", BLEND), ("bagged blend (fitted weights)", {**BLEND, "blend": "fitted"})]
    arms.append(("bagged blend (mean), --drop-indeterminate", {**BLEND, "drop_indeterminate": True}))
    arms.append(("bagged blend (mean) + image scores", {**BLEND, "image_run": ["IMAGE_RUN"]}))
    return arms


# The image model stacked in the last row: the isic2024 preset (its iddx_1 auxiliary head
# included) on Lite0 with its built-in ImageNet weights, small enough for 2 CPU cores.
IMAGE = {"backbone": "tf_efficientnet_lite0", "pretrained": True, "image_size": 48, "epochs": 2, "batch_size": 64,
         "lr": 1e-4, "pos_oversample": 5, "neg_per_epoch": 4000, "k_folds": 5, "num_workers": 2}  # fmt: skip


def image_run(data: Path, out: Path) -> tuple[Path, float]:
    """Train the image model over the 5 patient folds gbdt uses (DATA/folds.csv) and predict the
    test rows; returns the run and its wall time."""
    from melanoma.config import resolve
    from melanoma.data.folds import write_folds
    from melanoma.evaluation.predict import predict_submission
    from melanoma.training.train import train, training_table

    start = time.perf_counter()
    write_folds(data, "triple", 5, 0, None, progress=False)  # the split gbdt makes without it
    cfg = resolve("isic2024", {**IMAGE, "out": str(out)})
    table = training_table(data, cfg, progress=False)
    train(table, cfg, progress=False)
    predict_submission(out, table, "best", tta=False, progress=False)
    return out, time.perf_counter() - start


CHILD = """
import json, resource, sys, time
from pathlib import Path
from melanoma.tabular.gbdt import GbdtConfig, train_gbdt
data, out, settings = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
start = time.perf_counter()
result = train_gbdt(data, GbdtConfig(out=out, **settings), progress=False)
result["seconds"] = time.perf_counter() - start
result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def measure(data: Path, work: Path, name: str, settings: dict) -> dict:
    """One arm in its own process; its out-of-fold scores scored with a bootstrap interval."""
    from melanoma.metrics import bootstrap_ci, partial_auc
    from melanoma.run import Run

    out = work / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "").replace(
        "+", "plus"
    )
    done = subprocess.run([sys.executable, "-c", CHILD, str(data), str(out), json.dumps(settings)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{name}: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    oof = Run(out).oof()
    score, positive = oof.malignant.to_numpy(), (oof.target == 1).to_numpy()
    low, high = bootstrap_ci(partial_auc, score, positive, n_boot=1000)
    return {"arm": name, "settings": settings, "pauc": partial_auc(score, positive), "pauc_low": low,
            "pauc_high": high, "auc": result["auc"], "top15": result["top15"], "seconds": result["seconds"],
            "peak_mib": result["peak_mib"], "features": len(Run(out).config["features"]),
            "malignant": int(np.sum(positive)), "rows": len(oof),
            "scores": oof.set_index("image_name").malignant.sort_index()}  # fmt: skip


def paired_gain(arm: pd.Series, base: pd.Series, positive: np.ndarray, n_boot: int = 1000) -> tuple:
    """pAUC(arm) - pAUC(base) on the same rows, with a paired bootstrap 95% interval (each resample
    scores both on the same rows, so what the two share cancels)."""
    from melanoma.metrics import partial_auc

    a, b = arm.to_numpy(), base.loc[arm.index].to_numpy()
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(n_boot):
        at = rng.integers(0, len(a), len(a))
        if 0 < positive[at].sum() < len(at):
            gains.append(partial_auc(a[at], positive[at]) - partial_auc(b[at], positive[at]))
    low, high = np.percentile(gains, [2.5, 97.5])
    return partial_auc(a, positive) - partial_auc(b, positive), float(low), float(high)


def ablate(lesions: int = 20_000, malignant_rate: float = 0.005, only: str = "") -> dict:
    """Every arm (or the 1-based numbers in `only`) on one synthetic set; the rows as printed."""
    from melanoma.data.isic2024 import metadata
    from melanoma.synthetic.isic2024 import Synth2024Config, generate_2024

    arms = _arms()
    if only:
        arms = [arms[int(i) - 1] for i in only.split(",")]
    rows, image_seconds = [], None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        start = time.perf_counter()
        cfg = Synth2024Config(n_train=lesions, n_test=3, malignant_rate=malignant_rate, centres=5,
                              indeterminate_rate=0.005, crop_min=32, crop_max=48)  # fmt: skip
        generate_2024(data, cfg, progress=False)
        print(f"synthetic ISIC 2024: {lesions} lesions in {time.perf_counter() - start:.0f} s", flush=True)
        meta = metadata(data / "isic2024").set_index("isic_id")
        if any("image_run" in settings for _, settings in arms):  # first: a failure shows early
            image, image_seconds = image_run(data, Path(tmp) / "image")
            print(
                f"image model: {IMAGE['backbone']} at {IMAGE['image_size']} px, {image_seconds:.0f} s",
                flush=True,
            )
            arms = [(n, {**s, "image_run": [str(image)]} if "image_run" in s else s) for n, s in arms]
        for name, settings in arms:
            row = measure(data, Path(tmp), name, settings)
            truth = (meta.target.loc[row["scores"].index] == 1).to_numpy()
            base = rows[0]["scores"] if rows else row["scores"]
            row["gain"], row["gain_low"], row["gain_high"] = paired_gain(row["scores"], base, truth)
            rows.append(row)
            print(f"{name:45s} pAUC {row['pauc']:.4f} ({row['pauc_low']:.4f}-{row['pauc_high']:.4f})  "
                  f"vs first {row['gain']:+.4f} ({row['gain_low']:+.4f} to {row['gain_high']:+.4f})  "
                  f"AUC {row['auc']:.4f}  top-15 {row['top15']:.3f}  {row['features']} features  "
                  f"{row['seconds']:.0f} s  {row['peak_mib']:.0f} MiB", flush=True)  # fmt: skip
    for row in rows:
        del row["scores"]
    return {
        "lesions": lesions,
        "malignant_rate": malignant_rate,
        "rows": rows,
        "image_model": IMAGE,
        "image_seconds": image_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesions", type=int, default=20_000)
    parser.add_argument("--malignant-rate", type=float, default=0.005)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", default="", help="comma-separated arm numbers (1-based)")
    args = parser.parse_args()
    found = ablate(args.lesions, args.malignant_rate, args.only)
    if args.out:
        args.out.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
