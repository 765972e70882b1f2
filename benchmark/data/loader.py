"""The suite's data loaders: how many worker processes, and one place that builds a DataLoader.

Workers change how fast batches come, never what they hold: every item is seeded by (seed,
epoch, index) (:class:`~benchmark.data.folders.SeededTransform`), so a batch is the same for any
number of workers. A config's ``num_workers`` of -1 means :func:`default_workers`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from benchmark.data.folders import one_thread_worker
from benchmark.errors import ConfigError

MAX_WORKERS = 10     # BEiT's count per process
PREFETCH = 4         # batches each worker keeps ready


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; all of them where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def default_workers(world_size: int = 1, device: torch.device | None = None) -> int:
    """Data-loader workers per process on this machine, for a model trained on ``device``.

    On a GPU: the cores this process may use, shared among the ``world_size`` processes of this
    node (torchrun's LOCAL_WORLD_SIZE), less one core for the trainer itself, at most 10 (BEiT's
    count) and at least 0 (one core: the trainer loads its own batches). On a CPU: 0. There the
    model's own threads already use every core, so a worker would take its cores from the model
    rather than add any; loading in the trainer costs its share of the step instead, which
    ``python -m benchmark.perf`` reports (on the suite's 2-core machine, one worker per loader
    made the test suite take 19 minutes instead of about 12)."""
    if device is not None and device.type == "cpu":
        return 0
    per_process = available_cores() // max(1, world_size)
    return max(0, min(MAX_WORKERS, per_process - 1))


def resolve_workers(num_workers: int, world_size: int = 1, device: torch.device | None = None) -> int:
    """A config's ``num_workers``: -1 is :func:`default_workers` for ``world_size`` processes on
    this node training on ``device``; other negative values are a :class:`ConfigError`."""
    if num_workers == -1:
        return default_workers(world_size, device)
    if num_workers < 0:
        raise ConfigError(f"num_workers={num_workers} should be -1 (default_workers() for this machine) or at least 0")
    return num_workers


def make_loader(dataset: Dataset, batch_size: int, *, device: torch.device, num_workers: int,
                sampler: Sampler | None = None, shuffle: bool = False, drop_last: bool = False,
                collate_fn: Callable[[list[Any]], Any] | None = None,
                generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader as every trainer of the suite wants one: one torch thread per worker, pinned
    memory for a GPU, and workers that stay up between passes with a few batches ready ahead."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle, drop_last=drop_last,
                      collate_fn=collate_fn, generator=generator, num_workers=num_workers,
                      worker_init_fn=one_thread_worker, pin_memory=device.type == "cuda",
                      persistent_workers=num_workers > 0, prefetch_factor=PREFETCH if num_workers > 0 else None)
