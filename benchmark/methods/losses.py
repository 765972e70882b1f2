"""Loss building blocks shared by the methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between two views' descriptors (B, D): row i of ``a`` matches row i of
    ``b``; the other rows of the batch are the negatives. Descriptors are L2-normalised here."""
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.t() / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
