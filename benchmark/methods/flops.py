"""FLOPs of one pre-training step of a method (forward and backward, every view), counted with
:func:`benchmark.models.flops.count_flops` on the meta device: the dry run's pre-training cost."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import torch
import torch.nn as nn

from benchmark.methods import build_method, method_class
from benchmark.methods.base import synthetic_batch
from benchmark.models.flops import COUNT_BATCH, count_flops, meta_vit


def _meta(batch: Any) -> Any:
    """A (nested list of) tensor(s) as meta tensors of the same shapes and dtypes."""
    if isinstance(batch, (list, tuple)):
        return [_meta(b) for b in batch]
    return torch.empty_like(batch, device="meta")


def _to_meta(module: nn.Module) -> nn.Module:
    """``module`` on the meta device, except 0-dim buffers (step counters read with ``int()``),
    which stay real CPU scalars with their values."""
    scalars = {name: buf.detach().clone().cpu() for name, buf in module.named_buffers() if buf.dim() == 0}
    module = module.to("meta")
    for name, value in scalars.items():
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        owner._buffers[attr] = value
    return module


@cache
def _pretrain_flops(method: str, arch: str, img_size: int, method_args_json: str) -> float:
    args = json.loads(method_args_json)
    if method_class(method).needs_labels:  # the pre-training stage sets it from the data; a 1000-way head is a rounding error
        args.setdefault("num_classes", 1000)
    if args.get("tokenizer") == "dall-e":  # no weights needed to count; the dVAE's cost is not counted
        args = {**args, "tokenizer": "random-patches", "tokenizer_weights": None}
    model = _to_meta(build_method(method, meta_vit(arch, img_size), **args))
    model.train()
    batch = _meta(synthetic_batch(model, img_size, COUNT_BATCH))

    def step() -> None:
        model(batch, torch.Generator().manual_seed(0))["loss"].backward()

    return count_flops(step) / COUNT_BATCH


def pretrain_flops_per_image(method: str, arch: str, img_size: int, method_args: dict[str, Any] | None = None) -> float:
    """FLOPs of one image's share of a pre-training step of ``method`` (forward+backward, all
    views): the method's own step on a batch shaped by its own augmentation, so SplitMask's two
    half-sequences plus decoder, MAE's encoder on 25% of the patches and DINO's multi-crop all count
    as they run. A DALL-E tokenizer is counted as a random-patch codebook (the dVAE's no-grad
    forward is left out)."""
    return _pretrain_flops(method, arch, int(img_size), json.dumps(method_args or {}, sort_keys=True))
