"""Resume: a run killed at any moment continues from its last complete epoch, exactly."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from melanoma.fileio import atomic_write
from melanoma.models.checkpoint import load_state, save_weights

ARGS = ["--backbone", "test_efficientnet", "--image-size", "48", "--epochs", "5", "--batch-size", "16",
        "--lr", "3e-4", "--workers", "1", "--device", "cpu", "--no-pretrained", "--folds", "0"]  # fmt: skip
COMPARED = ["epoch", "lr", "train_loss", "val_loss", "acc", "auc", "auc_20"]


def _train(data, out, *extra, args=ARGS):
    cmd = [sys.executable, "-m", "melanoma", "train", str(data), "--out", str(out), *args, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_after_epoch(proc, state, epoch, delay):
    """SIGKILL the run `delay` seconds after its resume state reaches `epoch`."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and load_state(state, mmap=True)["epoch"] >= epoch:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended or stalled before epoch {epoch}: {proc.stderr.read()}")


def test_killed_run_resumes_to_the_same_metrics(tmp_path, tiny_data):
    full = _train(tiny_data, tmp_path / "full")
    assert full.wait() == 0, full.stderr.read()
    run = tmp_path / "killed"
    state = run / "fold0" / "state.pt"
    _kill_after_epoch(_train(tiny_data, run), state, 1, 0.3)  # mid epoch 2 (or its validation)
    assert load_state(state)["epoch"] in (1, 2)
    again = _train(tiny_data, run)  # without --resume: refused, nothing touched
    assert again.wait() != 0 and "pass --resume" in again.stderr.read()
    _kill_after_epoch(_train(tiny_data, run, "--resume"), state, 3, 0.0)  # right after a commit
    last = _train(tiny_data, run, "--resume", args=[])  # the saved settings are the base
    assert last.wait() == 0, last.stderr.read()
    a, b = pd.read_csv(tmp_path / "full" / "metrics.csv"), pd.read_csv(run / "metrics.csv")
    assert list(b.epoch) == [1, 2, 3, 4, 5]
    assert a[COMPARED].to_numpy() == pytest.approx(b[COMPARED].to_numpy(), rel=1e-6, nan_ok=True)
    for name in ("best", "best_20", "last"):
        wa, wb = (
            load_file(tmp_path / "full" / "fold0" / f"{name}.safetensors"),
            load_file(run / "fold0" / f"{name}.safetensors"),
        )
        assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa), name
    assert "resuming after epoch" in (run / "log.txt").read_text()
    finished = _train(tiny_data, run, "--resume")  # a finished fold is kept as it is
    assert finished.wait() == 0 and "finished earlier" in (run / "log.txt").read_text()
    assert not list(run.rglob("*.tmp"))


def test_a_crash_mid_write_never_corrupts_the_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = save_weights(model, tmp_path / "best.safetensors")
    before = load_file(path)

    def crash(tmp):
        tmp.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt  # the process dies mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    after = load_file(path)  # still the complete old file
    assert all(torch.equal(before[k], after[k]) for k in before)
    save_weights(torch.nn.Linear(3, 2), path)  # the next write replaces the stray temporary
    assert not (tmp_path / "best.safetensors.tmp").exists()
    assert os.listdir(tmp_path) == ["best.safetensors"]
