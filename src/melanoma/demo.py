"""The demo: the whole pipeline on synthetic ISIC-like data, on a CPU, in a few minutes."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from melanoma.folds import fold_summary, patient_folds, save_folds
from melanoma.ingest import ingest, summarize
from melanoma.predict import predict_test, to_submission, write_submission
from melanoma.presets import resolve
from melanoma.progress import console
from melanoma.synth import SynthConfig, generate
from melanoma.train import train


def default_cache() -> Path:
    """$MELANOMA_CACHE, else $XDG_CACHE_HOME/melanoma, else ~/.cache/melanoma."""
    if os.environ.get("MELANOMA_CACHE"):
        return Path(os.environ["MELANOMA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "melanoma"


def synthetic_data(cache: Path, cfg: SynthConfig, progress: bool = True) -> Path:
    """Generate the synthetic dataset into the cache once; later calls reuse it."""
    key = json.dumps(asdict(cfg), sort_keys=True)
    folder = cache / f"synth-seed{cfg.seed}-{zlib.crc32(key.encode()):08x}"
    stamp = folder / "truth" / "config.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == asdict(cfg):
        console.print(f"Synthetic data: reusing {folder}")
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    generate(partial, cfg, progress=progress)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)  # only a complete dataset ever carries the final name
    console.print(f"Synthetic data: wrote {folder}")
    return folder


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and the fold's validation AUC."""

    data: Path
    run: Path
    submission: Path
    auc: float
    auc_20: float


def run_demo(
    out: Path = Path("runs/demo"),
    cache: Path | None = None,
    synth: SynthConfig | None = None,
    train_overrides: dict | None = None,
    progress: bool = True,
) -> DemoResult:
    """Synthetic data -> ingest -> folds -> train one fold -> predict the test set."""
    data = synthetic_data(cache or default_cache(), synth or SynthConfig(), progress)
    table = ingest(data, progress=progress)
    console.print(summarize(table))
    table["fold"] = patient_folds(table, k=5, seed=0)
    out.mkdir(parents=True, exist_ok=True)
    save_folds(table, out / "folds.csv")
    console.print(fold_summary(table).round(4).to_string(), markup=False)
    cfg = resolve("demo", {**(train_overrides or {}), "out": str(out)})  # the `melanoma train` path
    metrics = train(table, cfg, progress=progress)
    pred = predict_test(out, table, "best", progress=progress)
    path = write_submission(
        to_submission(pred.probs, out), table.image_name[table.split == "test"], out / "submission.csv"
    )
    pred.save(out)
    best = metrics.loc[metrics.auc.idxmax()] if metrics.auc.notna().any() else metrics.iloc[-1]
    console.print(
        f"[bold green]Fold {cfg.folds[0]} validation AUC {best.auc:.4f} (2020 rows: {best.auc_20:.4f}) "
        f"at epoch {int(best.epoch)}[/]; submission: {path}"
    )
    return DemoResult(data, out, path, float(best.auc), float(best.auc_20))
