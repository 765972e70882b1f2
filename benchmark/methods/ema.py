"""Exponential-moving-average (EMA) teachers and targets, shared by DINO and BYOL.

- :func:`make_ema_copy`: a frozen copy of a module (``requires_grad=False``, so that the
  pre-training optimiser, built over all parameters of a method, leaves it alone) with every dropout and
  drop-path probability set to 0, so the copy is deterministic in train mode as well (BYOL's
  target keeps batch-norm in train mode, i.e. batch statistics, as in the paper);
- :func:`ema_update`: ``target = m * target + (1 - m) * online`` over the parameters;
- :func:`cosine_momentum`: the momentum schedule of BYOL and DINO, from ``base`` at step 0
  towards 1.0 at the end of training: ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from benchmark.utils.schedule import cosine_schedule

try:  # timm's stochastic depth; the ViTs of the suite use it
    from timm.layers import DropPath
except ImportError:  # pragma: no cover - timm is a dependency of the suite
    DropPath = ()  # type: ignore[assignment,misc]

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """The EMA momentum at ``step`` of ``total_steps``: ``base`` at step 0, rising to 1.0 by a
    half cosine (BYOL eq. in Sec. 3.2; DINO's ``momentum_schedule``, a ``cosine_scheduler`` from
    ``base`` to 1 without warm-up)."""
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {base}")
    if total_steps <= 0:
        return base
    return cosine_schedule(max(step, 0), base, 1.0, total_steps)


def disable_stochastic_layers(module: nn.Module) -> nn.Module:
    """Sets the probability of every dropout and drop-path layer below ``module`` to 0 (in
    place; the modules stay, so code that reads e.g. ``attn_drop.p`` keeps working)."""
    for sub in module.modules():
        if isinstance(sub, _DROPOUTS):
            sub.p = 0.0
        elif DropPath and isinstance(sub, DropPath):
            sub.drop_prob = 0.0
    return module


def make_ema_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with the same weights, no gradients and no stochastic layers."""
    target = copy.deepcopy(module)
    disable_stochastic_layers(target)
    for param in target.parameters():
        param.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float, buffers: bool = False) -> None:
    """``target = momentum * target + (1 - momentum) * online`` for every parameter (matched by
    name; the two modules must have the same structure). With ``buffers``, floating-point
    buffers are averaged the same way and the others copied."""
    t_params = dict(target.named_parameters())
    o_params = dict(online.named_parameters())
    if t_params.keys() != o_params.keys():
        missing = sorted(set(t_params) ^ set(o_params))[:5]
        raise ValueError(f"EMA target and online modules differ in parameters (e.g. {missing})")
    names = list(t_params)
    tgt = [t_params[n].data for n in names]
    src = [o_params[n].detach().to(t_params[n].dtype) for n in names]
    if tgt:
        torch._foreach_mul_(tgt, momentum)
        torch._foreach_add_(tgt, src, alpha=1.0 - momentum)
    if buffers:
        o_bufs = dict(online.named_buffers())
        for name, buf in target.named_buffers():
            src_buf = o_bufs[name]
            if buf.is_floating_point():
                buf.mul_(momentum).add_(src_buf.to(buf.dtype), alpha=1.0 - momentum)
            else:
                buf.copy_(src_buf)
