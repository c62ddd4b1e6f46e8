"""The network: a timm backbone, an optional metadata branch and a multi-sample-dropout head."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import load_model
from torch import nn

from melanoma.config import TrainConfig
from melanoma.models.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightsError,
    is_lite,
    load_backbone_weights,
    load_lite,
    normalization,
)
from melanoma.targets import IDDX_1, class_names


class MelanomaNet(nn.Module):
    """Backbone features (+ metadata branch) -> N dropout copies -> one Linear, averaged."""

    def __init__(
        self,
        backbone: str,
        n_classes: int,
        n_meta: int = 0,
        meta_hidden: tuple[int, int] = (512, 128),
        n_dropout: int = 5,
        dropout: float = 0.5,
        pretrained: bool = False,
        weights: str | Path | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        drop_path: float = 0.0,
        n_aux: int = 0,
    ) -> None:
        super().__init__()
        # uint8 images (the fast input pipeline) are normalised here, on the device. Not saved
        # with the weights: they follow from the backbone and its weights (weights.normalization).
        self.register_buffer("input_mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)
        self.backbone = create_backbone(backbone, pretrained, weights=weights, drop_path=drop_path)
        # Pooled width: head_hidden_size where a model has a conv head after the blocks.
        n_features = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.meta: nn.Module | None = None
        if n_meta > 0:
            h1, h2 = meta_hidden
            self.meta = nn.Sequential(
                nn.Linear(n_meta, h1),
                nn.BatchNorm1d(h1),
                nn.SiLU(),
                nn.Dropout(0.3),
                nn.Linear(h1, h2),
                nn.BatchNorm1d(h2),
                nn.SiLU(),
            )
            n_features += h2
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) for _ in range(max(1, n_dropout)))
        self.fc = nn.Linear(n_features, n_classes)
        # an auxiliary head (ISIC 2024: iddx_1), trained beside fc and never used to predict
        self.aux: nn.Linear | None = nn.Linear(n_features, n_aux) if n_aux > 0 else None

    def embed(
        self, image: torch.Tensor, meta: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's pooled features of the images, and the head's input (those, with the
        metadata branch's output when the model has one)."""
        if image.dtype == torch.uint8:
            image = (image.float() - self.input_mean) / self.input_std
        pooled = self.backbone(image)
        if self.meta is None:
            return pooled, pooled
        if meta is None:
            raise ValueError("this model has a metadata branch: pass meta features")
        return pooled, torch.cat([pooled, self.meta(meta)], dim=1)

    def forward(
        self, image: torch.Tensor, meta: torch.Tensor | None = None, with_aux: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The class logits; with `with_aux` (training a model with an auxiliary head, through
        DDP's forward), also the auxiliary head's, through the same dropout copies."""
        features = self.embed(image, meta)[1]
        if with_aux:
            if self.aux is None:
                raise ValueError("this model has no auxiliary head")
            copies = [d(features) for d in self.dropouts] if self.training else [features]
            main = torch.stack([self.fc(c) for c in copies]).mean(dim=0)
            return main, torch.stack([self.aux(c) for c in copies]).mean(dim=0)
        if not self.training:  # dropout is the identity: every copy gives the same logits
            return self.fc(features)
        return torch.stack([self.fc(d(features)) for d in self.dropouts]).mean(dim=0)


def _check_drop_path(name: str, rate: float) -> None:
    """Stochastic depth drops residual branches: refuse a network timm builds without DropPath
    layers (it would ignore the rate, or fail with a TypeError) rather than train without the noise
    asked for."""
    from timm.layers import DropPath

    try:
        probe = timm.create_model(name, pretrained=False, drop_path_rate=rate)
    except TypeError:
        probe = None
    if probe is None or not any(isinstance(m, DropPath) for m in probe.modules()):
        raise ValueError(
            f"{name} takes no stochastic depth (timm builds no DropPath layer for it): --drop-path {rate} "
            "would do nothing; leave it at 0 or choose a network that has it (EfficientNet, ResNet, ConvNeXt, ViT)"
        )


def create_backbone(
    name: str,
    pretrained: bool,
    num_classes: int = 0,
    weights: str | Path | None = None,
    drop_path: float = 0.0,
) -> nn.Module:
    """A timm model by name, classifier removed by default (global-pooled features out).

    Pretrained weights come from `weights` (a file), the offline Lite packages for
    tf_efficientnet_lite0..2, or the timm hub; weights that cannot be had raise WeightsError.
    """
    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        raise ValueError(f"unknown timm backbone {name!r}; see timm.list_models()")
    extra = {"drop_path_rate": drop_path} if drop_path > 0 else {}  # stochastic depth
    if drop_path > 0:
        _check_drop_path(name, drop_path)
    if weights is not None:
        if pretrained:
            raise ValueError("give either pretrained (hub or built-in weights) or a weights file, not both")
        return load_backbone_weights(
            timm.create_model(name, pretrained=False, num_classes=num_classes, **extra), weights
        )
    if pretrained and is_lite(name):
        return load_lite(timm.create_model(name, pretrained=False, num_classes=num_classes, **extra), name)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **extra)
    except Exception as err:
        if not pretrained:
            raise
        raise WeightsError(
            f"could not fetch pretrained weights for {name!r} from the hub ({type(err).__name__}: "
            f"{err}). Pretrained weights are the default (the winners always fine-tuned from ImageNet); "
            "offline, pass --weights FILE (a downloaded checkpoint) or train from scratch with --no-pretrained."
        ) from err


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load safetensors weights saved by this project (no pickle involved); a file that cannot be
    read, or holds another network's weights, is a WeightsError naming the file and the mismatch."""
    if not Path(path).is_file():
        raise WeightsError(f"{path}: not found")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except RuntimeError as err:  # shapes differ: another backbone or head
        first = str(err).strip().splitlines()[-1].strip()
        raise WeightsError(f"{path}: these weights do not fit the network ({first})") from None
    except Exception as err:  # safetensors' own errors: not a safetensors file, truncated
        raise WeightsError(f"{path}: not readable as safetensors ({type(err).__name__}: {err})") from None
    if missing or unexpected:
        raise WeightsError(
            f"{path}: these weights are another network's: {len(missing)} tensor(s) missing "
            f"(e.g. {', '.join(sorted(missing)[:2]) or '-'}), {len(unexpected)} unexpected "
            f"(e.g. {', '.join(sorted(unexpected)[:2]) or '-'})"
        )
    return model


def build_model(cfg: TrainConfig, n_meta: int) -> MelanomaNet:
    """The network a config describes, with the weights it asks for."""
    return MelanomaNet(
        cfg.backbone,
        len(class_names(cfg.scheme)),
        n_meta=n_meta if cfg.use_meta else 0,
        meta_hidden=tuple(cfg.meta_hidden),
        n_dropout=cfg.n_dropout,
        pretrained=cfg.pretrained,
        weights=cfg.weights,
        mean=normalization(cfg.backbone, cfg.pretrained)[0],
        std=normalization(cfg.backbone, cfg.pretrained)[1],
        drop_path=cfg.drop_path,
        n_aux=len(IDDX_1) if cfg.aux_weight > 0 else 0,
    )
