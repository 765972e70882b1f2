"""The augmentation settings every pre-training method may read (:class:`Augmentation`, from the
pre-training config) and the default single-crop augmentation (BEiT's), which SplitMask, BEiT and
MAE train on and :mod:`benchmark.data.device_decode` reproduces on the GPU; and the evaluation
transform every stage shares (:func:`eval_transform`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from timm.data import create_transform

EVAL_CROP = 0.875  # timm's, MAE's and BEiT's ImageNet evaluation: resize to 256, centre crop 224


def eval_transform(img_size: int, crop: float = EVAL_CROP) -> Callable[[Any], Any]:
    """Resize, centre crop, ImageNet normalisation (timm's evaluation transform); the crop keeps
    ``crop`` of the resized image's side (1.0: the whole image, for items that fill their frame)."""
    return create_transform(input_size=img_size, is_training=False, crop_pct=crop)


@dataclass
class Augmentation:
    """The augmentation settings of the pre-training config that every method may read."""

    img_size: int
    crop_scale: tuple[float, float] = (0.08, 1.0)
    color_jitter: float = 0.4
    hflip: float = 0.5          # probability of a horizontal flip (0 for data that flips change, e.g. digits)


def single_crop_transform(aug: Augmentation) -> Callable[[Any], Any]:
    """BEiT's augmentation of one image: random resized crop, horizontal flip, colour jitter,
    ImageNet normalisation (timm's ``create_transform``)."""
    return create_transform(
        input_size=aug.img_size, is_training=True, scale=aug.crop_scale, hflip=aug.hflip,
        color_jitter=aug.color_jitter, auto_augment=None, re_prob=0.0,
    )
