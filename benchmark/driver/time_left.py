"""The time a plan still needs: each run priced from the finished runs of its kind (by FLOPs where
the dry run's estimate knows them), shared among the runs that go side by side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from benchmark.driver.jobs import chain_costs
from benchmark.experiments.model import Run
from benchmark.stages.catalogue import run_kind


class TimeLeft:
    """An estimate of the time the runs still to go will take. Given ``flops`` (the dry run's
    estimate of a run, None when unknown), a run is priced at the seconds per FLOP its kind's
    finished runs took (all training runs', while none of its kind has finished): a fine-tuning is
    not priced as a pre-training. Otherwise, and for a run of unknown FLOPs, each is assumed to last
    as long as the finished runs of its kind and method did on average (its kind alone, or all
    training runs, while none of those has finished). The quick in-process kinds (data, select) do
    not price the others: a plan of minutes is not estimated from a data set written in seconds.
    None until a training run has finished. ``done`` seeds the averages with the runs an earlier
    invocation finished (their ``run.json`` keeps ``wall_s``), so that a resumed plan is priced
    from the start; ``measured`` does the same with durations measured elsewhere (the report's
    records), of runs that are still to run here. With ``jobs`` runs side by side the sum is
    shared among them, yet the plan takes at least as long as its costliest chain of runs that
    need each other (one long run, e.g. a ceiling of many epochs, is not shared among the slots).
    A run that has :meth:`started` counts what is left of its price, not all of it."""

    def __init__(self, runs: list[Run], done: Iterable[tuple[Run, float]] = (), jobs: int = 1,
                 flops: Callable[[Run], float | None] | None = None,
                 measured: Iterable[tuple[Run, float]] = ()) -> None:
        self.pending = {r.name: r for r in runs}
        self.jobs = jobs
        self.estimate = flops
        self.flops: dict[str, float | None] = {}  # each run's, asked of ``flops`` once, when first needed
        self.durations: dict[tuple[str, ...], list[float]] = {}
        self.rates: dict[tuple[str, ...], list[float]] = {}  # key -> [seconds, FLOPs] of finished runs
        self.starts: dict[str, float] = {}  # run name -> time.monotonic() at its start
        for run, seconds in done:
            self.finished(run, seconds)
        for run, seconds in measured:
            self.learn(run, seconds)

    def started(self, run: Run, at: float | None = None) -> None:
        self.starts[run.name] = time.monotonic() if at is None else at

    def finished(self, run: Run, seconds: float | None) -> None:
        self.pending.pop(run.name, None)
        self.starts.pop(run.name, None)
        self.learn(run, seconds)

    def learn(self, run: Run, seconds: float | None) -> None:
        """Prices the runs to go from ``run``'s duration (None: unknown, nothing learnt)."""
        if seconds is not None:
            keys = [(run.kind, str(run.tags.get("method"))), (run.kind,)] + ([()] if trains(run) else [])
            for key in keys:
                self.durations.setdefault(key, []).append(seconds)
            flops = self._flops(run)
            if flops:
                for key in [(run.kind,)] + ([()] if trains(run) else []):
                    total = self.rates.setdefault(key, [0.0, 0.0])
                    total[0] += seconds
                    total[1] += flops

    def _flops(self, run: Run) -> float | None:
        if self.estimate is None:
            return None
        if run.name not in self.flops:
            self.flops[run.name] = self.estimate(run)
        return self.flops[run.name]

    def _guess(self, run: Run) -> float:
        flops = self._flops(run)
        if flops:
            for key in ((run.kind,), ()):
                if key in self.rates:
                    return flops * self.rates[key][0] / self.rates[key][1]
        for key in ((run.kind, str(run.tags.get("method"))), (run.kind,)) + (((),) if trains(run) else ()):
            if key in self.durations:
                return sum(self.durations[key]) / len(self.durations[key])
        return 0.0

    def seconds(self, now: float | None = None) -> float | None:
        """The estimate at ``now`` (``time.monotonic()``'s clock; None: now)."""
        if () not in self.durations:
            return None
        now = time.monotonic() if now is None else now
        guesses = {name: max(self._guess(run) - (now - self.starts[name] if name in self.starts else 0.0), 0.0)
                   for name, run in self.pending.items()}
        longest = max(chain_costs(list(self.pending.values()), lambda run: guesses[run.name]).values(), default=0.0)
        return max(sum(guesses.values()) / self.jobs, longest)


def trains(run: Run) -> bool:
    """A run of a kind that trains (under torchrun where there are GPUs), not a quick in-process one."""
    return run_kind(run.kind).multi_process


def recorded_walls(runs: list[Run], dirs: dict[str, Path], records_dirs: list[Path], scale: str) -> list[tuple[Run, float]]:
    """``(run, seconds)`` for each run of the plan that finished before: in its run directory, else
    kept in one of ``records_dirs`` (the report's records; a later folder's record wins) under the
    same name at the same scale, an earlier recipe's record too (a recipe changed a little runs about
    as long; :class:`TimeLeft` scales by FLOPs where it knows them)."""
    by_name, walls = {r.name: r for r in runs}, {}
    for path in [path for folder in records_dirs for path in sorted(folder.glob("*/*/run.json"))]:
        try:
            record = json.loads(path.read_text())
            if record.get("name") in by_name and record.get("tags", {}).get("scale") == scale:
                walls[record["name"]] = float(record["wall_s"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    for run in runs:
        if (seconds := wall_seconds(dirs[run.name])) is not None:
            walls[run.name] = seconds
    return [(by_name[name], seconds) for name, seconds in walls.items()]


def wall_seconds(run_dir: Path) -> float | None:
    """How long the driver saw a finished run take (``run.json``'s ``wall_s``), if it recorded it."""
    try:
        return float(json.loads((run_dir / "run.json").read_text())["wall_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
