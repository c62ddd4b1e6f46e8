"""The winners' published checkpoints (Kaggle dataset boliu0/melanoma-winning-models) read into
this project's network.

Their files, as published: `{member}_{best|best_20|final}_fold{k}.pth`, the member being one of
the 18 preset names; each a plain state dict (read with weights_only; keys prefixed `module.`
when saved from DataParallel). The backbone is under `enet.`: geffnet's EfficientNet with its
classifier removed (the same keys as timm's EfficientNet, which grew out of geffnet), or
pretrainedmodels' se_resnext101_32x4d (timm keeps that network, stem and all, as
legacy_seresnext101_32x4d), or the resnest package's resnest101 (timm's resnest101e, key for
key). The head is `myfc` (one Linear used under the 5 dropouts, as our `fc`), the metadata branch
`meta.0/1/4/5` (Linear, BatchNorm1d, Swish, Dropout, Linear, BatchNorm1d, Swish: our `meta`
Sequential, index for index). tests/models/test_winners.py builds their layout from these facts
on geffnet, pretrainedmodels and resnest, and checks that an import predicts what it predicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from melanoma.config import PRESETS, TrainConfig, resolve
from melanoma.models.model import MelanomaNet, build_model
from melanoma.models.weights import WeightsError

FILE_NAME = re.compile(r"^(?P<member>.+?)_(?P<which>best_20|best|final)_fold(?P<fold>\d+)\.pth$")
CHECKPOINT = {"best": "best", "best_20": "best_20", "final": "last"}  # their name -> ours

# The network each member's file was saved from, where timm names it otherwise than the preset
# (the preset trains on timm's modern SE-ResNeXt, whose stem pools differently).
SAVED_AS = {"seresnext101_32x4d": "legacy_seresnext101_32x4d"}

# The original's metadata features, in its order: sex, age, images per patient, image file size,
# then the site one-hot columns as pandas' get_dummies orders them (sorted, missing last), over
# the 2020 sites (2019's torso sites map to torso). data/metadata.py builds ours in this order.
# (models/ sits below data/, so not built from formats.SITES_2020: test_winners pins the two alike.)
ORIGINAL_META = [
    "sex", "age_approx", "n_images", "image_size", "site_head/neck", "site_lower extremity",
    "site_oral/genital", "site_palms/soles", "site_torso", "site_upper extremity", "site_nan",
]  # fmt: skip


@dataclass(frozen=True)
class Checkpoint:
    """One published file: which member, which checkpoint (ours: best, best_20, last), which fold."""

    path: Path
    member: str
    checkpoint: str
    fold: int


def find_checkpoints(folder: Path) -> list[Checkpoint]:
    """Every published file in a folder (and its subfolders, as the dataset unpacks), by member,
    checkpoint and fold; a .pth file whose name is not theirs, or names no preset, is one error."""
    found, strangers = [], []
    for path in sorted(Path(folder).rglob("*.pth")):
        match = FILE_NAME.match(path.name)
        if match is None or match["member"] not in PRESETS:
            strangers.append(path.name)
            continue
        found.append(Checkpoint(path, match["member"], CHECKPOINT[match["which"]], int(match["fold"])))
    if strangers:
        raise WeightsError(
            f"{folder}: {len(strangers)} .pth file(s) are not the winners' ({', '.join(strangers[:3])}); expected "
            "{member}_{best|best_20|final}_fold{k}.pth with a member from `melanoma presets`"
        )
    if not found:
        raise WeightsError(
            f"{folder}: no {{member}}_best_fold{{k}}.pth files (the winners' checkpoints) here"
        )
    return found


def member_config(member: str, out: Path) -> TrainConfig:
    """The member's preset as the run's settings, with the network its files were saved from."""
    cfg = resolve(member, {"out": str(out)})
    return replace(cfg, backbone=SAVED_AS.get(cfg.backbone, cfg.backbone))


def _their_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with code in it, a truncated file, not a torch file
        raise WeightsError(
            f"{path}: not readable as a plain state dict ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def our_key(key: str) -> str | None:
    """Their name of a tensor -> ours (None: not a name of their layout)."""
    if key.startswith("enet."):
        return "backbone." + key.removeprefix("enet.")
    if key in ("myfc.weight", "myfc.bias"):
        return "fc." + key.removeprefix("myfc.")
    if re.match(r"^meta\.[0145]\.", key):
        return key
    return None


def _first(keys: set[str] | list[str], n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def check_meta(path: Path, state: dict[str, torch.Tensor], columns: list[str]) -> None:
    """A metadata member's first layer must take our features, in the original's order."""
    weight = state.get("meta.0.weight")
    if weight is None:
        return
    if columns != ORIGINAL_META or weight.shape[1] != len(columns):
        raise WeightsError(
            f"{path}: its metadata branch takes {weight.shape[1]} features in the original's order "
            f"({', '.join(ORIGINAL_META)}); ours are {len(columns)}: {', '.join(columns)}"
        )


def load_their_file(path: Path, cfg: TrainConfig, meta_columns: list[str]) -> MelanomaNet:
    """Our network for the member, with one published file's weights, in eval mode; anything
    unexpected (keys missing or extra, shapes) is one error naming the file and the first keys."""
    state = _their_state(path)
    check_meta(path, state, meta_columns)
    model = build_model(replace(cfg, pretrained=False, weights=None), len(meta_columns))
    ours = model.state_dict()
    names = {k: our_key(k) for k in state}
    extra = [k for k, name in names.items() if name not in ours]  # None: not a name of their layout
    mapped = {name: state[k] for k, name in names.items() if name in ours}
    missing = set(ours) - set(mapped)
    if extra or missing:
        raise WeightsError(
            f"{path}: not the {cfg.backbone} layout of member {cfg.preset}: "
            + "; ".join(
                part
                for part in (
                    f"{len(extra)} unexpected key(s) ({_first(extra)})" if extra else "",
                    f"{len(missing)} missing ({_first(missing)})" if missing else "",
                )
                if part
            )
        )
    wrong = [k for k, v in mapped.items() if tuple(v.shape) != tuple(ours[k].shape)]
    if wrong:
        k = sorted(wrong)[0]
        raise WeightsError(
            f"{path}: {len(wrong)} tensor(s) of another shape, e.g. {k}: {tuple(mapped[k].shape)} in the file, "
            f"{tuple(ours[k].shape)} in {cfg.backbone}"
        )
    model.load_state_dict(mapped)
    return model.eval()
