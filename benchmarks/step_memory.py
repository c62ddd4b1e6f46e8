"""Peak memory of one training step on the CPU: the whole batch, --accumulate, --grad-checkpointing.

Each configuration runs in a fresh process: the network (timm's efficientnet_b0, random weights),
the optimiser and a batch are made, then one train_step (training/train.py) runs; the figure is
the process's peak resident memory during the step less its resident memory before it: what the
step itself needs (activations, gradients, Adam's state), which is what decides whether the
winners' batch of 64 fits a GPU. The same code runs on a GPU; there the activations dominate
still more.

Run: .venv/bin/python benchmarks/step_memory.py [--backbone efficientnet_b0 --size 224 --batch 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts, not a package
from hdf5_read import rss_mib  # noqa: E402

CONFIGS = {
    "whole batch": {},
    "--accumulate 4": {"accumulate": 4},
    "--grad-checkpointing": {"grad_checkpointing": True},
    "both": {"accumulate": 4, "grad_checkpointing": True},
}


def one_step(backbone: str, size: int, batch: int, settings: dict) -> dict:
    """In this process: one training step; its peak memory over the memory before it."""
    import torch

    from melanoma.config import TrainConfig
    from melanoma.models.model import MelanomaNet
    from melanoma.training.train import set_grad_checkpointing, train_step

    torch.manual_seed(0)
    cfg = TrainConfig(batch_size=batch, **settings)
    net = MelanomaNet(backbone, 9).train()
    if cfg.grad_checkpointing:
        set_grad_checkpointing(net, backbone)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    images, targets = torch.randn(batch, 3, size, size), torch.randint(0, 9, (batch,))
    micro = batch // cfg.accumulate
    parts = [
        {"image": images[i : i + micro], "target": targets[i : i + micro]} for i in range(0, batch, micro)
    ]
    before = rss_mib()
    start = time.perf_counter()
    train_step(net, parts, optimizer, scaler, cfg, torch.device("cpu"))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"step_mib": round(peak - before), "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration here
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_step(args.backbone, args.size, args.batch, CONFIGS[args.one])))
        return
    print(f"{args.backbone}, {args.batch} images of {args.size} px, one step on the CPU (fresh process each)")
    print(f"{'configuration':<22} {'step peak MiB':>14} {'seconds':>8}")
    for name in CONFIGS:
        done = subprocess.run(
            [sys.executable, __file__, f"--one={name}", "--backbone", args.backbone, "--size", str(args.size),
             "--batch", str(args.batch)], capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name:<22} {result['step_mib']:>14} {result['seconds']:>8}")


if __name__ == "__main__":
    main()
