"""What only a CUDA device can show (marked `cuda`; skipped without one). benchmarks/gpu_check.sh
runs them on a GPU machine and records the outcome in its JSON."""

import numpy as np
import pandas as pd
import pytest
import torch

from melanoma.config import TrainConfig

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TINY = dict(backbone="test_efficientnet", image_size=64, batch_size=16, lr=3e-4, pretrained=False, folds=[0],
            epochs=2, device="cuda", num_workers=2)  # fmt: skip


def _train(tiny_data, tmp_path, **settings) -> pd.DataFrame:
    from melanoma.data.ingest import ingest
    from melanoma.training.train import train

    table = ingest(tiny_data, verify="none", progress=False)
    return train(table, TrainConfig(out=str(tmp_path / "run"), **{**TINY, **settings}), progress=False)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_mixed_precision_trains(tiny_data, tmp_path, amp):
    metrics = _train(tiny_data, tmp_path, amp=amp)
    assert np.isfinite(metrics[["train_loss", "val_loss"]].to_numpy()).all()
    assert metrics.train_loss.iloc[-1] < metrics.train_loss.iloc[0] * 1.5


def test_fp16_loss_scaling_skips_an_overflowing_step():
    from melanoma.models.model import MelanomaNet

    model = MelanomaNet("test_efficientnet", 9).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**24)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(torch.randn(4, 3, 64, 64, device="cuda")).float().logsumexp(1).mean() * 1e6
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # inf gradients in fp16: the step is skipped and the scale lowered
    scaler.update()
    assert scaler.get_scale() < 2.0**24
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_channels_last_and_compile_train(tiny_data, tmp_path):
    metrics = _train(tiny_data, tmp_path, channels_last=True, compile=True, amp="bf16")
    assert np.isfinite(metrics.val_loss).all()
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "run" / "fold0" / "best.safetensors")
    assert not any(k.startswith("_orig_mod.") for k in weights)  # plain names, loadable without compile


def test_pinned_memory_batches(tiny_data):
    from melanoma.data.ingest import ingest
    from melanoma.inputs.dataset import LesionDataset
    from melanoma.inputs.loader import make_loader
    from melanoma.inputs.transforms import eval_transform

    table = ingest(tiny_data, verify="none", progress=False).head(32)
    loader = make_loader(LesionDataset(table, eval_transform(64)), 8, 2, pin_memory=True)
    batch = next(iter(loader))
    assert batch["image"].is_pinned()
    assert batch["image"].to("cuda", non_blocking=True).device.type == "cuda"
