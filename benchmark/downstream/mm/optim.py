"""Layer-wise learning-rate decay for a ViT backbone in MMDetection / MMSegmentation (BEiT's recipe).

:class:`ViTLayerDecayOptimizerConstructor` gives every parameter of a detector or segmentor
(a ``ViTPyramid`` backbone, whose ViT parameters are named ``backbone.vit.<timm key>``) a layer id

* ``0``: ``cls_token``, ``pos_embed`` (and ``mask_token`` / ``reg_token``) and ``patch_embed.*``,
* ``i + 1``: ``blocks.i.*``,
* ``num_layers + 1``: everything else -- the ViT's own final norm and shared relative position
  bias, the pyramid's ``fpn1``/``fpn2`` layers, the neck and the heads,

with ``num_layers`` = the number of transformer blocks (12 for ViT-S/16 and ViT-B/16), and scales
its learning rate by::

    lr = base_lr * layer_decay_rate ** (num_layers + 1 - layer_id)

so the heads train at ``base_lr``, the last block at ``base_lr * rate`` and the patch embedding at
``base_lr * rate ** (num_layers + 1)``. This is BEiT's ``LayerDecayOptimizerConstructor``
(``num_layers=12`` in its configs, internally ``num_layers + 2`` ids and
``rate ** (num_layers + 2 - layer_id - 1)``, the same numbers) and ViTDet's
``get_vit_lr_decay_rate``. Note that ``num_layers`` is the block count, not ``depth + 1``: taking
``depth + 1`` would decay every backbone layer by one extra factor of ``rate``.

Weight decay is 0 for 1-D parameters (norms, biases, layer scales, BEiT's ``q_bias``/``v_bias``),
for ``pos_embed`` / ``cls_token`` / ``mask_token`` / ``reg_token`` and for relative position
bias tables (names containing ``relative_position_bias_table``); every other parameter gets the
optimizer's ``weight_decay``.

Config::

    optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
        constructor='ViTLayerDecayOptimizerConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.65, num_layers=None))  # None: the backbone's depth
"""

from __future__ import annotations

import logging
from typing import Any

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

BACKBONE_PREFIX = "backbone.vit."
_EMBED_PARAMS = ("cls_token", "pos_embed", "mask_token", "reg_token")
_NO_DECAY_NAMES = _EMBED_PARAMS
_PARAMWISE_KEYS = {"num_layers", "layer_decay_rate"}


def vit_layer_id(name: str, num_layers: int, prefix: str = BACKBONE_PREFIX) -> int:
    """The layer id of a model parameter: 0 (embeddings), ``i + 1`` (``blocks.i``), ``num_layers + 1`` (rest)."""
    if not name.startswith(prefix):
        return num_layers + 1
    key = name[len(prefix):]
    if key in _EMBED_PARAMS or key.startswith("patch_embed."):
        return 0
    if key.startswith("blocks."):
        return int(key.split(".")[1]) + 1
    return num_layers + 1


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Whether ``param`` is exempt from weight decay (1-D, bias, embedding token, relative position table)."""
    short = name.rsplit(".", 1)[-1]
    return (
        param.ndim <= 1
        or name.endswith(".bias")
        or short in _NO_DECAY_NAMES
        or "relative_position_bias_table" in name
    )


def layer_scale(layer_id: int, num_layers: int, decay_rate: float) -> float:
    """``decay_rate ** (num_layers + 1 - layer_id)``: the lr multiplier of a layer id."""
    return float(decay_rate) ** (num_layers + 1 - layer_id)


def backbone_depth(model: nn.Module) -> int | None:
    """The number of transformer blocks of ``model.backbone`` (``None`` if it has no ViT blocks)."""
    backbone = getattr(model, "backbone", None)
    vit = getattr(backbone, "vit", None)
    blocks = getattr(vit, "blocks", None)
    return len(blocks) if blocks is not None else None


class ViTLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` with BEiT's layer-wise lr decay over a ``ViTPyramid`` backbone.

    ``paramwise_cfg`` takes ``layer_decay_rate`` (in (0, 1]; 1 = no decay) and ``num_layers``
    (the number of ViT blocks; ``None`` or absent = read from ``model.backbone.vit.blocks``).
    Other ``paramwise_cfg`` keys are rejected rather than silently ignored.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        unknown = sorted(set(self.paramwise_cfg) - _PARAMWISE_KEYS)
        if unknown:
            raise ValueError(f"ViTLayerDecayOptimizerConstructor: unsupported paramwise_cfg keys {unknown}; "
                             f"expected {sorted(_PARAMWISE_KEYS)}")
        if "layer_decay_rate" not in self.paramwise_cfg:
            raise ValueError("ViTLayerDecayOptimizerConstructor: paramwise_cfg needs layer_decay_rate")
        self.decay_rate = float(self.paramwise_cfg["layer_decay_rate"])
        if not 0.0 < self.decay_rate <= 1.0:
            raise ValueError(f"ViTLayerDecayOptimizerConstructor: layer_decay_rate must be in (0, 1], got {self.decay_rate}")
        num_layers = self.paramwise_cfg.get("num_layers")
        if num_layers is not None and (isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1):
            raise ValueError(f"ViTLayerDecayOptimizerConstructor: num_layers must be a positive int, got {num_layers!r}")
        self.num_layers: int | None = num_layers
        if self.base_lr is None:
            raise ValueError("ViTLayerDecayOptimizerConstructor: the optimizer needs an lr")

    def resolve_num_layers(self, model: nn.Module) -> int:
        """``num_layers`` from the config, else the backbone's block count."""
        depth = backbone_depth(model)
        if self.num_layers is None:
            if depth is None:
                raise ValueError("ViTLayerDecayOptimizerConstructor: num_layers not given and the model has no "
                                 "backbone.vit.blocks to count")
            return depth
        if depth is not None and depth != self.num_layers:
            print_log(f"ViTLayerDecayOptimizerConstructor: num_layers={self.num_layers} but the backbone has "
                      f"{depth} blocks", logger="current", level=logging.WARNING)
        if depth is not None and depth > self.num_layers:
            raise ValueError(f"ViTLayerDecayOptimizerConstructor: num_layers={self.num_layers} is smaller than "
                             f"the backbone's {depth} blocks")
        return self.num_layers

    def add_params(self, params: list[dict[str, Any]], module: nn.Module, prefix: str = "",
                   is_dcn_module: int | float | None = None) -> None:
        """Appends one param group per (layer id, decay / no decay) of ``module``'s trainable parameters."""
        num_layers = self.resolve_num_layers(module)
        base_wd = float(self.base_wd or 0.0)
        groups: dict[tuple[int, bool], dict[str, Any]] = {}
        counts: dict[tuple[int, bool], int] = {}
        for name, param in module.named_parameters(prefix=prefix):
            if not param.requires_grad:
                continue
            layer_id = vit_layer_id(name, num_layers)
            if layer_id > num_layers + 1:
                raise ValueError(f"ViTLayerDecayOptimizerConstructor: {name} has layer id {layer_id} > "
                                 f"num_layers + 1 = {num_layers + 1}")
            decay = not no_weight_decay(name, param)
            key = (layer_id, decay)
            if key not in groups:
                scale = layer_scale(layer_id, num_layers, self.decay_rate)
                groups[key] = {
                    "params": [],
                    "lr": self.base_lr * scale,
                    "weight_decay": base_wd if decay else 0.0,
                    "lr_scale": scale,
                    "layer_id": layer_id,
                    "group_name": f"layer_{layer_id}_{'decay' if decay else 'no_decay'}",
                }
                counts[key] = 0
            groups[key]["params"].append(param)
            counts[key] += param.numel()
        ordered = sorted(groups)
        params.extend(groups[k] for k in ordered)
        summary = ", ".join(
            f"{groups[k]['group_name']}: lr {groups[k]['lr']:.3g} wd {groups[k]['weight_decay']:g} "
            f"({len(groups[k]['params'])} tensors, {counts[k]} values)"
            for k in ordered
        )
        print_log(f"ViTLayerDecayOptimizerConstructor: layer_decay_rate {self.decay_rate}, num_layers "
                  f"{num_layers}, base lr {self.base_lr:g}; {summary}", logger="current")


def register(registries: tuple[Any, ...]) -> None:
    """Registers the constructor in each registry under its class name (idempotent)."""
    for registry in registries:
        registry.register_module(name=ViTLayerDecayOptimizerConstructor.__name__,
                                 module=ViTLayerDecayOptimizerConstructor, force=True)
