"""Explanations: where in the image the melanoma score comes from (Grad-CAM).

Grad-CAM (Selvaraju et al., 2017, through the `grad-cam` package) weighs the backbone's last
feature map by the gradient of the melanoma logit. Each image is explained as it is predicted:
its centre square at the run's input size, every fold model asked (or, for an out-of-fold row,
the model that did not see it), and with test-time augmentation the heatmap of each of the 8
orientations turned back to the image's own orientation before averaging. Heatmaps are scaled to
0..1 per image and drawn over the centre square (RUN/explain/).

The gallery (`--gallery N`, from the out-of-fold rows) shows the N melanomas scored lowest
(misses) and the N other lesions scored highest (false alarms), each with its heatmap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from melanoma import rundir
from melanoma.fileio import atomic_write, write_csv
from melanoma.inputs.decode import read_rgb
from melanoma.inputs.transforms import center_square, eval_transform
from melanoma.models.inference import dihedral_views
from melanoma.models.weights import normalization
from melanoma.progress import progress_bar
from melanoma.results import Gallery
from melanoma.run import Run
from melanoma.targets import class_names, melanoma_index


class _MelanomaLogits(nn.Module):
    """The model as Grad-CAM calls it: images in, class logits out (metadata held fixed)."""

    def __init__(self, model: nn.Module, meta: torch.Tensor | None) -> None:
        super().__init__()
        self.model, self.meta = model, meta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, self.meta)


def _spatial(out: object) -> bool:
    return torch.is_tensor(out) and out.dim() == 4 and min(out.shape[-2:]) > 1


def feature_layer(model: nn.Module, size: int = 128) -> nn.Module:
    """The backbone's last module with a spatial output (N x C x H x W, H and W above 1): the
    feature map that global pooling reads, whatever the timm architecture."""
    last: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, out: last.append(mod) if _spatial(out) else None)
        for m in model.backbone.modules()
        if m is not model.backbone
    ]
    try:
        with torch.no_grad():
            model.backbone(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    if not last:
        raise ValueError(f"{type(model.backbone).__name__}: no spatial feature map to explain")
    return last[-1]


def _undo_view(maps: np.ndarray, index: int) -> np.ndarray:
    """Heatmaps (N x H x W) of dihedral view `index` back in the image's orientation."""
    if index >= 4:
        maps = maps.transpose(0, 2, 1)
    if index % 4 in (1, 3):
        maps = maps[:, :, ::-1]
    if index % 4 in (2, 3):
        maps = maps[:, ::-1, :]
    return np.ascontiguousarray(maps)


def _normalise(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0)


def gradcam(
    model: nn.Module,
    images: torch.Tensor,
    meta: torch.Tensor | None,
    target: int,
    tta: bool = True,
    layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM heatmaps (N x H x W, 0..1) of class `target` for a batch of model inputs, at
    `layer` (default: feature_layer(model))."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.eval()
    views = dihedral_views(images) if tta else [images]
    total = np.zeros((len(images), images.shape[2], images.shape[3]))
    with GradCAM(model=_MelanomaLogits(model, meta), target_layers=[layer or feature_layer(model)]) as cam:
        for i, view in enumerate(views):
            maps = cam(input_tensor=view.contiguous(), targets=[ClassifierOutputTarget(target)] * len(images))
            total += _undo_view(np.asarray(maps, dtype=np.float64), i)
    return _normalise(total / len(views))


def _inputs(run: Path, rows: pd.DataFrame) -> tuple[torch.Tensor, np.ndarray]:
    """Model inputs of the rows (centre square, resized, normalised) and the resized squares (RGB
    0..1) to draw on."""
    cfg = Run(run).settings
    mean, std = normalization(cfg.backbone, cfg.pretrained)
    to_input = eval_transform(cfg.image_size, mean, std)
    squares = [center_square(read_rgb(p)) for p in rows.image_path]
    batch = np.stack([to_input(image=s)["image"] for s in squares]).transpose(0, 3, 1, 2)
    shown = np.stack(
        [eval_transform(cfg.image_size, (0, 0, 0), (1, 1, 1))(image=s)["image"] for s in squares]
    )
    return torch.from_numpy(np.ascontiguousarray(batch)), np.clip(shown, 0, 1)


def heatmaps(
    run: Path,
    rows: pd.DataFrame,
    meta: np.ndarray | None,
    folds: list[int] | None = None,
    checkpoint: str = "best",
    tta: bool = True,
    progress: bool = True,
    batch: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps of the melanoma logit for each row (N x S x S at the run's input size S, 0..1),
    averaged over `folds` (None: each row's own out-of-fold model, from its `fold` column), and
    the centre squares (N x S x S x 3, RGB 0..1)."""
    opened = Run(run)
    target = melanoma_index(opened.scheme)
    models: dict[int, tuple[nn.Module, nn.Module]] = {}  # fold -> (model, its feature layer)

    def fold_model(k: int) -> tuple[nn.Module, nn.Module]:
        if k not in models:
            model = opened.model(k, checkpoint)
            models[k] = (model, feature_layer(model))
        return models[k]

    maps, shown = [], []
    with progress_bar("explain: Grad-CAM", len(rows), progress) as advance:
        for start in range(0, len(rows), batch):
            part = rows.iloc[start : start + batch]
            images, squares = _inputs(run, part)
            m = None if meta is None else torch.as_tensor(meta[start : start + batch], dtype=torch.float32)
            total = np.zeros(images.shape[:1] + images.shape[2:])
            if folds is None:  # each row by the model that held it out
                for i, k in enumerate(part.fold.astype(int)):
                    model, layer = fold_model(k)
                    one = None if m is None else m[i : i + 1]
                    total[i] = gradcam(model, images[i : i + 1], one, target, tta, layer)[0]
            else:
                for k in folds:
                    model, layer = fold_model(k)
                    total += gradcam(model, images, m, target, tta, layer)
                total /= len(folds)
            maps.append(_normalise(total))
            shown.append(squares)
            advance(len(part))
    return np.concatenate(maps), np.concatenate(shown)


def overlay(square: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """A heatmap drawn over its image (RGB uint8), as Grad-CAM figures are usually shown."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(
        square.astype(np.float32), heat.astype(np.float32), use_rgb=True, image_weight=0.55
    )


def write_overlays(names: list[str], squares: np.ndarray, maps: np.ndarray, folder: Path) -> list[Path]:
    """folder/<image_name>.png for each image: the square and its heatmap side by side."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, square, heat in zip(names, squares, maps, strict=True):
        pair = np.concatenate([(square * 255).round().astype(np.uint8), overlay(square, heat)], axis=1)
        path = folder / f"{name}.png"
        atomic_write(path, lambda tmp, pair=pair: Image.fromarray(pair).save(tmp, format="PNG"))
        paths.append(path)
    return paths


def lesion_share(maps: np.ndarray, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Share of each heatmap's mass inside a circle (centre x, y and radius r as fractions of the
    square's side)."""
    n, h, w = maps.shape
    yy, xx = (np.mgrid[0:h, 0:w] + 0.5) / np.array([h, w])[:, None, None]
    inside = (xx[None] - x[:, None, None]) ** 2 + (yy[None] - y[:, None, None]) ** 2 <= r[:, None, None] ** 2
    return (maps * inside).sum(axis=(1, 2)) / np.maximum(maps.sum(axis=(1, 2)), 1e-12)


def lesion_in_square(
    width: np.ndarray, height: np.ndarray, x: np.ndarray, y: np.ndarray, r: np.ndarray
) -> tuple:
    """A lesion's centre (x, y: fractions of the image's width and height) and radius (r: a
    fraction of its short side), as synth records them, in fractions of the centre square the
    model sees."""
    width, height = np.asarray(width), np.asarray(height)
    side = np.minimum(width, height)
    return (
        (np.asarray(x) * width - (width - side) // 2) / side,
        (np.asarray(y) * height - (height - side) // 2) / side,
        np.asarray(r, dtype=np.float64),
    )


def explain_images(
    run: Path,
    table: pd.DataFrame,
    meta: np.ndarray | None,
    out: Path | None = None,
    checkpoint: str = "best",
    tta: bool = True,
    allow_unfinished: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Overlays for image files (a read_images table), averaged over every trained fold model;
    written to `out` (default RUN/explain/images); returns image_name, file."""
    run = Path(run)
    folds = Run(run).trained_folds(checkpoint, allow_unfinished)
    maps, squares = heatmaps(run, table, meta, folds, checkpoint, tta, progress)
    paths = write_overlays(
        list(table.image_name), squares, maps, Path(out or run / rundir.EXPLAIN / "images")
    )
    return pd.DataFrame({"image_name": table.image_name.to_numpy(), "file": [str(p) for p in paths]})


def gallery(
    run: Path, table: pd.DataFrame, meta: np.ndarray | None, n: int = 4, checkpoint: str = "best", tta: bool = True,
    progress: bool = True,
) -> Gallery:  # fmt: skip
    """The `n` most confident misses and false alarms among the run's latest out-of-fold rows,
    each explained by the model that held it out; RUN/explain/gallery/*.png and
    RUN/explain/gallery.csv (kind, image_name, fold, target, melanoma score, file relative to RUN)."""
    opened = Run(run)
    run, cfg, oof = opened.path, opened.settings, opened.latest_oof()
    mel = melanoma_index(cfg.scheme)
    score = oof[class_names(cfg.scheme)[mel]]
    misses = oof[oof.target == mel].assign(score=score).nsmallest(n, "score").assign(kind="miss")
    alarms = oof[oof.target != mel].assign(score=score).nlargest(n, "score").assign(kind="false alarm")
    picked = pd.concat([misses, alarms], ignore_index=True)
    index = pd.Index(table.image_name)
    at = index.get_indexer(picked.image_name)
    if (at < 0).any():
        raise ValueError(
            f"out-of-fold image(s) of {run} not in this data, e.g. {picked.image_name[at < 0].iloc[0]}"
        )
    rows = table.iloc[at].assign(fold=picked.fold.to_numpy())
    maps, squares = heatmaps(run, rows, None if meta is None else meta[at], None, checkpoint, tta, progress)
    folder = run / rundir.EXPLAIN / "gallery"
    paths = write_overlays(list(rows.image_name), squares, maps, folder)
    files = [str(p.relative_to(run)) for p in paths]  # relative: the run directory can move
    result = picked[["kind", "image_name", "fold", "target", "score"]].assign(file=files)
    write_csv(result, run / Gallery.FILE)
    return Gallery(result)
