"""The run records behind the report, kept beside it: ``records/<kind>/<name>-<key>/``.

A run directory holds weights and data (hundreds of MB) beside a few small files that say what ran
and what it measured: ``run.json`` (name, key, tags, config, wall time), the stage's resolved
config, its log and its result. Before each rebuild the report copies those files of every finished
run that the registry plans into the records (committed with the tables), with the driver's time
record, and builds from the records. So a fresh clone, whose ``runs/`` is empty, still has the
evidence behind every number, ``python -m benchmark.report`` rebuilds the same report there, and a
plan run again replaces only the records of its own runs. A record whose run the registry no
longer plans (its config or the MMEngine config it names changed, so its key did) is removed with
a line saying so: a table never mixes a superseded recipe's numbers with the current ones. One
report at a time writes them (:func:`benchmark.report.build.rebuild` holds the report directory's
lock), and a record that is there but cannot be read stops the report (:func:`damaged_records`).
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path

from benchmark.errors import ResultError
from benchmark.experiments.model import Run
from benchmark.experiments.plan import is_done, locate, order_runs
from benchmark.experiments.registry import every_plan
from benchmark.stages.catalogue import run_kinds
from benchmark.training.stop import stop_signals_blocked
from benchmark.utils.io import write_text
from benchmark.utils.results import RESULT_FILE, load_result
from benchmark.utils.timing import TIMING_FILE, read_invocations

RECORDS = "records"
# What the report reads (result, run, the selection's choice, the pre-training monitor's log) and
# what a reader needs to audit it (the stage's resolved config). Weights and data stay in runs/.
RECORD_FILES = ("run.json", "config.json", "log.jsonl", "result.json", "choice.json")
STAGING = ".new"  # a record being copied, beside the one it replaces


@functools.lru_cache(maxsize=1)
def _layout() -> tuple[dict[str, Run], dict[str, tuple[str, ...]]]:
    planned: dict[str, Run] = {}
    scales: dict[str, set[str]] = {}
    for (_, scale), runs in every_plan().items():
        ordered = order_runs(list(runs))
        _, dirs = locate(ordered, Path())
        for run in ordered:
            planned[dirs[run.name].as_posix()] = run
            scales.setdefault(dirs[run.name].as_posix(), set()).add(scale)
    return planned, {rel: tuple(sorted(found)) for rel, found in scales.items()}


def planned_runs() -> dict[str, Run]:
    """``<kind>/<name>-<key>`` -> the run, for every run that an artifact of the registry plans at any
    of its scales."""
    return _layout()[0]


def planned_scales() -> dict[str, tuple[str, ...]]:
    """``<kind>/<name>-<key>`` -> the scales whose plans hold that very run (the same config, so the
    same key): a run two scales share, such as a pixel floor, is one run that counts at each."""
    return _layout()[1]


def save_records(runs_dir: Path, records_dir: Path) -> int:
    """Copies the record files of every finished planned run below ``runs_dir`` into ``records_dir``
    (a run's record replaced whole) and merges the driver's time records. Returns the runs recorded."""
    planned = planned_runs()
    # The caller holds the lock, so no other report is copying: a staged copy here was left by a
    # report killed mid-copy, and its run is copied again below if it is still finished.
    for stale in sorted(records_dir.glob(f"*/*{STAGING}")):
        shutil.rmtree(stale)
        print(f"[report] {stale} removed: a copy left by a report that was stopped while recording", file=sys.stderr)
    saved = 0
    for rel, run in planned.items():
        run_dir = runs_dir / rel
        if not run_dir.is_dir() or not is_done(run, run_dir):
            continue
        # written beside the old record and swapped in, so that a failed copy leaves the old one whole
        record, fresh = records_dir / rel, records_dir / f"{rel}{STAGING}"
        fresh.mkdir(parents=True)
        try:
            for name in RECORD_FILES:
                if (run_dir / name).is_file():
                    shutil.copyfile(run_dir / name, fresh / name)
        except BaseException:  # a full disk, Ctrl-C: this process's own copy goes, the old record stays
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        with stop_signals_blocked():  # Ctrl-C waits for the swap: never a moment with neither record
            shutil.rmtree(record, ignore_errors=True)
            fresh.rename(record)
        saved += 1
    _merge_time_records(runs_dir, records_dir)
    return saved


def remove_superseded(records_dir: Path) -> list[str]:
    """Removes the records that no planned run has (their config or recipe changed since, so their
    key did), with a line each, whether or not a runs directory is at hand (a fresh clone's report
    must not show a superseded recipe's numbers either). Returns their ``<kind>/<dir>`` names."""
    planned = planned_runs()
    removed = []
    for run_json in sorted(records_dir.glob("*/*/run.json")):
        rel = run_json.parent.relative_to(records_dir).as_posix()
        if rel not in planned and not rel.endswith(STAGING):
            shutil.rmtree(run_json.parent)
            removed.append(rel)
            print(f"[report] record {rel} removed: no artifact plans this run any more (its config or recipe changed)",
                  file=sys.stderr)
    return removed


def _merge_time_records(runs_dir: Path, records_dir: Path) -> None:
    """The driver's invocation records of both directories, once each, in the order they finished."""
    merged = {json.dumps(r, sort_keys=True): r for r in read_invocations(records_dir) + read_invocations(runs_dir)}
    if merged:
        ordered = sorted(merged.values(), key=lambda r: str(r.get("finished", "")))
        write_text(records_dir / TIMING_FILE, "".join(json.dumps(r) + "\n" for r in ordered))


def damaged_records(records_dir: Path) -> list[str]:
    """One line per record that cannot be read: its ``run.json`` missing or not a JSON object, or
    for an evaluation its ``result.json`` missing or breaking the schema. A build without it would
    change a table's n, and a finding, without a word."""
    evaluations = {name for name, kind in run_kinds().items() if kind.metrics}
    damaged = []
    for record in sorted(p for p in records_dir.glob("*/*") if p.is_dir() and not p.name.endswith(STAGING)):
        run_json = record / "run.json"
        try:
            if not isinstance(json.loads(run_json.read_text()), dict):
                raise ValueError("not a JSON object")
            if record.parent.name in evaluations:
                load_result(record / RESULT_FILE)
        except ResultError as err:
            damaged.append(str(err))
        except OSError as err:
            damaged.append(f"{run_json}: cannot read it ({err.strerror or err})")
        except ValueError as err:
            damaged.append(f"{run_json}: not a readable run.json ({err})")
    return damaged
