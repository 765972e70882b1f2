"""Where a plan's time went: the wall time of its runs by kind, the driver's start-up, the machine.

Each driver invocation that ran something appends one record to ``RUNS_DIR/driver.jsonl``:
subset, scale, ``--jobs``, the machine, the start-up (process start to the first run: imports,
planning, data checks), the wall time of the whole invocation and the summed wall time of the
runs it made, by kind (``run.json``'s ``wall_s``). The driver prints it at the end; the report
shows the latest record of each plan (:func:`benchmark.report.build.timing_section`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from benchmark.utils.io import write_text

TIMING_FILE = "driver.jsonl"
# run kind -> what a reader calls that time
KIND_GROUPS = {"pretrain": "pre-training", "finetune": "fine-tuning", "probe": "probes", "pixels": "floors",
               "detect": "evaluation", "segment": "evaluation", "select": "bookkeeping", "data": "data"}


def process_started() -> float:
    """When this process started (``time.time()`` scale; Linux's /proc), else now."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + start_ticks / ticks
    except (OSError, ValueError, IndexError):
        return time.time()


def machine() -> str:
    """The machine in a few words: CPU model and cores, GPUs."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return f"{cores} CPU cores ({model})" + (f", {len(gpus)} x {gpus[0]}" if gpus else ", no GPU")


def by_kind(walls: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """``{group: {"seconds": s, "runs": n}}`` of (run kind, wall seconds) pairs, largest first."""
    groups: dict[str, dict[str, float]] = {}
    for kind, seconds in walls:
        entry = groups.setdefault(KIND_GROUPS.get(kind, kind), {"seconds": 0.0, "runs": 0})
        entry["seconds"] += seconds
        entry["runs"] += 1
    return dict(sorted(groups.items(), key=lambda item: -item[1]["seconds"]))


def summary_line(record: dict[str, Any]) -> str:
    parts = [f"{group} {clock(v['seconds'])} ({int(v['runs'])} runs)" for group, v in record["by_kind"].items()]
    return (f"time by run kind: {', '.join(parts) or 'no runs'}; start-up {clock(record['startup_s'])}; "
            f"wall {clock(record['wall_s'])} with --jobs {record['jobs']} on {record['machine']}")


def record_invocation(runs_dir: Path, record: dict[str, Any]) -> None:
    """Appends ``record`` to ``RUNS_DIR/driver.jsonl`` (rewritten whole, atomically)."""
    path = runs_dir / TIMING_FILE
    old = path.read_text() if path.is_file() else ""
    write_text(path, old + json.dumps(record) + "\n")


def read_invocations(runs_dir: Path) -> list[dict[str, Any]]:
    """The records of ``RUNS_DIR/driver.jsonl`` (unreadable lines skipped)."""
    path = runs_dir / TIMING_FILE
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def clock(seconds: float) -> str:
    """A duration for a progress line: seconds under 90, else minutes."""
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f}s"
