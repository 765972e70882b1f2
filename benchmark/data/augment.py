"""The augmentation settings every pre-training method may read (:class:`Augmentation`, from the
pre-training config) and the default single-crop augmentation (BEiT's), which SplitMask, BEiT and
MAE train on and :mod:`benchmark.data.device_decode` reproduces on the GPU; one augmented view as
data (:class:`ViewSpec`), which the per-image PIL path (:mod:`benchmark.methods.views`) and the
batched path (:mod:`benchmark.data.batch_views`) both execute; and the evaluation transform every
stage shares (:func:`eval_transform`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import ceil
from typing import Any

from timm.data import create_transform

EVAL_CROP = 0.875  # timm's, MAE's and BEiT's ImageNet evaluation: resize to 256, centre crop 224
RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect ratios (timm's and torchvision's default)


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


@dataclass(frozen=True)
class ViewSpec:
    """One augmented view, as data: a random resized crop to ``size`` (area share in ``scale``,
    aspect ratio in :data:`RATIO`, torchvision's rule of ten tries then a centre crop), a
    horizontal flip with probability ``hflip``, with probability ``jitter_p`` colour jitter of
    strengths ``jitter`` (brightness, contrast, saturation, hue: torchvision's ``ColorJitter``, the
    four in a random order), greyscale with probability ``gray_p``, with probability ``blur_p`` a
    Gaussian blur of sigma uniform in ``blur_sigma`` pixels, with probability ``solarize_p``
    solarisation at 128 of 255, then ImageNet normalisation. ``interpolation`` is the PIL path's
    (timm's single crop: bilinear; BYOL's and DINO's views: bicubic)."""

    size: int
    scale: tuple[float, float]
    hflip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.0)
    jitter_p: float = 1.0
    gray_p: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    interpolation: str = "bilinear"

    def blur_radius(self) -> int:
        """Half the width of the blur's kernel: three sigmas of the widest blur, at least one."""
        return max(1, ceil(3 * self.blur_sigma[1]))


def single_crop_spec(aug: Augmentation) -> ViewSpec:
    """:func:`single_crop_transform` as a :class:`ViewSpec`: timm's jitter is always applied, with
    no hue."""
    j = aug.color_jitter
    return ViewSpec(aug.img_size, aug.crop_scale, aug.hflip, (j, j, j, 0.0), jitter_p=1.0 if j > 0 else 0.0)
