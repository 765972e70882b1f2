"""Loss building blocks shared by the methods."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F


def gather_batch(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows of ``x`` (B, ...), in rank order, and the row at which this process's
    own rows start. Gradients flow back to each process's own rows (from every process's loss).
    Outside torch.distributed, or with one process: ``(x, 0)``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    return torch.cat(dist_fn.all_gather(x)), dist.get_rank() * x.shape[0]


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between two views' descriptors (B, D): row i of ``a`` matches row i of
    ``b``; the other rows of the batch are the negatives. Descriptors are L2-normalised here.

    Under torch.distributed the negatives are the other images of the *global* batch (every
    process's rows), as in a single process over the same global batch: each process's loss is
    the mean over its own rows, and DDP's gradient average makes the update the same."""
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    all_a, offset = gather_batch(a)
    all_b, _ = gather_batch(b)
    target = torch.arange(a.shape[0], device=a.device) + offset
    return (F.cross_entropy(a @ all_b.t() / temperature, target) + F.cross_entropy(b @ all_a.t() / temperature, target)) / 2
