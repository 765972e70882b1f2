"""Where and how a run computes: the device, torchrun's process group, seeds, bf16 autocast and
compiled blocks. :func:`start_run` is what every training entry point does first."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from benchmark.training.config import write_config
from benchmark.training.distributed import Context, init_distributed, local_device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def fast_float32_matmul(device: torch.device) -> None:
    """On a GPU, float32 matrix products (those autocast leaves in float32: a codebook's
    nearest-centre search, losses) run on TF32 tensor cores, as timm's training script does."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def start_run(config: Any, out: Path, save_config: bool = True) -> tuple[torch.device, Context]:
    """What every training entry point does first: picks the device (``config.device``), joins
    the process group under torchrun (this process's GPU), lets float32 products use TF32 on a
    GPU, writes ``out/config.json`` on rank 0 (unless ``save_config`` is False: a run that may
    resume writes it once its checkpoint is found to be of the same config) and seeds every RNG
    with ``config.seed``."""
    device = pick_device(config.device)
    ctx = init_distributed(device)
    device = local_device(device, ctx)
    fast_float32_matmul(device)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if save_config:
            write_config(out / "config.json", config)
    seed_everything(config.seed)
    return device, ctx


def autocast(device: torch.device):
    """bf16 autocast on GPUs that support it; a no-op context on CPU."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def is_transformer_block(module: nn.Module) -> bool:
    """A timm transformer block (ViT's or BEiT's ``Block``): the unit the throughput floor and
    :func:`compile_blocks` work on."""
    return type(module).__name__ == "Block"


def compile_blocks(model: nn.Module) -> int:
    """Compiles every transformer block of ``model`` in place (``nn.Module.compile``: parameter
    names, checkpoints and exports are unchanged) and returns how many. Only the blocks: the
    masking, gathers and losses between them hold host-side logic and data-dependent shapes that
    would break a whole-model graph into pieces and recompile it. Whether it pays is measured by
    ``python -m benchmark.perf --compile``, not assumed."""
    blocks = [m for m in model.modules() if is_transformer_block(m)]
    for block in blocks:
        block.compile()
    return len(blocks)
