"""benchmarks/gpu_check.sh in its dry-run mode: every section runs on the CPU, so the script a GPU
machine will run cannot rot."""

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_dry_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True
    sections = ["environment", "cuda_tests", "train_fast", "train_reference", "ddp", "tta_predict", "onnx"]
    assert [k for k in result if isinstance(result[k], dict)] == sections
    assert all(result[k]["status"] == "ok" for k in sections), {k: result[k]["status"] for k in sections}
    assert result["cuda_tests"]["skipped"] == 5  # the CUDA-only tests exist and skip here
    assert result["train_fast"]["images_per_s"] > 0 and 0 <= result["train_reference"]["data_wait"] <= 1
    assert result["ddp"]["processes"] == 2 and result["ddp"]["backend"] == "gloo"
    assert result["onnx"]["max_difference"] < 1e-4 and result["tta_predict"]["images"] == 20
