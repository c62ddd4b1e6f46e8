"""The same training command under torchrun: 2 CPU processes (gloo), metrics on the exact set."""

import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from melanoma.data.ingest import ingest
from melanoma.inputs.dataset import LesionDataset
from melanoma.inputs.transforms import eval_transform
from melanoma.metrics import validation_metrics
from melanoma.models.inference import predict_probs
from melanoma.models.model import build_model, load_weights
from melanoma.rundir import load_config
from melanoma.training.distributed import Dist, shard
from melanoma.training.train import training_rows


def test_shards_cover_every_row_once_without_padding():
    for n, world in [(79, 2), (10, 3), (2, 4)]:
        parts = [shard(n, Dist(rank=r, world_size=world)) for r in range(world)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))


TRAIN = ["--backbone", "test_efficientnet", "--image-size", "32", "--epochs", "2", "--batch-size", "16", "--lr",
         "3e-4", "--workers", "0", "--device", "cpu", "--meta", "--no-pretrained", "--folds", "0"]  # fmt: skip


def _matches_one_process(run, tiny_data) -> None:
    """The run's last-epoch metrics equal one process's on its saved weights, over every
    validation row once."""
    from melanoma.data.metadata import meta_features

    cfg = load_config(run)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.epoch) == [1, 2]
    table = training_rows(ingest(tiny_data, verify="none", progress=False), cfg)
    rows = table[(table.split == "train") & (table.fold == 0)]
    oof = pd.read_csv(run / "fold0" / "oof.csv")
    assert list(oof.image_name) == list(rows.image_name)  # every validation row once, in order
    meta = meta_features(table).to_numpy(np.float32)
    model = load_weights(build_model(cfg, meta.shape[1]), run / "fold0" / "last.safetensors")
    ds = LesionDataset(rows, eval_transform(cfg.image_size), meta[rows.index.to_numpy()])
    probs = predict_probs(model, DataLoader(ds, 16), torch.device("cpu"), "", progress=False)
    one = validation_metrics(probs, rows.target.to_numpy(), rows.is_ext.to_numpy(), 6)
    last = metrics.iloc[-1]
    assert one["auc"] == pytest.approx(last.auc, abs=1e-9)
    assert one["auc_20"] == pytest.approx(last.auc_20, abs=1e-9)
    assert one["val_loss"] == pytest.approx(last.val_loss, rel=1e-5)


def test_two_process_run_gets_the_one_process_auc_on_the_same_weights(tmp_path, tiny_data):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "melanoma", "train", str(tiny_data), "--out", str(run), *TRAIN]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x 2 (synchronized BatchNorm)" in (run / "log.txt").read_text()  # two processes, BatchNorm synced
    assert load_config(run).sync_bn is True  # recorded in config.json
    _matches_one_process(run, tiny_data)


def test_two_nodes_of_one_process_each_get_the_one_process_auc(tmp_path, tiny_data):
    """Multi-node torchrun as the README describes it, with two "nodes" on 127.0.0.1: the same
    command on each, --nnodes 2, its own --node-rank, the first node's address and a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "nodes"
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}  # the interface the nodes reach each other on
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(rank),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "melanoma",
                "train",
                str(tiny_data),
                "--out",
                str(run),
                *TRAIN,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "on cpu x 2 (synchronized BatchNorm)" in (run / "log.txt").read_text()
    _matches_one_process(run, tiny_data)


def _sync_bn_model():
    from melanoma.models.model import MelanomaNet

    torch.manual_seed(0)
    model = MelanomaNet("test_efficientnet", 9, n_meta=4, meta_hidden=(8, 6), n_dropout=1)
    for m in model.modules():  # no randomness: the two runs must see the same network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def _sync_bn_batch():
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    meta = torch.randn(8, 4, generator=g) * 3 + 1
    target = torch.randint(0, 9, (8,), generator=g)
    return image, meta, target


def _sync_bn_worker(rank, world, port, out, sync):
    import os

    import torch.distributed as dist
    from torch.nn import functional as F
    from torch.nn.parallel import DistributedDataParallel

    from melanoma.training.distributed import sync_batchnorm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _sync_bn_model()
        if sync:
            model = sync_batchnorm(model)
        net = DistributedDataParallel(model)
        image, meta, target = _sync_bn_batch()
        part = slice(rank * 4, rank * 4 + 4)
        F.cross_entropy(net(image[part], meta[part]), target[part]).backward()
        grads = {k: p.grad for k, p in model.named_parameters()}
        torch.save({"buffers": dict(model.named_buffers()), "grads": grads}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sync", [True, False])
def test_synchronized_batchnorm_sees_the_global_batch(tmp_path, sync):
    import torch.multiprocessing as mp
    from torch.nn import functional as F

    mp.spawn(_sync_bn_worker, args=(2, _free_port(), str(tmp_path), sync), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # One process, plain BatchNorm, the concatenated batch.
    model = _sync_bn_model()
    image, meta, target = _sync_bn_batch()
    F.cross_entropy(model(image, meta), target).backward()
    one = {"buffers": dict(model.named_buffers()), "grads": {k: p.grad for k, p in model.named_parameters()}}
    stats = [k for k in one["buffers"] if k.endswith(("running_mean", "running_var"))]
    assert len(stats) > 10 and any(k.startswith("meta.") for k in stats)  # BatchNormAct2d and BatchNorm1d
    for k in stats:
        assert torch.equal(ranks[0]["buffers"][k], ranks[1]["buffers"][k]) == sync, k
    if sync:  # the running statistics and the gradients of the global batch
        for k in stats:
            assert torch.allclose(ranks[0]["buffers"][k], one["buffers"][k], rtol=1e-4, atol=1e-5), k
        for k, g in one["grads"].items():
            assert torch.allclose(ranks[0]["grads"][k], g, rtol=1e-3, atol=1e-6), k
    else:  # each rank's own half: not the global batch's statistics
        assert not all(torch.allclose(ranks[0]["buffers"][k], one["buffers"][k], atol=1e-5) for k in stats)


def test_sync_batchnorm_keeps_names_activations_and_eval_behaviour():
    from melanoma.training.distributed import sync_batchnorm

    model = _sync_bn_model().eval()
    image, meta, _ = _sync_bn_batch()
    before = model(image, meta)
    keys = list(model.state_dict())
    synced = sync_batchnorm(model)
    assert list(synced.state_dict()) == keys  # checkpoints load into a plain model
    kinds = {type(m).__name__ for m in synced.modules()}
    assert {"SynchronizedBatchNormAct2d", "SynchronizedBatchNorm1d"} <= kinds
    assert not any(type(m) in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d) for m in synced.modules())
    assert torch.allclose(synced(image, meta), before, atol=1e-6)  # activations kept (eval: no sync)
