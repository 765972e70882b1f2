"""ViT backbones: every model in the suite is a timm VisionTransformer built from a named size.

A *model spec* is a small plain dict, ``{"arch": "vit-s16", "img_size": 224}``, stored beside
every exported checkpoint so that any stage (fine-tuning, MMDetection, MMSegmentation) can
rebuild exactly the architecture the weights belong to.
"""

from __future__ import annotations

import re
from typing import Any

import timm
import torch
import torch.nn as nn

# Named sizes -> (timm model name, overrides). Patch 16, as in the paper, except vit-mini.
# "vit-smoke" is a 4-block ViT-Ti for CPU smoke runs; it keeps ViT-Ti's width and heads.
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit-smoke": ("vit_tiny_patch16_224", {"depth": 4}),
    # The mini scale's ViT (Fashion-MNIST's 28x28 images resized to 32 px): 6 blocks of width 128
    # (4 heads), 8x8 patches: 16 tokens, each about 7x7 pixels of the original. Sized for a 2-core CPU.
    "vit-mini": ("vit_tiny_patch16_224", {"embed_dim": 128, "num_heads": 4, "depth": 6, "patch_size": 8}),
    "vit-ti16": ("vit_tiny_patch16_224", {}),
    "vit-s16": ("vit_small_patch16_224", {}),
    "vit-b16": ("vit_base_patch16_224", {}),
    # BEiT's own encoder (timm's Beit): layer-scale 0.1, no absolute position embedding, one
    # relative position bias shared by all blocks, as in BEiT's pre-training. Downstream (fine-tuning,
    # MMDetection / MMSegmentation) BEiT gives every block its own table (``downstream_kwargs``),
    # initialised from the shared one (``benchmark.models.checkpoints.geometry.adapt_state_dict``).
    "beit-smoke": ("beit_base_patch16_224", {"embed_dim": 192, "depth": 4, "num_heads": 3,
                                             "use_rel_pos_bias": False, "use_shared_rel_pos_bias": True}),
    "beit-s16": ("beit_base_patch16_224", {"embed_dim": 384, "num_heads": 6,
                                           "use_rel_pos_bias": False, "use_shared_rel_pos_bias": True}),
    "beit-b16": ("beit_base_patch16_224", {"use_rel_pos_bias": False, "use_shared_rel_pos_bias": True}),
}


# create_vit overrides giving a beit-* arch one relative position bias table per block and no shared
# one: BEiT's layout for fine-tuning, detection and segmentation (and of fine-tuned BEiT releases).
PER_BLOCK_REL_POS: dict[str, Any] = {"use_rel_pos_bias": True, "use_shared_rel_pos_bias": False}


def is_beit(arch: str) -> bool:
    """Whether ``arch`` is one of the timm ``Beit`` sizes (relative position bias, layer-scale)."""
    return arch.startswith("beit-")


def downstream_kwargs(arch: str) -> dict[str, Any]:
    """Extra :func:`create_vit` arguments of the model that fine-tunes ``arch`` downstream: per-block
    relative position bias for beit-* (BEiT's practice), nothing for vit-*."""
    return dict(PER_BLOCK_REL_POS) if is_beit(arch) else {}


def spec_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    """Extra :func:`create_vit` arguments recorded in a model spec beyond arch and img_size: an optional
    ``"rel_pos_bias": "per-block"`` (a beit-* checkpoint with one table per block, e.g. an imported
    fine-tuned BEiT release; ``"shared"`` or absent is the arch's own layout), and its pooling
    (:func:`pool_kwargs`)."""
    layout = spec.get("rel_pos_bias", "shared")
    if layout == "per-block" and is_beit(str(spec.get("arch", ""))):
        return {**PER_BLOCK_REL_POS, **pool_kwargs(spec)}
    if layout != "shared":
        raise ValueError(f"model spec {spec}: rel_pos_bias {layout!r} is not 'shared' or 'per-block' of a beit-* arch")
    return pool_kwargs(spec)


def pool_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    """The pooling a model spec records: ``"global_pool": "avg"`` (MAE's fine-tuned releases: the mean
    of the patch tokens, then ``fc_norm``, timm's own option) or, absent, ``"token"`` (the class token
    after the final norm: every encoder the suite trains)."""
    pool = spec.get("global_pool", "token")
    if pool not in ("token", "avg"):
        raise ValueError(f"model spec {spec}: global_pool {pool!r} is not 'token' or 'avg'")
    return {"global_pool": "avg"} if pool == "avg" else {}


def patch_size(arch: str) -> int:
    """The patch side of a named size (its override, else the timm model name's ``patchNN``)."""
    name, overrides = ARCHS[arch]
    return int(overrides.get("patch_size", re.search(r"patch(\d+)", name).group(1)))


def model_spec(arch: str, img_size: int) -> dict[str, Any]:
    """The plain-dict description of a ViT that :func:`create_vit` rebuilds."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    return {"arch": arch, "img_size": int(img_size)}


def create_vit(
    arch: str, img_size: int | tuple[int, int] = 224, num_classes: int = 0, drop_path_rate: float = 0.0, **kwargs: Any
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


def pooled_features(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The ViT's pooled feature (the class token for the suite's ViTs, the mean of the patch
    tokens for an encoder imported with global pooling), whatever its head."""
    return vit.forward_head(vit.forward_features(images), pre_logits=True)
