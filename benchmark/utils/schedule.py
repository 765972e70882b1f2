"""The one schedule rule of the suite: a linear warm-up then a half cosine, per step, as the
reference implementations compute it. Every schedule uses it: the learning rate of pre-training,
fine-tuning and the linear probe (:class:`benchmark.training.optim.ReferenceCosineScheduler`), DINO's
weight decay and teacher temperature, and the EMA momentum of DINO and BYOL.

BEiT's and DINO's ``cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs,
start_warmup_value)`` build one value per iteration::

    warm-up   s < W:      np.linspace(start, base, W)[s]                   (the peak at step W - 1)
    cosine    W <= s < T: final + (base - final) (1 + cos(pi (s - W) / (T - W))) / 2

so the cosine starts at the peak at step W and reaches ``final`` one step after the last. MAE's
``adjust_learning_rate`` (its fine-tuning and linear probe) has the same cosine, but its warm-up
is ``base * s / W`` (the peak at step W, not W - 1), with W possibly fractional (warm-up epochs
times iterations per epoch): ``warmup_rule="mae"``. tests/methods/test_parity.py compares both with
values recorded from the official code.
"""

from __future__ import annotations

import math

WARMUP_RULES = ("beit", "mae")  # BEiT and DINO: np.linspace(start, base, W); MAE: base * s / W
# Written into every result.json (benchmark.utils.results): the report names the results made before
# this rule, which have none (they used timm's cosine over the steps after the warm-up, so that
# the last step still had about a tenth of the peak learning rate).
SCHEDULE_ID = "reference-cosine/1"


def cosine_schedule(step: int, base: float, final: float, total: int, warmup: float = 0, start: float = 0.0,
                    warmup_rule: str = "beit") -> float:
    """The value at ``step`` (0-based) of a ``total``-step schedule: a linear warm-up from
    ``start`` over the first ``warmup`` steps, then a half cosine from ``base`` to ``final``
    (module docstring). Past the end it stays at ``final``."""
    if warmup_rule not in WARMUP_RULES:
        raise ValueError(f"warmup_rule must be one of {WARMUP_RULES}, got {warmup_rule!r}")
    if step < warmup:
        if warmup_rule == "beit":
            span = int(warmup) - 1  # np.linspace(start, base, W): W points, the last one the peak
            return start + (base - start) * step / span if span > 0 else start
        return start + (base - start) * step / warmup
    progress = min(step - warmup, total - warmup) / max(total - warmup, 1e-12)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
