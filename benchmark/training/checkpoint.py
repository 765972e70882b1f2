"""Training checkpoints: the whole state of a run (weights, optimiser, schedule, step, RNG states,
config) in one file, written atomically, read back with ``weights_only=True``; a run started
again on the same directory resumes from it and ends exactly as an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn as nn

from benchmark.errors import CheckpointError, ConfigError, DiskFull, SuiteError, error_line
from benchmark.utils.io import disk_full, load_failure, torch_save

CHECKPOINT = "checkpoint.pth"
TRAINING_KEYS = ("model", "optimizer", "scheduler", "step", "rng", "config")
# Config fields that change how fast a run goes, not what it computes: a run resumes across them.
# (decode_on_device is not one: its crops are drawn differently from the PIL path's.)
RUNTIME_FIELDS = {"num_workers", "compile"}
T = TypeVar("T")


def save_state(path: Path, **state: Any) -> None:
    """Writes a training checkpoint atomically. Holds tensors and plain values only, so that
    ``torch.load(weights_only=True)`` reads it back. On a full disk the previous checkpoint stays
    as it was and :class:`DiskFull` says so."""
    try:
        torch_save(state, path)
    except DiskFull as err:
        before = "the previous checkpoint is unchanged" if path.is_file() else "there is no earlier checkpoint"
        raise disk_full(err, f"{path}: no space left on device while writing the step {state.get('step')} checkpoint; "
                             f"{before}: free some space, then run the same command again to resume") from None


def load_state(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A training checkpoint (:func:`save_state`), read with ``weights_only=True``; a one-line
    :class:`CheckpointError` for anything else. With ``mmap`` the tensors stay on disk until touched."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # zip, unpickling and storage errors of many types
        raise CheckpointError(f"{path}: not a readable training checkpoint ({load_failure(err)}); move it away, "
                              "or use --resume never to start over") from None
    missing = [k for k in TRAINING_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint of this suite (missing {missing}); move it away, "
                              "or use --resume never to start over")
    return state


def differing_fields(saved: dict[str, Any], config: Any) -> list[str]:
    """The fields (other than :data:`RUNTIME_FIELDS`) in which ``config`` differs from a saved one."""
    current = dataclasses.asdict(config)
    return sorted(k for k in set(saved) | set(current) if k not in RUNTIME_FIELDS and saved.get(k) != current.get(k))


def check_finished_config(out: Path, config: Any) -> None:
    """Refuses ``config`` for a finished run written with another one (its ``config.json``)."""
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return  # no record of the run's config: nothing to compare with
    changed = differing_fields(saved, config) if isinstance(saved, dict) else []
    if changed:
        raise ConfigError(f"{out} holds a finished run of another config (differs in {changed}); use another --out")


def finished(out: Path, done: str, config: Any, stage: str, check: Callable[[Path], T], redo: str) -> T | None:
    """What ``check(out / done)`` returns if ``out`` holds a finished run of ``config`` ("nothing to
    do", on stderr); None if not. A ``done`` file that fails ``check`` (a :class:`SuiteError`: a
    truncated or damaged file) is one line that ends in ``redo``, and the run goes on (from its
    checkpoint) to write it again. A finished run of another config is refused."""
    path = out / done
    if not path.is_file():
        return None
    check_finished_config(out, config)
    try:
        found = check(path)
    except SuiteError as err:
        print(f"[{stage}] {error_line(err)}; {redo}", file=sys.stderr)
        return None
    print(f"[{stage}] {path} exists; nothing to do", file=sys.stderr)
    return found


def evaluate_again(out: Path) -> str:
    """How an evaluation whose ``result.json`` is damaged writes it again (:func:`finished`'s ``redo``)."""
    checkpoint = out / CHECKPOINT
    return f"evaluating again from {checkpoint}" if checkpoint.is_file() else "evaluating again"


def restore_training(path: Path, config: Any, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any) -> dict[str, Any]:
    """Loads a training checkpoint (:func:`save_state`) into the run's objects and returns it;
    refuses a checkpoint written with another config, naming the fields that differ (other than
    :data:`RUNTIME_FIELDS`)."""
    state = load_state(path)
    changed = differing_fields(state["config"], config)
    if changed:
        raise ConfigError(f"{path} was written with another config (differs in {changed}); "
                          "use another --out, or --resume never to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class TrainingCheckpoint:
    """A run's ``checkpoint.pth``: read once at the start (with ``resume``, if it exists; the run
    then continues at its step, and its config must be this run's), written by the loop.

    The global RNG state is restored separately, by :meth:`restore_rng`, once the stage has
    created its data loader's iterator (which draws from the global RNG, as it did at the start of
    the uninterrupted run whose stream the saved state continues)."""

    def __init__(self, out: Path, config: Any, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 resume: bool = True) -> None:
        self.path = out / CHECKPOINT
        self.config, self.model, self.optimizer, self.scheduler = config, model, optimizer, scheduler
        state = restore_training(self.path, config, model, optimizer, scheduler) if resume and self.path.is_file() else None
        self.start = int(state["step"]) if state else 0
        self._rng = state["rng"] if state else None

    @property
    def resumed(self) -> bool:
        return self._rng is not None

    def restore_rng(self) -> None:
        if self._rng is not None:
            set_rng_state(self._rng)

    def save(self, step: int) -> None:
        """The state after ``step`` optimiser steps."""
        save_state(self.path, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                   scheduler=self.scheduler.state_dict(), step=step, rng=rng_state(),
                   config=dataclasses.asdict(self.config))
