"""The configuration of a run: TrainConfig (every setting, validated, saved as config.json) and the
named recipes (presets): the winners' 18 ensemble members, the ablation baseline and the demo.

A preset is a set of TrainConfig fields (winning-solution.md, experiments.md). Settings a preset
does not name keep TrainConfig's defaults, which are the winners' (Adam, init LR 3e-5 peaking at
3e-4, batch 64, 15 epochs, warm-up + cosine, 9 classes, 5 dropout samples, ImageNet weights, all
5 folds); options given on the command line override the preset. A preset's `lr` is the winners'
init LR (the number in their model names: 2e = 2e-5).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

FOLD_METHODS = ("triple", "default", "newfold", "oldfold")
AMP_MODES = ("off", "bf16", "fp16")
PIPELINES = ("fast", "reference")
WANDB_MODES = ("off", "online", "offline")


@dataclass
class TrainConfig:
    """Every setting of a run; saved as config.json in the run directory.

    The defaults are the winners' recipe (winning-solution.md); PRESETS names their models.
    """

    out: str = "runs/default"
    preset: str | None = None
    backbone: str = "efficientnet_b3"
    pretrained: bool = True  # ImageNet weights, as the winners always fine-tuned (off: from scratch)
    weights: str | None = None  # backbone weights file (safetensors or a torch state dict); not pretrained
    data_size: int | None = None  # read the prepared jpeg-*-NxN folders of this N
    image_size: int = 384
    scheme: str = "9c"
    external: bool = True  # train on ISIC 2019 rows too
    fold_method: str = "triple"  # triple (ours) or the winners' default / newfold / oldfold maps
    use_meta: bool = False
    meta_hidden: tuple[int, int] = (512, 128)
    n_dropout: int = 5
    drop_path: float = 0.0  # stochastic depth rate of the backbone (Noisy Student's noise)
    epochs: int = 15
    batch_size: int = 64  # over all processes together
    lr: float = 3e-5  # the winners' "init LR": epoch 1 runs at it, the peak is WARMUP_MULTIPLIER x it
    warmup: bool = True  # off: no schedule at all, lr every epoch (as the reproduction ran it)
    cosine: bool = True  # off: lr, then WARMUP_MULTIPLIER x lr constant
    augment: bool = True
    pipeline: str = (
        "fast"  # fast (fast_transforms, uint8 to the device) or reference (albumentations as published)
    )
    grad_clip: float | None = None  # max gradient norm; the winners used 0.5 at sizes 576 and 896
    amp: str = "off"  # off, bf16 (CPU and GPU) or fp16 (CUDA, with loss scaling)
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = True  # synchronized BatchNorm when more than one process trains
    k_folds: int = 5
    folds: list[int] | None = None  # None: all k_folds folds
    num_workers: int = -1  # -1: automatic (loader.auto_workers)
    seed: int = 0
    device: str = "auto"
    wandb: str = "off"  # off, online or offline
    wandb_project: str = "melanoma"
    name: str | None = None  # run name for W&B (default: the run directory's name)
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.meta_hidden = tuple(self.meta_hidden)
        self.folds = list(range(self.k_folds)) if self.folds is None else list(self.folds)
        if self.weights:  # a weights file replaces the ImageNet weights
            self.pretrained = False
        self.tags = list(self.tags)
        checks = [
            (self.scheme in ("9c", "4c", "2c"), f"scheme must be 9c, 4c or 2c, got {self.scheme!r}"),
            (self.fold_method in FOLD_METHODS, f"fold_method must be one of {FOLD_METHODS}"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}"),
            (self.pipeline in PIPELINES, f"pipeline must be one of {PIPELINES}, got {self.pipeline!r}"),
            (self.wandb in WANDB_MODES, f"wandb must be one of {WANDB_MODES}, got {self.wandb!r}"),
            (len(self.meta_hidden) == 2, f"meta_hidden takes two sizes, got {self.meta_hidden}"),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be at least 1"),
            (self.lr > 0 and self.n_dropout >= 1, "lr must be positive and n_dropout at least 1"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive (or None: off)"),
            (all(0 <= f < self.k_folds for f in self.folds), f"folds must lie in 0..{self.k_folds - 1}"),
        ]
        problems = [text for ok, text in checks if not ok]
        if problems:
            raise ValueError("; ".join(problems))


def config_fields() -> set[str]:
    """Names of TrainConfig's settings."""
    return {f.name for f in fields(TrainConfig)}


NS = "tf_efficientnet_{}.ns_jft_in1k"  # timm's Noisy Student weights


def _member(folder: int, size: int, backbone: str, **extra: Any) -> dict[str, Any]:
    preset = {
        "backbone": backbone,
        "pretrained": True,
        "data_size": folder,
        "image_size": size,
        "external": True,
        "fold_method": "default",  # the winners' published map over the tfrecord column
        "folds": [0, 1, 2, 3, 4],
    }
    if size in (576, 896):
        preset["grad_clip"] = 0.5  # the winners clipped gradients at these two sizes only
    return {**preset, **extra}


PRESETS: dict[str, dict[str, Any]] = {
    "9c_meta_b3_768_512_ext_18ep": _member(768, 512, "efficientnet_b3", use_meta=True, epochs=18),
    "9c_b4ns_2e_896_ext_15ep": _member(1024, 896, NS.format("b4"), lr=2e-5),
    "9c_b4ns_448_ext_15ep-newfold": _member(512, 448, NS.format("b4"), fold_method="newfold"),
    "9c_b4ns_768_640_ext_15ep": _member(768, 640, NS.format("b4")),
    "9c_b4ns_768_768_ext_15ep": _member(768, 768, NS.format("b4")),
    "9c_meta_b4ns_640_ext_15ep": _member(768, 640, NS.format("b4"), use_meta=True),
    "4c_b5ns_1.5e_640_ext_15ep": _member(768, 640, NS.format("b5"), scheme="4c", lr=1.5e-5),
    "9c_b5ns_1.5e_640_ext_15ep": _member(768, 640, NS.format("b5"), lr=1.5e-5),
    "9c_b5ns_448_ext_15ep-newfold": _member(512, 448, NS.format("b5"), fold_method="newfold"),
    "9c_meta128_32_b5ns_384_ext_15ep": _member(
        512, 384, NS.format("b5"), use_meta=True, meta_hidden=[128, 32]
    ),
    "9c_b6ns_448_ext_15ep-newfold": _member(512, 448, NS.format("b6"), fold_method="newfold"),
    "9c_b6ns_576_ext_15ep_oldfold": _member(768, 576, NS.format("b6"), fold_method="oldfold"),
    "9c_b6ns_640_ext_15ep": _member(768, 640, NS.format("b6")),
    "9c_b7ns_1e_576_ext_15ep_oldfold": _member(768, 576, NS.format("b7"), lr=1e-5, fold_method="oldfold"),
    "9c_b7ns_1e_640_ext_15ep": _member(768, 640, NS.format("b7"), lr=1e-5),
    # The published command used the default LR 3e-5 despite the name; reproduced as published.
    "9c_meta_1.5e-5_b7ns_384_ext_15ep": _member(512, 384, NS.format("b7"), use_meta=True),
    "9c_nest101_2e_640_ext_15ep": _member(768, 640, "resnest101e", lr=2e-5),
    "9c_se_x101_640_ext_15ep": _member(768, 640, "seresnext101_32x4d"),
    # The reproduction's ablation baseline, scaled to one GPU (experiments.md).
    "baseline": {
        "backbone": "efficientnet_b3",
        "pretrained": True,
        "data_size": 512,
        "image_size": 384,
        "batch_size": 48,
        "external": True,
        "fold_method": "default",
        "folds": [0, 1, 2],
    },
    # Small enough for 2 CPU cores in a couple of minutes; a tiny timm model from scratch.
    # LR 3e-4 peaks at 3e-3 in epoch 2 (the schedule of train.lr_at).
    "demo": {
        "backbone": "test_efficientnet",
        "pretrained": False,
        "image_size": 96,
        "epochs": 8,
        "batch_size": 32,
        "lr": 3e-4,
        "folds": [0],
    },
}

WINNERS = [name for name in PRESETS if name not in ("baseline", "demo")]


def preset(name: str) -> dict[str, Any]:
    """The fields of a named preset (a copy); a clear error lists the names when unknown."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; `melanoma presets` lists: {', '.join(PRESETS)}")
    return {k: list(v) if isinstance(v, list) else v for k, v in PRESETS[name].items()}


def resolve(
    name: str | None = None, overrides: dict[str, Any] | None = None, base: dict[str, Any] | None = None
) -> TrainConfig:
    """TrainConfig from, in rising priority: its defaults, `base` (e.g. a saved config), the
    preset `name`, then `overrides` (options given on the command line; None means not given)."""
    known = config_fields()
    settings = {k: v for k, v in (base or {}).items() if k in known}
    if name is not None:
        settings.update(preset(name), preset=name)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"unknown training settings: {', '.join(unknown)}")
    if given.get("pretrained") and given.get("weights"):
        raise ValueError(
            "give --pretrained or --weights, not both (a weights file replaces ImageNet weights)"
        )
    return TrainConfig(**{**settings, **given})
