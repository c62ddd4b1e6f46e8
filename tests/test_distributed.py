"""The same training command under torchrun: 2 CPU processes (gloo), metrics on the exact set."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from melanoma.dataset import LesionDataset
from melanoma.distributed import Dist, shard
from melanoma.inference import predict_probs
from melanoma.ingest import ingest
from melanoma.metrics import validation_metrics
from melanoma.model import load_weights
from melanoma.predict import load_config
from melanoma.train import build_model, prepare_table
from melanoma.transforms import eval_transform


def test_shards_cover_every_row_once_without_padding():
    for n, world in [(79, 2), (10, 3), (2, 4)]:
        parts = [shard(n, Dist(rank=r, world_size=world)) for r in range(world)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))


def test_two_process_run_gets_the_one_process_auc_on_the_same_weights(tmp_path, tiny_data):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "melanoma", "train", str(tiny_data), "--out", str(run), "--backbone", "test_efficientnet",
        "--image-size", "32", "--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--workers", "0",
        "--device", "cpu", "--meta",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = load_config(run)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.epoch) == [1, 2]
    assert "x 2" in (run / "log.txt").read_text()  # it really ran as two processes

    table = prepare_table(ingest(tiny_data, verify="none", progress=False), cfg)
    rows = table[(table.split == "train") & (table.fold == 0)]
    oof = pd.read_csv(run / "fold0" / "oof.csv")
    assert list(oof.image_name) == list(rows.image_name)  # every validation row once, in order

    # One process, the saved weights of the last epoch, the whole validation set.
    from melanoma.metadata import meta_features

    meta = meta_features(table).to_numpy(np.float32)
    model = load_weights(build_model(cfg, meta.shape[1]), run / "fold0" / "last.safetensors")
    ds = LesionDataset(rows, eval_transform(cfg.image_size), meta[rows.index.to_numpy()])
    probs = predict_probs(model, DataLoader(ds, 16), torch.device("cpu"), "", progress=False)
    one = validation_metrics(probs, rows.target.to_numpy(), rows.is_ext.to_numpy(), 6)
    last = metrics.iloc[-1]
    assert one["auc"] == pytest.approx(last.auc, abs=1e-9)
    assert one["auc_20"] == pytest.approx(last.auc_20, abs=1e-9)
    assert one["val_loss"] == pytest.approx(last.val_loss, rel=1e-5)
