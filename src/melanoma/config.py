"""The configuration of a run: TrainConfig (every setting, validated, saved as config.json) and the
named recipes (presets): the winners' 18 ensemble members, the ablation baseline and the demo.

A preset is a set of TrainConfig fields (docs/recipe.md, docs/ablations.md). Settings a preset
does not name keep TrainConfig's defaults, which are the winners' (Adam, init LR 3e-5 peaking at
3e-4, batch 64, 15 epochs, warm-up + cosine, 9 classes, 5 dropout samples, ImageNet weights, all
5 folds); options given on the command line override the preset. A preset's `lr` is the winners'
init LR (the number in their model names: 2e = 2e-5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from melanoma.targets import SCHEMES

FOLD_METHODS = ("triple", "default", "newfold", "oldfold")
AMP_MODES = ("off", "bf16", "fp16")
PIPELINES = ("fast", "reference")
WANDB_MODES = ("off", "online", "offline")


def setting(default: Any, help: str, option: str | None = None) -> Any:
    """A TrainConfig field with its command-line help, and its option name when it is not
    --field-name; the CLI's train options are made from these (cli.config_options)."""
    metadata = {"help": help, **({"option": option} if option else {})}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every setting of a run; saved as config.json in the run directory.

    The defaults are the winners' recipe (docs/recipe.md); PRESETS names their models.
    A new setting is one field here: the CLI's options and the ablation suites' keys follow.
    """

    out: str = setting("runs/default", "Run directory.")
    preset: str | None = setting(
        None, "A named recipe (see `melanoma presets`); options given here override it (default: none)."
    )
    backbone: str = setting("efficientnet_b3", "Any timm model name.")
    pretrained: bool = setting(
        True,
        "ImageNet weights, as the winners always fine-tuned (built in for tf_efficientnet_lite0..2, "
        "else the timm hub); --no-pretrained trains from scratch.",
    )
    weights: str | None = setting(
        None,
        "Backbone weights file (safetensors, or a torch state dict); replaces the ImageNet weights "
        "(default: none).",
    )
    data_size: int | None = setting(
        None, "Read the prepared jpeg-*-NxN folders of this N (`melanoma prepare`; default: the originals)."
    )
    image_size: int = setting(384, "Model input size.")
    scheme: str = setting("9c", "Target classes: 9c, 4c, 2c, or mb (ISIC 2024: malignant vs benign).")
    external: bool = setting(True, "Train on ISIC 2019 rows too.")
    image_types: list[str] = setting(
        ["dermoscopic"],
        "ISIC Archive downloads: the image types to read, comma-separated (dermoscopic, clinical: close-up, "
        "clinical: overview, TBP tile: close-up, ...) or all; the other layouts hold one type.",
    )
    fold_method: str = setting(
        "triple",
        "triple (ours; DATA/folds.csv when present) or the winners' default, newfold or oldfold map.",
    )
    use_meta: bool = setting(False, "Use the metadata branch.", option="--meta")
    meta_hidden: tuple[int, int] = setting((512, 128), "Metadata branch sizes.")
    n_dropout: int = setting(5, "Dropout samples in the head (multi-sample dropout).")
    drop_path: float = setting(0.0, "Stochastic depth rate of the backbone (Noisy Student's noise).")
    aux_weight: float = setting(
        0.0,
        "ISIC 2024: weight of an auxiliary head's loss on iddx_1 (Benign / Indeterminate / Malignant, a "
        "train-only column used as a target, never an input; predictions use the main head); 0: no head.",
    )
    epochs: int = setting(15, "Epochs per fold.")
    batch_size: int = setting(64, "Batch size over all processes together.")
    accumulate: int = setting(
        1,
        "Gradient accumulation: each optimiser step sums the gradients of this many micro-batches of "
        "batch_size / accumulate images (the winners' batch of 64 on a smaller GPU; BatchNorm sees the "
        "micro-batches).",
    )
    grad_checkpointing: bool = setting(
        False,
        "Recompute the backbone's activations in the backward pass (timm's checkpointing): less memory.",
    )
    lr: float = setting(
        3e-5, "The winners' init LR (Adam): epoch 1 runs at it, epoch 2 at 10 x it (the peak), then cosine."
    )
    warmup: bool = setting(
        True,
        "Warm-up epoch at --lr before the 10 x peak. --no-warmup: no schedule at all, --lr every epoch "
        "(as the reproduction ran it; cosine is then off too).",
    )
    cosine: bool = setting(True, "Cosine decay from 10 x --lr after the warm-up; off: 10 x --lr constant.")
    augment: bool = setting(True, "The winners' augmentation recipe (off: the validation transform).")
    pipeline: str = setting(
        "fast",
        "Input pipeline: fast (uint8, geometry fused) or reference (the recipe op by op, as published).",
    )
    grad_clip: float | None = setting(
        None, "Clip the gradient norm at this value (the winners: 0.5 at sizes 576 and 896; default: off)."
    )
    amp: str = setting("off", "Mixed precision: off, bf16 (CPU and GPU) or fp16 (CUDA, with loss scaling).")
    channels_last: bool = setting(False, "channels_last memory format.")
    compile: bool = setting(False, "torch.compile the model (the first epoch pays for compilation).")
    sync_bn: bool = setting(True, "Synchronized BatchNorm when more than one process trains.")
    pos_oversample: int = setting(
        1, "Repeat every positive training image (melanoma; ISIC 2024: malignant) this many times an epoch."
    )
    neg_per_epoch: int | None = setting(
        None,
        "Train each epoch on this many negative images, drawn afresh every epoch (ISIC 2024: 0.1% are "
        "malignant); default: all of them.",
    )
    k_folds: int = setting(5, "Number of folds the training rows are split into.")
    folds: list[int] | None = setting(None, "Folds to train, e.g. 0,1,2 (default: all of them).")
    num_workers: int = setting(-1, "Data-loader workers per process; -1: automatic.", option="--workers")
    seed: int = setting(0, "Seed of folds, initialisation, shuffling and augmentation.")
    device: str = setting("auto", "auto, cpu, cuda, cuda:1 ...")
    wandb: str = setting("off", "Weights & Biases logging: off, online or offline.")
    wandb_project: str = setting("melanoma", "W&B project.")
    name: str | None = setting(None, "Run name for W&B (default: the run directory's name).")
    tags: list[str] = setting([], "W&B tags, comma-separated.")

    def __post_init__(self) -> None:
        self.meta_hidden = tuple(self.meta_hidden)
        self.folds = list(range(self.k_folds)) if self.folds is None else list(self.folds)
        if self.weights:  # a weights file replaces the ImageNet weights
            self.pretrained = False
        self.tags = list(self.tags)
        checks = [
            (self.scheme in SCHEMES, f"scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}"),
            (self.fold_method in FOLD_METHODS, f"fold_method must be one of {FOLD_METHODS}"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}"),
            (self.pipeline in PIPELINES, f"pipeline must be one of {PIPELINES}, got {self.pipeline!r}"),
            (self.wandb in WANDB_MODES, f"wandb must be one of {WANDB_MODES}, got {self.wandb!r}"),
            (len(self.meta_hidden) == 2, f"meta_hidden takes two sizes, got {self.meta_hidden}"),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be at least 1"),
            (self.batch_size != 1, "batch_size must be at least 2: BatchNorm needs two images in a batch"),
            (
                self.accumulate >= 1
                and self.batch_size % self.accumulate == 0
                and self.batch_size // self.accumulate >= 2,
                f"accumulate must divide batch_size ({self.batch_size}) into micro-batches of at least 2 images "
                f"(BatchNorm needs two), got {self.accumulate}",
            ),
            (self.image_size >= 16, f"image_size must be at least 16 pixels, got {self.image_size}"),
            (
                self.data_size is None or self.data_size >= 1,
                f"data_size must be positive, got {self.data_size}",
            ),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive finite number, got {self.lr}"),
            (
                self.n_dropout >= 1 and self.k_folds >= 2,
                "n_dropout must be at least 1 and k_folds at least 2",
            ),
            (
                self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
                "grad_clip must be positive and finite (or None: off)",
            ),
            (0 <= self.drop_path < 1, f"drop_path must lie in [0, 1), got {self.drop_path}"),
            (0 <= self.aux_weight < 10, f"aux_weight must lie in [0, 10), got {self.aux_weight}"),
            (self.pos_oversample >= 1, f"pos_oversample must be at least 1, got {self.pos_oversample}"),
            (
                self.neg_per_epoch is None or self.neg_per_epoch >= 1,
                f"neg_per_epoch must be at least 1 (or unset: all), got {self.neg_per_epoch}",
            ),
            (all(0 <= f < self.k_folds for f in self.folds), f"folds must lie in 0..{self.k_folds - 1}"),
        ]
        problems = [text for ok, text in checks if not ok]
        if problems:
            raise ValueError("; ".join(problems))


def config_fields() -> set[str]:
    """Names of TrainConfig's settings."""
    return {f.name for f in fields(TrainConfig)}


def setting_name(key: str) -> str:
    """A TrainConfig field from any way a person writes it: the field (num_workers), its
    command-line option with or without dashes (--workers, workers, meta), or hyphens for
    underscores (image-size). Unknown keys come back as given."""
    bare = key.removeprefix("--")
    for f in fields(TrainConfig):
        option = f.metadata.get("option", "--" + f.name.replace("_", "-")).removeprefix("--")
        if bare in (f.name, option, f.name.replace("_", "-")):
            return f.name
    return key


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
    # The reproduction's ablation baseline, scaled to one GPU (docs/ablations.md).
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
    # ISIC 2024 crops (about 60-240 px): a small modern backbone from the timm hub, the 2020
    # augmentation recipe at crop size, malignant crops repeated and benign ones sampled anew each
    # epoch (about 1 malignant in 100 seen, against 1 in 1,000 in the data), as the 2024 winners did.
    "isic2024": {
        "backbone": "edgenext_x_small",
        "pretrained": True,
        "image_size": 128,
        "scheme": "mb",
        "external": False,
        "epochs": 10,
        "batch_size": 64,
        "pos_oversample": 10,
        "neg_per_epoch": 40_000,
        "aux_weight": 0.3,  # iddx_1 as an auxiliary target, as the top teams did (the weight: ours)
    },
}
# The larger backbones of the 2024 top teams, with the isic2024 preset's sampling and schedule:
# EdgeNeXt small, ConvNeXtV2 nano (both at the crops' 128 px) and EVA-02 small (a ViT, at its
# native 224 px). Their ImageNet weights come from the hub (online) or --weights FILE (offline).
LARGER_2024 = {
    "isic2024-edgenext": {"backbone": "edgenext_small"},
    "isic2024-convnextv2": {"backbone": "convnextv2_nano"},
    "isic2024-eva02": {"backbone": "eva02_small_patch14_224", "image_size": 224},
}
PRESETS.update({name: {**PRESETS["isic2024"], **fields} for name, fields in LARGER_2024.items()})

WINNERS = [name for name in PRESETS if name not in ("baseline", "demo", "isic2024", *LARGER_2024)]


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
