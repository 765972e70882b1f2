"""The optimiser (timm's AdamW, layer decay) and the learning-rate schedule every training loop
steps once per optimiser step (the reference rule of :mod:`benchmark.utils.schedule`)."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2
from timm.scheduler.scheduler import Scheduler

from benchmark.utils.schedule import WARMUP_RULES, cosine_schedule


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float | None = None, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Optimizer:
    """AdamW from timm: no weight decay on norms, biases and ``model.no_weight_decay()``;
    optional layer-wise learning-rate decay (timm's ``layer_decay``). On a GPU, torch's fused
    AdamW kernel (one launch for all parameters; the same update)."""
    on_gpu = next(model.parameters()).is_cuda
    extra = {"fused": True} if on_gpu else {}
    return create_optimizer_v2(model, "adamw", lr=lr, weight_decay=weight_decay, layer_decay=layer_decay, betas=betas,
                               **extra)


def set_weight_decay(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Sets the weight decay of the decayed parameter groups (norms, biases and embeddings, in
    groups of weight decay 0, stay undecayed)."""
    for group in optimizer.param_groups:
        if group["weight_decay"] > 0:
            group["weight_decay"] = value


class ReferenceCosineScheduler(Scheduler):
    """timm's scheduler interface (``step_update`` once per optimiser step, ``state_dict``, each
    group's ``lr_scale`` from layer decay applied) over the reference implementations' rule:
    :func:`benchmark.utils.schedule.cosine_schedule`, from 0 through the warm-up to ``base`` and by
    a half cosine to ``min_lr`` at the end of the run. timm's own ``CosineLRScheduler`` cannot
    express it: its warm-up reaches the peak one step after BEiT's ``np.linspace``."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: float, min_lr: float,
                 warmup_rule: str = "beit") -> None:
        if warmup_rule not in WARMUP_RULES:
            raise ValueError(f"warmup_rule must be one of {WARMUP_RULES}, got {warmup_rule!r}")
        self.total_steps, self.warmup_steps, self.min_lr = max(1, total_steps), warmup_steps, min_lr
        self.warmup_rule = warmup_rule
        super().__init__(optimizer, "lr", t_in_epochs=False)
        self.step_update(0)

    def _get_lr(self, t: int) -> list[float]:
        return [cosine_schedule(t, base, self.min_lr, self.total_steps, self.warmup_steps, warmup_rule=self.warmup_rule)
                for base in self.base_values]


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: float, min_lr: float,
                    warmup_rule: str = "beit") -> ReferenceCosineScheduler:
    """Linear warm-up from 0, then a cosine to ``min_lr`` at the last step, stepped once per
    optimiser step (``step_update``). ``warmup_rule``: "beit" (BEiT and DINO, pre-training and
    fine-tuning) or "mae" (MAE's linear probe); see :mod:`benchmark.utils.schedule`."""
    return ReferenceCosineScheduler(optimizer, total_steps, warmup_steps, min_lr, warmup_rule)
