"""ViT backbones: every model in the suite is a timm VisionTransformer built from a named size.

A *model spec* is a small plain dict, ``{"arch": "vit-s16", "img_size": 224}``, stored beside
every exported checkpoint so that any stage (fine-tuning, MMDetection, MMSegmentation) can
rebuild exactly the architecture the weights belong to.
"""

from __future__ import annotations

from typing import Any

import timm
import torch.nn as nn

# Named sizes -> (timm model name, overrides). Patch 16 everywhere, as in the paper.
# "vit-smoke" is a 4-block ViT-Ti for CPU smoke runs; it keeps ViT-Ti's width and heads.
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit-smoke": ("vit_tiny_patch16_224", {"depth": 4}),
    "vit-ti16": ("vit_tiny_patch16_224", {}),
    "vit-s16": ("vit_small_patch16_224", {}),
    "vit-b16": ("vit_base_patch16_224", {}),
    # BEiT's own encoder (timm's Beit): layer-scale 0.1, no absolute position embedding, one
    # relative position bias shared by all blocks, as in BEiT's pre-training. Pre-training and
    # fine-tuning at the pre-training size only for now; the MMDetection/MMSegmentation backbone
    # takes the vit-* sizes.
    "beit-smoke": ("beit_base_patch16_224", {"embed_dim": 192, "depth": 4, "num_heads": 3,
                                             "use_rel_pos_bias": False, "use_shared_rel_pos_bias": True}),
    "beit-s16": ("beit_base_patch16_224", {"embed_dim": 384, "num_heads": 6,
                                           "use_rel_pos_bias": False, "use_shared_rel_pos_bias": True}),
    "beit-b16": ("beit_base_patch16_224", {"use_rel_pos_bias": False, "use_shared_rel_pos_bias": True}),
}


def model_spec(arch: str, img_size: int) -> dict[str, Any]:
    """The plain-dict description of a ViT that :func:`create_vit` rebuilds."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    return {"arch": arch, "img_size": int(img_size)}


def create_vit(
    arch: str, img_size: int = 224, num_classes: int = 0, drop_path_rate: float = 0.0, **kwargs: Any
) -> nn.Module:
    """A randomly initialised timm ViT of the named size (never downloads weights).

    ``num_classes=0`` gives a headless encoder whose forward returns the pooled feature.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    name, overrides = ARCHS[arch]
    return timm.create_model(
        name,
        pretrained=False,
        img_size=img_size,
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
        **{**overrides, **kwargs},
    )

