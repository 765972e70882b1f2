"""The one training loop of the suite. Pre-training, fine-tuning and the linear probe call
:func:`train` with their own step (a function that computes one micro-batch's losses); the loop
does what they share, written once:

- gradient accumulation over ``accum_steps`` micro-batches, with DDP's gradient all-reduce on the
  last one only (``no_sync`` before);
- the update: the stage's ``before_update`` (clipping, a method's hooks), the optimiser step, the
  schedule stepped once per optimiser step, the stage's ``after_update`` (EMA teachers);
- the non-finite guard (:class:`FiniteGuard`), checked at log and checkpoint steps only, so the
  host does not wait for the GPU in between;
- the JSON-lines log (the losses averaged over micro-batches and processes, the learning rate of
  the last parameter group, whose ``lr_scale`` is 1 under layer decay);
- checkpoints every ``checkpoint_every`` steps and at the end (:class:`TrainingCheckpoint`), from
  which a run started again resumes exactly;
- the stop signal: SIGTERM or SIGUSR2 finish the current step, write a checkpoint and raise
  :class:`~benchmark.errors.Preempted` (the commands exit with code 75);
- an optional ``monitor`` (a function of no arguments returning scores, e.g. pre-training's k-NN
  :mod:`~benchmark.training.monitor`), called on the main process before the first step and every
  ``monitor_every`` steps, its scores logged as a record of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn as nn

from benchmark.errors import NonFiniteLoss
from benchmark.training.checkpoint import TrainingCheckpoint
from benchmark.training.distributed import Context, mean_across
from benchmark.training.log import RunLog
from benchmark.training.stop import StopSignal, stopped

# step(step, micro_step) -> scalars of one micro-batch, "loss" the one to minimise (not yet backwarded)
Step = Callable[[int, int], dict[str, torch.Tensor]]
Hook = Callable[[int], None]
Monitor = Callable[[], dict[str, float]]


class FiniteGuard:
    """Watches the loss for NaN and inf without making the host wait for the GPU at every step:
    the first non-finite loss and its step stay on the loss's device, and :meth:`check` (called
    before a log line or a checkpoint is written) reads them and raises :class:`NonFiniteLoss`.
    Steps after the first bad one may run before the check; nothing they produce is saved.
    ``saved`` is the step of the run's last checkpoint (None before its first), which the error names."""

    def __init__(self, checkpoint: Path, saved: int | None = None) -> None:
        self.checkpoint, self.saved = checkpoint, saved
        self.first: torch.Tensor | None = None  # (step, loss) of the first non-finite loss; step -1: none yet

    def watch(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().to(torch.float64)
        if self.first is None:
            self.first = torch.tensor([-1.0, 0.0], dtype=torch.float64, device=loss.device)
        record = torch.stack([torch.full((), float(step), dtype=torch.float64, device=loss.device), loss])
        is_first = ~torch.isfinite(loss) & (self.first[0] < 0)
        self.first = torch.where(is_first, record, self.first)

    def check(self) -> None:
        """Raises if a watched loss was not finite, here or (under DDP) on any other process,
        so that every process stops at the same step."""
        step, value = self.first.tolist() if self.first is not None else (-1.0, 0.0)
        if torch.distributed.is_initialized():
            device = self.first.device if self.first is not None else None
            flag = torch.tensor([float(step >= 0)], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() > 0 and step < 0:
                raise NonFiniteLoss(f"another process's loss is not finite; stopping. {self._last_good()}")
        if step >= 0:
            raise NonFiniteLoss(f"the loss is {value} at step {int(step)}; stopping. {self._last_good()}")

    def _last_good(self) -> str:
        if self.saved is None:  # the file may hold an earlier run (--resume never), not this one
            return "No checkpoint was written yet (lower the learning rate or raise the warm-up, then run again)"
        return (f"The last good checkpoint is {self.checkpoint}, of step {self.saved} (a lower learning rate or a "
                "longer warm-up is another config, which does not resume from it: start again with --resume never)")


def train(step: Step, checkpoint: TrainingCheckpoint, *, total: int, batch_size: int, what: str, desc: str, out: Path,
          ctx: Context, log_every: int, checkpoint_every: int, accum_steps: int = 1, ddp: nn.Module | None = None,
          before_update: Hook | None = None, after_update: Hook | None = None, monitor: Monitor | None = None,
          monitor_every: int = 0) -> None:
    """Runs optimiser steps ``checkpoint.start`` to ``total`` (module docstring). ``batch_size`` is
    the global batch (the log's images per second); ``what`` names the stage in a stop message
    ("pre-training"), ``desc`` in the progress line; ``ddp`` is the DDP wrapper, if any."""
    optimizer, scheduler = checkpoint.optimizer, checkpoint.scheduler
    log = RunLog(out / "log.jsonl", total, checkpoint.start, desc=desc, every=log_every) if ctx.is_main else None
    guard = FiniteGuard(checkpoint.path, saved=checkpoint.start if checkpoint.resumed else None)
    monitor = monitor if log is not None and monitor_every > 0 else None
    stop = StopSignal().install()
    try:
        if monitor is not None and checkpoint.start == 0:
            log.record(0, **monitor())
        for index in range(checkpoint.start, total):
            # Losses stay on the device until a log line needs them: the host reads the GPU only
            # at log and checkpoint steps, so that it keeps queueing work in between.
            scalars: dict[str, torch.Tensor] = {}
            for micro_step in range(accum_steps):
                sync = micro_step == accum_steps - 1 or ddp is None  # DDP reduces on the last micro-step only
                with nullcontext() if sync else ddp.no_sync():
                    losses = step(index, micro_step)
                    guard.watch(losses["loss"], index)
                    (losses["loss"] / accum_steps).backward()
                for key, value in losses.items():
                    scalars[key] = scalars.get(key, 0.0) + value.detach().float() / accum_steps
            if before_update is not None:
                before_update(index)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step_update(index + 1)
            if after_update is not None:
                after_update(index)
            logging = (index + 1) % log_every == 0 or index + 1 == total
            checkpointing = (index + 1) % checkpoint_every == 0 or index + 1 == total
            stopping = stop.requested(ctx, sync=logging or checkpointing) and index + 1 < total
            if logging or checkpointing or stopping:
                guard.check()
            if logging:
                values = mean_across({k: float(v) for k, v in scalars.items()}, ctx)
                if log:
                    log.step(index, batch_size, lr=optimizer.param_groups[-1]["lr"], **values)
            elif log:
                log.step(index, batch_size)
            if monitor is not None and ((index + 1) % monitor_every == 0 or index + 1 == total):
                log.record(index + 1, **monitor())
            if checkpointing or stopping:
                if ctx.is_main:
                    checkpoint.save(index + 1)
                guard.saved = index + 1
            if stopping:
                raise stopped(what, stop, index + 1, total, checkpoint.path)
    finally:
        stop.restore()
        if log:
            log.close()
