"""Compute estimates of the driver's runs, for the dry run:

    from benchmark.driver.compute import estimate
    est = estimate("pretrain", config, dataset_sizes={"train": 1_281_167})
    print(est.summary())   # "3.1e+20 FLOPs, 690 GPU-h (A100 bf16 312 TFLOP/s at 40% MFU)"

Each run kind estimates itself (its ``estimate`` in :mod:`benchmark.stages.kinds`; how FLOPs are
counted and turned into GPU-hours: :mod:`benchmark.stages.cost`).
"""

from __future__ import annotations

from typing import Any

from benchmark.experiments.model import is_ref
from benchmark.stages.cost import Estimate, unknown
from benchmark.stages.kinds import run_kinds
from benchmark.utils.tree import KEEP, rebuild


def _placeholder(node: Any) -> Any:
    """A ref of an unresolved config as a placeholder path."""
    return f"<{node['ref']}>/{node['file']}" if is_ref(node) else KEEP


def estimate(run_kind: str, config: dict[str, Any], dataset_sizes: dict[str, int] | None = None,
             world_size: int | None = None) -> Estimate:
    """The FLOPs and reference GPU-hours of one run of the driver.

    ``config`` is the run's (resolved or unresolved: paths are not read, except a detect/segment
    run's MMEngine config). ``dataset_sizes`` ({"train": n, "val": m}) gives the image counts of a
    path-only data set; named ones (a finetune/probe ``dataset`` in ``DATASET_SIZES``) are looked up.
    ``world_size`` (detect/segment only) overrides the recipe's global batch as per-GPU x world_size."""
    config = rebuild(config, _placeholder)
    config.pop("tags", None)
    kind = run_kinds().get(run_kind)
    if kind is None or kind.estimate is None:
        return unknown(run_kind, f"no estimate for run kind {run_kind!r}")
    return kind.estimate(config, dataset_sizes, world_size)
