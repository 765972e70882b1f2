"""Supervised pre-training, DeiT-style: the paper's "supervised" rows pre-train on the same
(subsets of) labelled images with a classification loss, RandAugment, random erasing,
Mixup/CutMix and label smoothing, all from timm. The classifier head is not exported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from timm.data import Mixup, create_transform
from timm.layers import trunc_normal_
from timm.loss import SoftTargetCrossEntropy

from benchmark.data.augment import Augmentation, ViewSpec, single_crop_spec
from benchmark.errors import ConfigError
from benchmark.methods.base import PretrainMethod, register_method
from benchmark.training.config import at_least, augment_policy, in_unit, optional


@register_method
class Supervised(PretrainMethod):
    name = "supervised"
    needs_labels = True
    RULES = {
        "num_classes": at_least(1), "mixup": at_least(0), "cutmix": at_least(0), "smoothing": in_unit(zero=True, one=False),
        "rand_augment": optional(augment_policy()), "random_erase": in_unit(zero=True),
    }

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        mixup: float = 0.8,
        cutmix: float = 1.0,
        smoothing: float = 0.1,
        rand_augment: str | None = "rand-m9-mstd0.5-inc1",
        random_erase: float = 0.25,
    ) -> None:
        super().__init__(encoder)
        self.num_classes = num_classes
        self.rand_augment, self.random_erase = rand_augment, random_erase
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        # Mixup/CutMix with label smoothing gives soft targets; without them, smoothed hard targets.
        self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing,
                           num_classes=num_classes) if mixup > 0 or cutmix > 0 else None
        self.smoothing = smoothing

    def train_transform(self, aug: Augmentation) -> Callable[[Any], Any]:
        return create_transform(
            input_size=aug.img_size, is_training=True, scale=aug.crop_scale, hflip=aug.hflip,
            auto_augment=self.rand_augment, color_jitter=aug.color_jitter if self.rand_augment is None else None,
            re_prob=self.random_erase, re_mode="pixel",
        )

    def view_specs(self, aug: Augmentation) -> ViewSpec:
        """The single crop with colour jitter; RandAugment and random erasing have no batched form."""
        if self.rand_augment is not None or self.random_erase > 0:
            raise ConfigError(f"supervised pre-training with images_on_device has no RandAugment or random erasing: set "
                              f"rand_augment to null and random_erase to 0 (got {self.rand_augment!r}, {self.random_erase})")
        return single_crop_spec(aug)

    def forward(self, batch: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        images, labels = batch
        if self.mixup is not None:
            # timm's Mixup draws from numpy's global RNG: seed it from this step's generator.
            np.random.seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            images, targets = self.mixup(images, labels)
        else:
            targets = nn.functional.one_hot(labels, self.num_classes).float()
            targets = targets * (1 - self.smoothing) + self.smoothing / self.num_classes
        logits = self.head(self.encoder(images))
        loss = SoftTargetCrossEntropy()(logits.float(), targets)
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == labels).float().mean()
        return {"loss": loss, "train_acc": accuracy}
