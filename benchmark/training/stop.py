"""Stopping a run on request: SIGTERM (what SLURM sends before pre-emption), SIGUSR2 (submitit's
time-out / pre-emption signal) or Ctrl-C (SIGINT) makes a training loop finish its step, write its
checkpoint and raise :class:`~benchmark.errors.Preempted`; the commands then exit with 75 (130 for
Ctrl-C). A second Ctrl-C stops at once (``KeyboardInterrupt``), without a checkpoint. No torch
import here: the driver and the launchers use it too."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, Preempted

if TYPE_CHECKING:
    from benchmark.training.distributed import Context

# SLURM's pre-emption notice; submitit's time-out/pre-emption signal; Ctrl-C
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class StopSignal:
    """Turns SIGTERM, SIGUSR2 and Ctrl-C into a request to stop at the end of the current step (the
    loop then writes a checkpoint and raises :class:`~benchmark.errors.Preempted`) instead of dying
    mid-step; a second Ctrl-C raises ``KeyboardInterrupt`` at once. Installed (main thread only) by
    :meth:`install` or a ``with`` block; :meth:`restore` puts the previous handlers back."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: at once
        if self.signum is None:
            again = "; Ctrl-C again to stop at once" if signum == signal.SIGINT else ""
            print(f"[signal] {signal.Signals(signum).name}: stopping after this step with a checkpoint{again}",
                  file=sys.stderr, flush=True)
        self.signum = signum

    def install(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> StopSignal:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a stop request"

    def requested(self, ctx: Context, sync: bool) -> bool:
        """Whether to stop now. Under DDP every process must stop at the same step: the flags are
        combined only at ``sync`` steps (log and checkpoint steps, where the host waits for the GPU
        anyway); a single process answers at every step."""
        if not ctx.distributed:
            return self.signum is not None
        if not sync:
            return False
        from benchmark.training.distributed import any_across

        stop = any_across(self.signum is not None, ctx)
        if stop and self.signum is None:
            self.signum = int(signal.SIGTERM)  # another process's request
        return stop


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Blocks the stop signals while data-loader workers are started: they inherit the mask and
    so never die of a signal meant for the trainer (whose handler gets it once unblocked); the
    trainer stops them itself."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def stopped(what: str, stop: StopSignal, step: int, total: int, checkpoint: Path) -> Preempted:
    """The :class:`~benchmark.errors.Preempted` a loop raises once its checkpoint is written."""
    code = EXIT_INTERRUPTED if stop.signum == signal.SIGINT else EXIT_PREEMPTED
    return Preempted(f"{what} stopped by {stop.name} after step {step}/{total}; {checkpoint} holds it: run the same "
                     "command again to resume", code)
