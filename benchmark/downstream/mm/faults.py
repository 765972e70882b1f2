"""Detection and segmentation runs that survive being stopped: mmengine's Runner, made to resume
bit for bit, to stop cleanly on SIGTERM, and to write checkpoints that load with ``weights_only``.

* :class:`FaultTolerance` (a hook :func:`benchmark.downstream.mm.runner.build_runner` registers):
  - checkpoints hold tensors and plain values only: mmengine's message hub (``HistoryBuffer``
    objects, numpy scalars) is stored as plain values and rebuilt on loading, so that
    ``torch.load(weights_only=True)`` (torch's default, which mmengine's resume uses) reads them;
  - every checkpoint also holds the torch / numpy / Python RNG states, which the resumed loop
    puts back where the uninterrupted run had them; validation leaves the RNGs as it found them;
  - SIGTERM / SIGUSR2 (:class:`benchmark.training.stop.StopSignal`): after the current iteration the run
    writes ``WORK_DIR/preempt_iter_N.pth``, points ``last_checkpoint`` at it and raises
    :class:`benchmark.errors.Preempted` (the CLIs exit with code 75).
* :class:`ResumableIterBasedTrainLoop` and :class:`ResumableEpochBasedTrainLoop` (what
  :func:`benchmark.downstream.mm.runner.prepare` swaps mmengine's loops for): mmengine's loops, restoring the
  checkpoint's RNG states after skipping the batches already trained, and able to resume in the
  middle of an epoch (mmengine's epoch loop restarts the epoch).
* :class:`AtomicLocalBackend` (``backend_args=dict(backend='sslbench_atomic')``): mmengine's local
  file backend, writing each file to a temporary name and renaming it into place.
"""

from __future__ import annotations

import logging
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dist import all_reduce, is_distributed, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer, print_log
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from benchmark.training.stop import StopSignal, stop_signals_blocked, stopped
from benchmark.utils.io import write_bytes, write_text

ATOMIC_BACKEND = "sslbench_atomic"
PREEMPT_PREFIX = "preempt_"
LAST_CHECKPOINT = "last_checkpoint"  # mmengine's pointer to the latest checkpoint of a work dir
CHECKPOINT_NAMES = ("iter_*.pth", "epoch_*.pth", f"{PREEMPT_PREFIX}iter_*.pth")  # CheckpointHook's and ours
RESUMABLE_LOOPS = {"IterBasedTrainLoop": "ResumableIterBasedTrainLoop",
                   "EpochBasedTrainLoop": "ResumableEpochBasedTrainLoop"}


class AtomicLocalBackend(LocalBackend):
    """mmengine's local backend; ``put`` / ``put_text`` write atomically (temporary file, rename)."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:
        write_bytes(filepath, obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


# ---------------------------------------------------------------------------- plain checkpoints


def rng_state() -> dict[str, Any]:
    """torch's (and CUDA's), numpy's and Python's global RNG states, as tensors and plain values."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays as Python scalars and tensors (what
    ``weights_only`` loading accepts); a new container, the original is left alone."""
    if isinstance(obj, dict):
        return type(obj)((k, plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    return obj


def plain_message_hub(hub: dict[str, Any]) -> dict[str, Any]:
    """A message hub state dict with each ``HistoryBuffer`` as ``{"log", "count", "max_length"}``."""
    scalars = {}
    for key, buffer in hub.get("log_scalars", {}).items():
        if isinstance(buffer, HistoryBuffer):
            logs, counts = buffer.data
            buffer = {"log": torch.from_numpy(np.asarray(logs, dtype=np.float64)),
                      "count": torch.from_numpy(np.asarray(counts, dtype=np.float64)), "max_length": buffer.max_length}
        scalars[key] = buffer
    return {**plain({k: v for k, v in hub.items() if k != "log_scalars"}), "log_scalars": scalars}


def rebuild_message_hub(hub: dict[str, Any]) -> None:
    """The inverse of :func:`plain_message_hub`, in place."""
    for key, value in hub.get("log_scalars", {}).items():
        if isinstance(value, dict) and set(value) == {"log", "count", "max_length"}:
            hub["log_scalars"][key] = HistoryBuffer(value["log"].numpy(), value["count"].numpy(), value["max_length"])


def whole_checkpoint(path: Path) -> bool:
    """A checkpoint file that was written to the end (torch's zip format with its central directory)."""
    return path.is_file() and zipfile.is_zipfile(path)


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint an interrupted run in ``work_dir`` resumes from: the one ``last_checkpoint``
    names, or, where that is missing, empty or points at a partial file, the newest whole one."""
    pointer = work_dir / LAST_CHECKPOINT
    named = pointer.read_text().strip() if pointer.is_file() else ""
    candidates = [Path(named)] if named else []
    candidates += sorted((p for pattern in CHECKPOINT_NAMES for p in work_dir.glob(pattern)),
                         key=lambda p: p.stat().st_mtime, reverse=True)
    return next((p for p in candidates if whole_checkpoint(p)), None)


# ---------------------------------------------------------------------------- the hook


class FaultTolerance(Hook):
    """Plain checkpoints with RNG states, RNG-neutral validation, a clean stop on SIGTERM."""

    priority = "LOWEST"  # after_train_iter: after the param schedulers stepped and CheckpointHook saved

    def __init__(self, kind: str = "training") -> None:
        self.kind = kind
        self.stop = StopSignal()
        self._val_rng: dict[str, Any] | None = None

    def before_train(self, runner: Any) -> None:
        self.stop.install()

    def after_train(self, runner: Any) -> None:
        self.stop.restore()
        if is_main_process():  # only an interrupted run resumes from these (kept where last_checkpoint names one)
            pointer = Path(runner.work_dir) / LAST_CHECKPOINT
            named = pointer.read_text().strip() if pointer.is_file() else ""
            for path in Path(runner.work_dir).glob(f"{PREEMPT_PREFIX}*.pth"):
                if str(path) != named:
                    path.unlink(missing_ok=True)

    def before_val(self, runner: Any) -> None:
        self._val_rng = rng_state()

    def after_val(self, runner: Any) -> None:
        if self._val_rng is not None:
            set_rng_state(self._val_rng)
            self._val_rng = None

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        checkpoint["meta"] = plain(checkpoint["meta"])
        checkpoint["message_hub"] = plain_message_hub(checkpoint["message_hub"])
        checkpoint["rng"] = rng_state()

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        if "message_hub" in checkpoint:
            rebuild_message_hub(checkpoint["message_hub"])
        loop = getattr(runner, "_train_loop", None)
        if isinstance(loop, _RestoresRng) and "rng" in checkpoint:
            loop.resumed_rng = checkpoint["rng"]

    def _requested(self) -> bool:
        flag = torch.tensor([float(self.stop.signum is not None)])
        if is_distributed():  # every process stops at the same iteration
            all_reduce(flag, op="max")
        return bool(flag.item() > 0)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        done = runner.iter + 1
        if done >= runner.max_iters or not self._requested():
            return
        work_dir = Path(runner.work_dir)
        path = work_dir / f"{PREEMPT_PREFIX}iter_{done}.pth"
        runner.save_checkpoint(str(work_dir), path.name, save_optimizer=True, save_param_scheduler=True, by_epoch=False,
                               backend_args=dict(backend=ATOMIC_BACKEND))
        if is_main_process():
            write_text(work_dir / LAST_CHECKPOINT, str(path))
            for old in work_dir.glob(f"{PREEMPT_PREFIX}*.pth"):
                if old != path:
                    old.unlink(missing_ok=True)
        raise stopped(self.kind, self.stop, done, runner.max_iters, path)


# ---------------------------------------------------------------------------- the loops


class _RestoresRng:
    resumed_rng: dict[str, Any] | None = None  # set by FaultTolerance when a checkpoint is resumed

    def restore_rng(self) -> None:
        if self.resumed_rng is not None:
            set_rng_state(self.resumed_rng)
            self.resumed_rng = None


@LOOPS.register_module(force=True)
class ResumableIterBasedTrainLoop(_RestoresRng, IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop``; a resumed run puts the checkpoint's RNG states back after
    skipping the batches already trained, where the uninterrupted run had them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with stop_signals_blocked():  # data-loader workers start here
            super().__init__(*args, **kwargs)

    def run(self) -> Any:
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        if self._iter > 0:
            print_log(f"Advance dataloader {self._iter} steps to skip data that has already been trained",
                      logger="current", level=logging.WARNING)
            for _ in range(self._iter):
                next(self.dataloader_iterator)
        self.restore_rng()
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")
        return self.runner.model


@LOOPS.register_module(force=True)
class ResumableEpochBasedTrainLoop(_RestoresRng, EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop``, which also resumes in the middle of an epoch (a
    checkpoint written on SIGTERM): the epoch's batches already trained are skipped, as the
    iteration-based loop does; the checkpoint's RNG states come back where the uninterrupted run
    had them."""

    def run_epoch(self) -> None:
        self.runner.call_hook("before_train_epoch")
        self.runner.model.train()
        done = self._iter - self._epoch * len(self.dataloader)  # > 0: resumed in the middle of this epoch
        if done <= 0:
            self.restore_rng()  # before the epoch's iterator draws its seed, as in the uninterrupted run
        with stop_signals_blocked():  # data-loader workers start here
            batches = iter(self.dataloader)
        if done > 0:
            print_log(f"Advance dataloader {done} steps to skip data that has already been trained",
                      logger="current", level=logging.WARNING)
            for _ in range(done):
                next(batches)
            self.restore_rng()
        for idx, data_batch in enumerate(batches, start=max(done, 0)):
            self.run_iter(idx, data_batch)
        self.runner.call_hook("after_train_epoch")
        self._epoch += 1
