"""The catalogue of run kinds: imports every stage (each registers its kind where it is defined,
:func:`benchmark.stages.kinds.register_kind`) and answers what the driver, the dry run and the
report ask of the table. Stages never import this module; what is above them does.
"""

from __future__ import annotations

from benchmark.stages import data, dense, finetune, pixels, pretrain, probe, select  # noqa: F401  (register their kinds)
from benchmark.stages.kinds import KINDS, RunKind


def run_kinds() -> dict[str, RunKind]:
    """Every registered kind."""
    return KINDS


def run_kind(name: str) -> RunKind:
    kinds = run_kinds()
    if name not in kinds:
        raise ValueError(f"unknown run kind {name!r}; expected one of {sorted(kinds)}")
    return kinds[name]


def table_metrics() -> dict[str, tuple[str, ...]]:
    """Result kind (``result.json``'s ``kind``) -> the metrics the report's tables show."""
    return {result: metrics for kind in run_kinds().values() for result, metrics in kind.metrics.items()}


def kind_metrics(name: str) -> tuple[str, ...]:
    """The metrics the report's tables show for runs of kind ``name`` (all its result kinds')."""
    metrics = run_kinds()[name].metrics if name in run_kinds() else {}
    return tuple(dict.fromkeys(m for names in metrics.values() for m in names))
