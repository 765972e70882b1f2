"""Compute estimates of the driver's runs, for the dry run:

    from benchmark.driver.compute import estimate
    est = estimate("pretrain", config, dataset_sizes={"train": 1_281_167})
    print(est.summary())   # "3.1e+20 FLOPs, 690 GPU-h (A100 bf16 312 TFLOP/s at 40% MFU)"

Each run kind estimates itself (its ``estimate`` in :mod:`benchmark.stages.kinds`; how FLOPs are
counted and turned into GPU-hours: :mod:`benchmark.stages.cost`).
"""

from __future__ import annotations

from typing import Any

from benchmark.experiments.datasets import data_markers, resolve_data
from benchmark.experiments.model import Run, is_ref
from benchmark.stages.catalogue import run_kind, run_kinds
from benchmark.stages.cost import DATASET_SIZES, Estimate, unknown
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


def estimate_run(run: Run, plan: dict[str, Run] | None = None) -> Estimate:
    """The compute estimate of one run, with the image counts of the real data set it reads, or of
    the data run of ``plan`` (name -> run) that writes it."""
    sizes = None
    for name, path in data_markers(run.config):
        key = f"domainnet-{path.split('/')[0]}" if name == "domainnet" else name
        sizes = DATASET_SIZES.get(key, sizes)
    for name in run.refs():
        source = (plan or {}).get(name)
        written = run_kind(source.kind).sizes if source is not None else None
        sizes = (written(source.config) if written else None) or sizes
    config = resolve_data(run.config, "<data>")
    return estimate(run.kind, config, dataset_sizes=None if run.kind in ("finetune", "probe") and
                    config.get("dataset", "imagefolder") != "imagefolder" else sizes)


def flops_or_none(run: Run, plan: dict[str, Run] | None = None) -> float | None:
    """The dry run's FLOPs estimate of ``run`` for scheduling and the time left, None when unknown.
    Advice only: a config the estimate cannot build is priced unknown here, and the run itself
    reports what is wrong with it when it starts."""
    try:
        return estimate_run(run, plan).flops
    except Exception:  # noqa: BLE001 - any error of a bad config belongs to the run, not the driver
        return None
