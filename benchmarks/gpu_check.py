"""The GPU check: everything a CUDA machine must show, in one run that writes one JSON.

Run by benchmarks/gpu_check.sh on a CUDA machine with no internet (under 8 minutes on one modern
GPU): synthetic data is generated, no weights are downloaded. Sections, each with its status
("ok", "failed: ...", "skipped: ...") and seconds:

- environment: torch, CUDA, devices, bf16 support;
- cuda_tests: the tests marked `cuda` (fp16 with loss scaling, bf16, channels_last, torch.compile,
  pinned memory), passed / failed / skipped;
- train_fast, train_reference: efficientnet_b3 at 384 px, batch 48, bf16, one epoch on 1,536
  images: training images/s and the share of step time spent waiting for data, per pipeline;
- ddp: the same under torchrun with NCCL on every GPU, synchronized BatchNorm, a few steps;
- tta_predict: 8-way test-time augmentation, images/s;
- onnx: a fold model exported and run in onnxruntime (CUDA provider when there is one) against
  PyTorch on the device: the largest difference of probabilities.

`--dry-run` does the same on the CPU with a tiny network, tiny images and a few dozen images (the
test suite runs it, so the script cannot rot); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


class Skip(Exception):
    """A section that cannot run on this machine (its message says why)."""


def _section(results: dict, name: str, fn: Callable[[], dict]) -> None:
    start = time.perf_counter()
    try:
        results[name] = {"status": "ok", **fn()}
    except Skip as why:
        results[name] = {"status": f"skipped: {why}"}
    except Exception as err:  # a failed section is reported, the others still run
        results[name] = {
            "status": f"failed: {type(err).__name__}: {err}",
            "traceback": traceback.format_exc()[-2000:],
        }
    results[name]["seconds"] = round(time.perf_counter() - start, 1)
    print(f"{name}: {results[name]['status']} ({results[name]['seconds']} s)", flush=True)


def environment() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "cpu_cores": os.cpu_count(),
    }


def cuda_tests() -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "system" / "test_cuda.py")],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    if done.returncode not in (0, 5) or counts.get("failed") or counts.get("error"):
        raise RuntimeError(f"{tail}\n{done.stdout[-3000:]}")
    return {"summary": tail, **counts}


def _train(data: Path, out: Path, settings: dict) -> dict:
    from melanoma.config import TrainConfig
    from melanoma.data.ingest import ingest
    from melanoma.training.train import train

    table = ingest(data, verify="none", progress=False)
    metrics = train(table, TrainConfig(out=str(out), **settings), progress=False)
    last = metrics.iloc[-1]
    return {"images_per_s": round(float(last.images_per_s), 1), "data_wait": round(float(last.data_wait), 3),
            "workers": int(json.loads((out / "config.json").read_text()).get("num_workers", -1))}  # fmt: skip


def ddp(data: Path, out: Path, settings: dict, processes: int) -> dict:
    if processes < 2:
        raise Skip("one GPU: DistributedDataParallel needs two (NCCL takes one GPU per process)")
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "-m", "melanoma", "train", str(data), "--out", str(out)]  # fmt: skip
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        elif key == "folds":
            args += [flag, ",".join(map(str, value))]
        elif key == "num_workers":
            args += ["--workers", str(value)]
        else:
            args += [flag, str(value)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-1500:] + done.stderr[-1500:])
    log = (out / "log.txt").read_text()
    if "synchronized BatchNorm" not in log:
        raise RuntimeError("BatchNorm was not synchronized: " + log[-500:])
    metrics = pd.read_csv(out / "metrics.csv")
    return {"processes": processes, "images_per_s": round(float(metrics.images_per_s.iloc[-1]), 1),
            "backend": "nccl" if torch.cuda.is_available() else "gloo"}  # fmt: skip


def tta_predict(data: Path, run: Path) -> dict:
    from melanoma.data.ingest import ingest
    from melanoma.evaluation.predict import predict_rows

    table = ingest(data, verify="none", progress=False)
    rows = table[table.split == "test"]
    start = time.perf_counter()
    probs = predict_rows(run, rows, None, [0], tta=True, progress=False)
    seconds = time.perf_counter() - start
    if not np.allclose(probs.sum(-1), 1, atol=1e-3):
        raise RuntimeError("probabilities do not sum to 1")
    return {
        "images": len(rows),
        "images_per_s": round(len(rows) / seconds, 1),
        "views_per_s": round(8 * len(rows) / seconds, 1),
    }


def onnx_parity(run: Path, work: Path) -> dict:
    import onnxruntime as ort

    from melanoma.evaluation.export import export_fold
    from melanoma.rundir import load_config, load_fold_model

    path, cpu_diff = export_fold(run, 0, work / "fold0.onnx")
    cfg = load_config(run)
    providers = [
        p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
    ]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_fold_model(run, 0).to(device)
    torch.manual_seed(2)
    batch = torch.rand(4, 3, cfg.image_size, cfg.image_size) * 4 - 2
    with torch.no_grad():
        expected = torch.softmax(model(batch.to(device)).float(), 1).cpu().numpy()
    session = ort.InferenceSession(str(path), providers=providers)
    got = session.run(None, {"image": batch.numpy()})[0]
    return {"providers": session.get_providers(), "max_difference": float(np.abs(got - expected).max()),
            "cpu_check_difference": cpu_diff}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny network and data: checks the script"
    )
    args = parser.parse_args()
    from melanoma.synthetic.generate import SynthConfig, generate

    dry = args.dry_run
    cuda = torch.cuda.is_available() and not dry
    results: dict = {"dry_run": dry, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        data = work / "data"
        n = (80, 20, 40) if dry else (1200, 400, 600)
        generate(
            data,
            SynthConfig(n_train_2020=n[0], n_test_2020=n[1], n_2019=n[2], seed=1),
            workers=0,
            progress=False,
        )
        base = (
            dict(backbone="test_efficientnet", image_size=32, batch_size=16, amp="off", device="cpu", num_workers=0)
            if dry
            else dict(backbone="efficientnet_b3", image_size=384, batch_size=48, amp="bf16", device="cuda",
                      channels_last=True, num_workers=-1)
        )  # fmt: skip
        base |= dict(pretrained=False, epochs=1, folds=[0], lr=3e-5)
        _section(results, "environment", environment)
        _section(results, "cuda_tests", cuda_tests)
        for pipeline in ("fast", "reference"):
            settings = {**base, "pipeline": pipeline}
            _section(
                results,
                f"train_{pipeline}",
                lambda s=settings, p=pipeline: _train(data, work / f"run_{p}", s),
            )
        processes = torch.cuda.device_count() if cuda else 2
        ddp_settings = {**base, "sync_bn": True} | ({} if cuda else {"device": "cpu"})
        _section(results, "ddp", lambda: ddp(data, work / "run_ddp", ddp_settings, processes))
        _section(results, "tta_predict", lambda: tta_predict(data, work / "run_fast"))
        _section(results, "onnx", lambda: onnx_parity(work / "run_fast", work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    failed = [k for k, v in results.items() if isinstance(v, dict) and v["status"].startswith("failed")]
    print(f"Wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else "; every section ok"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
