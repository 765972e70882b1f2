"""A finished run of the smoke plan written where the driver would put it (its planned key), so that
the report records it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmark.experiments.plan import locate, order_runs
from benchmark.experiments.registry import plan_runs
from benchmark.utils.io import write_json
from benchmark.utils.results import write_result


@pytest.fixture
def planned_run() -> Callable[..., Path]:
    """``planned_run(runs_dir, name, metrics)`` writes the smoke plan's run ``name`` as finished (its
    run.json, result.json and a weights file) and returns its directory."""
    runs = order_runs(plan_runs("smoke", "smoke"))

    def write(runs_dir: Path, name: str, metrics: dict, key: str | None = None) -> Path:
        keys, dirs = locate(runs, runs_dir)
        run = next(r for r in runs if r.name == name)
        run_dir = dirs[name] if key is None else runs_dir / run.kind / f"{name}-{key}"
        write_json(run_dir / "run.json", {"name": name, "kind": run.kind, "key": key or keys[name], "tags": run.tags,
                                          "config": {}})
        write_result(run_dir, run.kind, metrics, {"seed": 0}, seed=0, started=time.time())
        (run_dir / "checkpoint.pth").write_bytes(b"weights")  # stays in runs/
        return run_dir

    return write
