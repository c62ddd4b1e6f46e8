"""Shipping a trained run: each fold model as ONNX, checked against PyTorch with onnxruntime.

Each file takes `image` (float32, N x 3 x S x S, RGB, already normalised as its metadata says)
and, for models with a metadata branch, `metadata` (float32, N x M, the columns listed in its
metadata), and returns `probabilities` (softmax over the classes). The ONNX metadata_props carry
everything between a picture and the score `melanoma predict` reports, so that another tool
scores like the toolkit (docs/commands.md: a tested snippet): class names, melanoma index, the
preprocessing (decode, centred square, resize, scale, normalise, with input size, mean and std),
the test-time augmentation, the ensemble over the run's fold files, the calibration temperature,
metadata columns, backbone, fold and checkpoint.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from melanoma.models.weights import normalization
from melanoma.results import Calibration
from melanoma.run import Run
from melanoma.rundir import checkpoint_name
from melanoma.targets import class_names, melanoma_index

TOLERANCE = 1e-4
# What `melanoma predict` does around the network (inputs/dataset.py, inputs/transforms.py,
# models/inference.py, evaluation/predict.py), written into every exported file.
PREPROCESSING = (
    "decode to 8-bit RGB with the EXIF orientation applied; the largest centred square; resize to "
    "input_size x input_size (bilinear, OpenCV INTER_LINEAR) as 8-bit; x = (pixel / 255 - mean) / std; "
    "NCHW float32"
)
TTA = (
    "the mean of the probabilities over 8 views: the image, flipped left-right, flipped up-down, both, "
    "and each of these four transposed (height and width swapped)"
)
ENSEMBLE = "the mean of the probabilities of every fold file listed in `folds` (fold<k>_<checkpoint>.onnx)"
SCORE = (
    "the melanoma probability p = probabilities[melanoma_index] after TTA and the fold mean; with a "
    "calibration temperature T, sigmoid(log(p / (1 - p)) / T); what `melanoma predict` reports"
)


class _Probabilities(nn.Module):
    """The network with a softmax on top; its inputs are named `image` and `metadata`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        return torch.softmax(self.net(image, metadata), dim=1)


def _need_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ValueError(f"ONNX export needs {', '.join(missing)}: pip install 'melanoma[export]'")


def export_fold(
    run: Path, fold: int, path: Path, checkpoint: str = "best", folds: list[int] | None = None
) -> tuple[Path, float]:
    """Export one fold model (`folds`: every fold exported with it, whose mean is the run's
    score); returns the file and the largest difference between onnxruntime's and PyTorch's
    probabilities on a random batch (an error above 1e-4)."""
    folds = [fold] if folds is None else folds
    _need_onnx()
    import onnx
    import onnxruntime as ort

    opened = Run(run)
    cfg, columns = opened.settings, opened.meta_columns
    model = _Probabilities(opened.model(fold, checkpoint)).eval()
    size = cfg.image_size
    torch.manual_seed(0)
    inputs = (torch.randn(2, 3, size, size),) + ((torch.randn(2, len(columns)),) if columns else ())
    names = ["image", "metadata"][: len(inputs)]
    batch = torch.export.Dim("batch", min=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch's notes on naming the one dynamic axis twice
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        torch.onnx.export(
            model,
            inputs,
            str(path),
            input_names=names,
            output_names=["probabilities"],
            dynamic_shapes=tuple({0: batch} for _ in inputs),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    mean, std = normalization(cfg.backbone, cfg.pretrained)
    fit = Calibration.load(run)
    props = {
        "classes": json.dumps(class_names(cfg.scheme)),
        "melanoma_index": str(melanoma_index(cfg.scheme)),
        "input_size": str(size),
        "input_layout": "NCHW RGB float32, (pixel / 255 - mean) / std",
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        "preprocessing": PREPROCESSING,
        "test_time_augmentation": TTA,
        "ensemble": ENSEMBLE,
        "folds": json.dumps(folds),
        "calibration": json.dumps({} if fit is None else {"temperature": fit.temperature}),
        "score": SCORE,
        "metadata_columns": json.dumps(columns),
        "backbone": cfg.backbone,
        "fold": str(fold),
        "checkpoint": checkpoint_name(checkpoint),
    }
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))
    # Check on a fresh batch of another size: same probabilities from onnxruntime and PyTorch.
    torch.manual_seed(1)
    check = (torch.rand(3, 3, size, size) * 4 - 2,) + ((torch.randn(3, len(columns)),) if columns else ())
    with torch.no_grad():
        expected = model(*check).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(names, check, strict=True)})[0]
    diff = float(np.abs(got - expected).max())
    if diff > TOLERANCE:
        raise ValueError(f"{path}: onnxruntime differs from PyTorch by {diff:.2e} (> {TOLERANCE})")
    return path, diff


def export_run(
    run: Path, out: Path | None = None, checkpoint: str = "best", allow_unfinished: bool = False
) -> list[tuple[Path, float]]:
    """Every fold of a run to OUT/fold<k>_<checkpoint>.onnx (default RUN/onnx/)."""
    _need_onnx()
    run = Path(run)
    out = Path(out) if out else run / "onnx"
    checkpoint = checkpoint_name(checkpoint)
    folds = Run(run).trained_folds(checkpoint, allow_unfinished)
    return [export_fold(run, k, out / f"fold{k}_{checkpoint}.onnx", checkpoint, folds) for k in folds]
