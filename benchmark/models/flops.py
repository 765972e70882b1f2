"""FLOPs of the suite's models, counted by torch's FLOP counter: one implementation for the dry
run's compute estimates (:mod:`benchmark.stages.cost`, with the methods' own steps counted in
:mod:`benchmark.methods.flops`) and the throughput table (:mod:`benchmark.tools.perf`).

A multiply-add counts as 2 FLOPs (a ViT-S/16 forward at 224 is ~9.2e9 FLOPs = DeiT's 4.6 GMACs).
The counter sees matrix products, convolutions and attention (SDPA), i.e. what dominates a ViT;
element-wise work, the optimiser step and data loading are not counted. Model costs are counted on
the *meta* device (shapes only, no arithmetic, well under a second for a ViT-B) at a batch of
:data:`COUNT_BATCH` images and divided by it, and cached.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

from benchmark.models.vit import create_vit

COUNT_BATCH = 2  # images per counted step (SplitMask's InfoNCE needs two)


def _register_cpu_attention_flops() -> None:
    """torch's FLOP counter knows the GPU attention kernels but not the CPU one that
    ``scaled_dot_product_attention`` runs on a CPU; without this, attention would count as free."""
    aten = torch.ops.aten
    if not hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return
    from torch.utils.flop_counter import flop_registry

    if aten._scaled_dot_product_flash_attention_for_cpu in flop_registry:
        return

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call of ``fn`` (matrix products, convolutions and
    attention, forward and backward, as torch's FLOP counter counts them)."""
    _register_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def meta_vit(arch: str, img_size: int | tuple[int, int], num_classes: int = 0, **kwargs: Any) -> nn.Module:
    """The ViT ``arch`` on the meta device: shapes only, no memory, no arithmetic."""
    with torch.device("meta"):
        return create_vit(arch, img_size, num_classes=num_classes, **kwargs)


@cache
def vit_flops(arch: str, img_size: int | tuple[int, int], train: bool = True, num_classes: int = 0) -> float:
    """FLOPs of one image through the bare ViT ``arch``: forward+backward (``train``) or forward."""
    model = meta_vit(arch, img_size, num_classes=num_classes)
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    images = torch.empty(COUNT_BATCH, 3, *size, device="meta")

    def step() -> None:
        if train:
            model(images).float().sum().backward()
        else:
            with torch.no_grad():
                model(images)

    return count_flops(step) / COUNT_BATCH
