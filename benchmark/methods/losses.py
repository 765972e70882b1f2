"""Every loss of the methods, each a pure function of tensors (the methods hold only their
parts and schedules): SplitMask's InfoNCE, DINO's cross-entropy over views and its teacher's
probabilities, MAE's masked pixel regression, BYOL's normalised regression. The tokenizer
targets' cross-entropy (BEiT, SplitMask) is torch's own."""

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


def teacher_probs(teacher_out: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax((t - c) / tau_t), in float32, without gradient."""
    return F.softmax((teacher_out.detach().float() - center) / temperature, dim=-1)


def dino_loss(student_out: torch.Tensor, probs: torch.Tensor, num_views: int, student_temp: float) -> tuple[torch.Tensor, int]:
    """DINO's cross-entropy over every pair of different views.

    ``student_out``: (V * B, K) raw student outputs, views stacked view-major (global crops
    first); ``probs``: (G * B, K) teacher probabilities of the G global views, in the same order.
    Returns (the mean over pairs (i, v), v != i, of the batch-mean cross-entropy, the number of
    pairs G * (V - 1))."""
    num_teacher = probs.shape[0] * num_views // student_out.shape[0]
    log_p = F.log_softmax(student_out.float() / student_temp, dim=-1).chunk(num_views)
    q = probs.chunk(num_teacher)
    total = student_out.new_zeros((), dtype=torch.float32)
    terms = 0
    for i, q_i in enumerate(q):
        for v, log_p_v in enumerate(log_p):
            if v == i:  # the same view: skipped
                continue
            total = total + torch.sum(-q_i * log_p_v, dim=-1).mean()
            terms += 1
    if terms == 0:
        raise ValueError("DINO needs at least two views (one global crop and one other crop)")
    return total / terms, terms


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the patches where ``mask`` is True of the per-patch mean squared error.
    pred, target (B, N, D); mask (B, N) bool."""
    per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
    weight = mask.to(per_patch.dtype)
    return (per_patch * weight).sum() / weight.sum().clamp(min=1)


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(prediction, target), averaged over the batch (the target carries no gradient)."""
    p = F.normalize(prediction.float(), dim=-1)
    z = F.normalize(target.detach().float(), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The symmetric BYOL loss: predictions of view 1 against target projections of view 2 and
    vice versa, summed."""
    return regression_loss(p1, z2) + regression_loss(p2, z1)
