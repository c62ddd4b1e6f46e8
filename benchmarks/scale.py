"""Where the cost goes as the data grows: every stage at 10%, 30% and 100% of the real ISIC counts.

The real download is 69,439 images (33,126 + 10,982 from ISIC 2020, 25,331 from ISIC 2019). For each
fraction this writes synthetic data of those counts at small image sizes (`melanoma synth`, about
240x160) and runs each stage as its own `melanoma` process, recording its wall time and the peak
resident memory of that process (os.wait4's ru_maxrss, so stages do not mask each other):

  ingest         melanoma ingest DATA                (header check of every image)
  dedup embed    melanoma dedup DATA --image-size 64 (--dedup-options), less the search-only rerun
  dedup search   melanoma dedup DATA again: embeddings from the cache, whitening, neighbour search,
                 candidates.csv and review.html (thumbnails of every candidate pair)
  dedup apply    melanoma dedup DATA --apply
  prepare        melanoma prepare DATA DATA --sizes 64
  folds          melanoma folds DATA --data-size 64  (triple-stratified, k = 5)
  train 1 epoch  melanoma train ... fold 0, 1 epoch, timm's test_efficientnet at 64 px (images/s)
  predict TTA    melanoma predict RUN: the test set x 8 orientations through the fold-0 model
  evaluate       melanoma evaluate --no-tta on 5 folds of out-of-fold rows (1,000 bootstrap resamples)
  ensemble       melanoma ensemble over 18 members (run directories: OOF AUC of each and of the mix)
  select         melanoma select over the same 18 members
  report         melanoma report on one member run

Member outputs for evaluate, ensemble, select and report are simulated (every training row out of
fold, scores drawn around the label; test probabilities for 5 fold models), as the issue allows:
training 18 x 5 models per fraction is not what this measures.

Growth between 30% and 100% is reported as the exponent b in time ~ n^b (1 = linear; n log n over
that range is about 1.09). A stage above 1.25 or above 8 GiB at 100% is marked.

    python benchmarks/scale.py [--fractions 0.1,0.3,1.0] [--work DIR] [--keep] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REAL = {"n_train": 33_126, "n_test": 10_982, "n_2019": 25_331}
SIZE = 64  # prepared and model input size
MEMBERS = 18
K = 5
NLOGN_EXPONENT = 1.09


def melanoma_command() -> str:
    return str(Path(sys.executable).with_name("melanoma"))


def run_stage(args: list[str], log: Path, env: dict | None = None) -> tuple[float, float]:
    """Run one command as its own process (in `env`, else this one's); its wall seconds and peak
    resident memory (MiB) of that process, so stages do not mask each other."""
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{args[1]} failed (exit {proc.returncode}); see {log}")
    return seconds, usage.ru_maxrss / 1024


def _scores(
    rng: np.random.Generator, is_mel: np.ndarray, mel: int, n_classes: int, strength: float
) -> np.ndarray:
    """Class probabilities whose melanoma column separates melanomas by `strength` (logit units)."""
    logits = rng.normal(0.0, 1.0, (len(is_mel), n_classes))
    logits[:, mel] += strength * is_mel - 2.0
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def simulate_members(run: Path, data: Path, test_names: pd.Series, out: Path, seed: int) -> list[Path]:
    """MEMBERS copies of the trained run, each with simulated out-of-fold rows for all K folds and
    simulated per-fold test probabilities (what `predict` writes)."""
    from melanoma.data.ingest import ingest

    rng = np.random.default_rng(seed)
    columns = pd.read_csv(run / "fold0" / "oof.csv", nrows=1).columns.tolist()
    classes = columns[columns.index("target") + 1 :]
    mel = classes.index("melanoma")
    table = ingest(data, verify="none", progress=False)
    rows = pd.read_csv(data / "folds.csv").merge(table[["image_name", "is_ext", "target"]], on="image_name")
    rows = rows[rows.fold >= 0]
    members = []
    for m in range(MEMBERS):
        member = out / f"member{m:02d}"
        shutil.copytree(run, member)
        epochs = pd.read_csv(run / "metrics.csv")
        pd.concat([epochs.assign(fold=k) for k in range(K)]).to_csv(member / "metrics.csv", index=False)
        for k in range(K):
            fold_dir = member / f"fold{k}"
            if not fold_dir.exists():
                shutil.copytree(run / "fold0", fold_dir)
            part = rows[rows.fold == k].reset_index(drop=True)
            oof = part[["image_name", "fold", "is_ext", "target"]].copy()
            oof[classes] = _scores(rng, (part.target == mel).to_numpy(), mel, len(classes), 2.0 + 0.05 * m)
            oof.to_csv(fold_dir / "oof.csv", index=False)
        by_fold = []
        for k in range(K):
            frame = pd.DataFrame(
                _scores(rng, np.zeros(len(test_names), dtype=bool), mel, len(classes), 0.0), columns=classes
            )
            frame.insert(0, "fold", k)
            frame.insert(0, "image_name", test_names.to_numpy())
            by_fold.append(frame)
        by_fold = pd.concat(by_fold, ignore_index=True)
        by_fold.to_csv(member / "test_probs_by_fold.csv", index=False)
        mean = by_fold.groupby("image_name", sort=False)[classes].mean().reset_index()
        mean.to_csv(member / "test_probs.csv", index=False)
        mean[["image_name"]].assign(target=mean.melanoma).to_csv(member / "submission.csv", index=False)
        members.append(member)
    return members


def one_fraction(fraction: float, work: Path, log: Path, dedup_options: list[str]) -> list[dict]:
    mel = melanoma_command()
    data, runs = work / "data", work / "runs"
    counts = {key: max(20, round(value * fraction)) for key, value in REAL.items()}
    results: list[dict] = []

    def stage(name: str, args: list[str], images: int) -> dict:
        seconds, mib = run_stage([mel, *args], log)
        row = {"fraction": fraction, "stage": name, "images": images, "seconds": seconds, "peak_mib": mib}
        results.append(row)
        print(f"  {name:<14} {images:>7} images {seconds:>8.1f} s {mib:>7.0f} MiB", flush=True)
        return row

    def say(text: str) -> None:
        print(f"  {'':<14} {text}", flush=True)

    n_all = sum(counts.values())
    print(f"{fraction:.0%}: {counts}", flush=True)
    stage(
        "synth (setup)",
        ["synth", str(data), "--n-train", str(counts["n_train"]), "--n-test", str(counts["n_test"]),
         "--n-2019", str(counts["n_2019"])],
        n_all,
    )  # fmt: skip
    stage("ingest", ["ingest", str(data)], n_all)
    both = stage("dedup", ["dedup", str(data), *dedup_options], n_all)
    search = stage("dedup search", ["dedup", str(data), *dedup_options], n_all)
    results.remove(both)
    results.insert(
        len(results) - 1,
        {**both, "stage": "dedup embed", "seconds": both["seconds"] - search["seconds"]},
    )
    stage("dedup apply", ["dedup", str(data), "--apply"], n_all)
    stage("prepare", ["prepare", str(data), str(data), "--sizes", str(SIZE)], n_all)
    stage("folds", ["folds", str(data), "--data-size", str(SIZE)], counts["n_train"] + counts["n_2019"])
    run = runs / "train"
    folds = pd.read_csv(data / "folds.csv")
    fold0_train = int(((folds.fold >= 0) & (folds.fold != 0)).sum())
    row = stage(
        "train 1 epoch",
        ["train", str(data), "--out", str(run), "--backbone", "test_efficientnet", "--no-pretrained",
         "--data-size", str(SIZE), "--image-size", str(SIZE), "--epochs", "1", "--folds", "0",
         "--k-folds", str(K), "--batch-size", "64", "--workers", "2"],
        fold0_train,
    )  # fmt: skip
    epoch = pd.read_csv(run / "metrics.csv").iloc[-1]
    row["images_per_s"], row["data_wait"] = float(epoch.images_per_s), float(epoch.data_wait)
    say(
        f"training {row['images_per_s']:.0f} images/s, {row['data_wait']:.0%} of step time waiting for data",
    )
    n_test = counts["n_test"]
    row = stage("predict TTA", ["predict", str(run), "--data", str(data)], n_test)
    row["images_per_s"] = n_test * 8 / row["seconds"]
    say(f"{row['images_per_s']:.0f} images/s through the model (8 orientations per test image)")
    test_names = pd.read_csv(run / "test_probs.csv").image_name
    members = simulate_members(run, data, test_names, runs, seed=int(fraction * 1000))
    n_oof = int((folds.fold >= 0).sum())
    stage("evaluate", ["evaluate", str(members[0]), "--no-tta"], n_oof)
    stage("ensemble", ["ensemble", *map(str, members), "--out", str(runs / "ensemble.csv")], n_oof)
    stage("select", ["select", *map(str, members), "--out", str(runs / "selection")], n_oof)
    stage("report", ["report", str(members[0])], n_oof)
    return results


def growth_table(results: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(results)
    fractions = sorted(frame.fraction.unique())
    wide = frame.pivot_table(index="stage", columns="fraction", values="seconds", sort=False)
    mem = frame.pivot_table(index="stage", columns="fraction", values="peak_mib", sort=False)
    table = pd.DataFrame(index=wide.index)
    for f in fractions:
        table[f"{f:.0%} s"] = wide[f].round(1)
    top = fractions[-1]
    table[f"{top:.0%} peak MiB"] = mem[top].round(0)
    if len(fractions) >= 2:
        lo, hi = fractions[-2], fractions[-1]
        n = frame.groupby(["stage", "fraction"]).images.first().unstack()
        ratio_n = n[hi] / n[lo]
        exponent = np.log(wide[hi].clip(lower=0.05) / wide[lo].clip(lower=0.05)) / np.log(ratio_n)
        table[f"growth {lo:.0%}->{hi:.0%} (n^b)"] = exponent.round(2)
        table["note"] = [
            " ".join(
                w
                for w, bad in (
                    ("FASTER THAN n log n", b > 1.25 and wide.loc[s, hi] > 5),
                    ("OVER 8 GiB", mem.loc[s, hi] > 8192),
                )
                if bad
            )
            for s, b in exponent.items()
        ]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", default="0.1,0.3,1.0")
    parser.add_argument("--work", type=Path, default=None, help="folder for the data (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the data and runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    parser.add_argument(
        "--dedup-options",
        default="--image-size 64",
        help="options of both dedup runs (default: the cheaper CPU setting; '' for dedup's defaults)",
    )
    args = parser.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    root = Path(tempfile.mkdtemp(prefix="scale_", dir=args.work))
    log = root / "commands.log"
    print(f"work folder {root} (command output in {log}); {os.cpu_count()} CPU cores", flush=True)
    results: list[dict] = []
    try:
        for f in fractions:
            results += one_fraction(f, root / f"{f:.2f}", log, args.dedup_options.split())
            if not args.keep:
                shutil.rmtree(root / f"{f:.2f}")
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(root / "0", ignore_errors=True)
    table = growth_table(results)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print()
        print(table.to_string())
    print(f"\n(n log n between 30% and 100% grows like n^{NLOGN_EXPONENT})")


if __name__ == "__main__":
    main()
