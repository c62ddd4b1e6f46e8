"""`melanoma export RUN --format timm`: each fold model as a folder timm alone loads.

OUT/fold<k>_<checkpoint>/ holds model.safetensors (timm's own network with the run's head as its
classifier), config.json (timm's format, written by timm: architecture, num_classes, label
names, mean, std and input size) and README.md (the run's model card under complete Hugging Face
front matter), ready for `huggingface-cli upload`. Anyone then scores with

    model = timm.create_model("local-dir:OUT/fold0_best", pretrained=True).eval()

At inference the multi-sample-dropout head is its one Linear layer, so a run without metadata is
the timm network exactly (checked on a random batch, within 1e-5); a run with metadata takes a
second input no timm network has, and is refused (its ONNX export serves it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from melanoma.card import model_card
from melanoma.fileio import check_output
from melanoma.models.weights import normalization
from melanoma.run import Run
from melanoma.rundir import checkpoint_name
from melanoma.targets import class_names

TOLERANCE = 1e-5
DATASETS = {  # the data a scheme's runs train on, as the model card's front matter names it
    "mb": ["ISIC 2024 (SLICE-3D)"],
    "default": ["ISIC 2020 (SIIM-ISIC Melanoma Classification)", "ISIC 2019"],
}


def _timm_network(run: Run, fold: int, checkpoint: str) -> torch.nn.Module:
    """timm's network for the run's backbone, carrying the fold's weights and its head as the
    classifier; refused where the two would not give the same logits."""
    import timm

    ours = run.model(fold, checkpoint)
    net = timm.create_model(run.settings.backbone, pretrained=False, num_classes=ours.fc.out_features)
    missing, unexpected = net.load_state_dict(ours.backbone.state_dict(), strict=False)
    head = net.get_classifier()
    prefix = next((name for name, module in net.named_modules() if module is head), "")
    head_keys = {f"{prefix}.{k}" for k in head.state_dict()}
    if unexpected or set(missing) != head_keys or not isinstance(head, torch.nn.Linear):
        raise ValueError(
            f"{run.path}: {run.settings.backbone}'s timm classifier is not one Linear layer after the features "
            "this run's head reads; export it as ONNX (`melanoma export RUN`)"
        )
    head.load_state_dict(ours.fc.state_dict())
    net.eval()
    torch.manual_seed(0)
    size = run.settings.image_size
    x = torch.rand(2, 3, size, size) * 4 - 2
    with torch.no_grad():
        diff = float((net(x) - ours(x)).abs().max())
    if diff > TOLERANCE:
        raise ValueError(f"{run.path}: timm's {run.settings.backbone} differs from the run's by {diff:.1e}")
    return net


def front_matter(run: Run) -> str:
    """Hugging Face model-card metadata for a timm export of the run."""
    cfg = run.settings
    meta = {
        "library_name": "timm",
        "license": "cc-by-nc-4.0",  # the ISIC challenge data is released for non-commercial use
        "datasets": DATASETS.get(run.scheme, DATASETS["default"]),
        "metrics": ["roc_auc"] + (["partial_auc"] if run.scheme == "mb" else []),
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "timm", "dermatology", "melanoma", "skin-lesion"],
    }
    if cfg.pretrained and not cfg.weights:
        meta["base_model"] = f"timm/{cfg.backbone}"
    return "---\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in meta.items()) + "---\n"


def _card(run: Run) -> str:
    body = model_card(run.path).split("---\n", 2)[2]  # the run's card without its own front matter
    usage = (
        "\n## How to use it with timm\n\n```python\nimport timm\n\n"
        'model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()\n```\n\n'
        "Inputs: the largest centred square of the image, resized to the input size in config.json, "
        "normalised with its mean and std. The run scored the mean over its fold models and the 8 flips "
        "and transposes of each image; this folder is one fold model.\n"
    )
    return front_matter(run) + body + usage


def export_timm(
    run: Path, out: Path | None = None, checkpoint: str = "best", allow_unfinished: bool = False
) -> list[Path]:
    """Every fold of an image run without metadata to OUT/fold<k>_<checkpoint>/ (default
    RUN/timm/), each loadable by timm alone."""
    from timm.models import save_for_hf

    opened = Run(run)
    opened.require_image("export")
    if opened.settings.use_meta:
        raise ValueError(
            f"{opened.path} has a metadata branch: its network takes the metadata as a second input, which no "
            "timm model does. Export it as ONNX instead (`melanoma export RUN`, the default format)"
        )
    checkpoint = checkpoint_name(checkpoint)
    out = Path(out) if out else opened.path / "timm"
    cfg, written, card = opened.settings, [], _card(opened)  # one card for every fold's folder
    mean, std = normalization(cfg.backbone, cfg.pretrained)
    for fold in opened.trained_folds(checkpoint, allow_unfinished):
        folder = out / f"fold{fold}_{checkpoint}"
        check_output(folder, folder=True)
        net = _timm_network(opened, fold, checkpoint)
        pretrained_cfg = {"mean": list(mean), "std": list(std), "crop_pct": 1.0, "interpolation": "bilinear"}
        save_for_hf(net, str(folder), model_config={"label_names": class_names(cfg.scheme),
                    "pretrained_cfg": pretrained_cfg}, safe_serialization=True,
                    data_config={"input_size": (3, cfg.image_size, cfg.image_size), "crop_pct": 1.0})  # fmt: skip
        (folder / "README.md").write_text(card, encoding="utf-8")
        written.append(folder)
    return written
