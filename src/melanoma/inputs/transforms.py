"""Image transforms: the winners' train-time augmentation on albumentations 2.x, and validation.

Original op (albumentations 0.4.6) -> what is used here:
Transpose, VerticalFlip, HorizontalFlip -> same; RandomBrightness / RandomContrast(0.2) ->
RandomBrightnessContrast with one limit at 0; ShiftScaleRotate -> Affine; CLAHE,
HueSaturationValue, OpticalDistortion -> same. Where 2.x behaves differently from 0.4.6 the op
comes from recipe_ops.py: the blurs (kernels 3 or 5), GaussNoise (variance drawn, every channel),
ElasticTransform (with its random affine), Cutout (0.4.6's placement); GridDistortion runs with
normalized=False; the distortions keep 0.4.6's border (REFLECT_101).
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from melanoma.inputs.recipe_ops import blur_group, cutout, distortion_group
from melanoma.models.weights import IMAGENET_MEAN, IMAGENET_STD

Stats = tuple[float, ...]


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an H x W x C image."""
    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return image[y : y + s, x : x + s]


def train_transform(
    size: int, augment: bool = True, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD
) -> A.Compose:
    """The winners' recipe (docs/recipe.md), in their order; `augment=False` only resizes."""
    if not augment:
        return eval_transform(size, mean, std)
    return A.Compose(
        [
            A.Transpose(p=0.5),
            A.VerticalFlip(p=0.5),
            A.HorizontalFlip(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0, p=0.75),
            A.RandomBrightnessContrast(brightness_limit=0, contrast_limit=0.2, p=0.75),
            A.OneOf(blur_group(), p=0.7),
            A.OneOf(distortion_group(), p=0.7),
            A.CLAHE(clip_limit=4.0, p=0.7),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=10, p=0.5),
            A.Affine(
                translate_percent=(-0.1, 0.1),
                scale=(0.9, 1.1),
                rotate=(-15, 15),
                border_mode=cv2.BORDER_CONSTANT,
                p=0.85,
            ),
            A.Resize(size, size),
            cutout(size, p=0.7),
            A.Normalize(mean=mean, std=std),
        ]
    )


def eval_transform(size: int, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD) -> A.Compose:
    """Validation and test: resize and normalise only."""
    return A.Compose([A.Resize(size, size), A.Normalize(mean=mean, std=std)])


def pipeline_transforms(
    size: int, augment: bool, mean: Stats, std: Stats, pipeline: str = "fast"
) -> tuple[object, A.Compose]:
    """Train and validation transforms of a pipeline: 'fast' (fast_transforms.FastTrainTransform,
    uint8 out, normalised on the device by the model) or 'reference' (the recipe as published,
    float32 normalised on the CPU)."""
    if pipeline == "reference":
        return train_transform(size, augment, mean, std), eval_transform(size, mean, std)
    from melanoma.inputs.fast_transforms import FastTrainTransform

    resize = A.Compose([A.Resize(size, size)])  # uint8
    return (FastTrainTransform(size) if augment else resize), resize
