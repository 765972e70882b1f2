"""``--jobs N``: independent runs of a plan at the same time, each with its share of the machine.

A run starts as soon as every run it needs has finished and one of the ``N`` slots is free (a
slot: a share of the CPU cores and, on a GPU machine, one of its GPUs: slot k uses GPU k mod G,
so that with more slots than GPUs several runs share each GPU, which pays where one small run
leaves a GPU idle between its kernels: docs/mini.md measures it). Each run is its kind's command
in a process of its own (``python -m benchmark.<stage> --config ... --out RUN``), its output in
``RUN/launch.log``, with its share set before torch starts: ``OMP_NUM_THREADS`` (torch's intra-op
threads) = cores // N, and ``CUDA_VISIBLE_DEVICES`` = the slot's GPU. A run's result therefore
does not depend on what runs beside it: it equals the same run made alone with the same thread
count (on a GPU, up to the run-to-run differences of its kernels). The kinds without a command line (``data``) run in
the driver's process when they are ready (they take seconds).

Among the runs ready to start, the one heading the costliest chain of runs still to go starts
first (:func:`longest_chain_first`): a long pre-training is not left until the quick runs beside
it are done. A run that fails blocks the runs that need it; the others go on. SIGTERM to the
driver is passed to every running run (each writes its checkpoint and exits), then the driver
stops with code 75; Ctrl-C reaches the runs from the terminal, the driver waits for them and
stops with code 130.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import REPO
from benchmark.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, LaunchError, Preempted
from benchmark.experiments.model import Run

LOG_FILE = "launch.log"
# The miniature's runs at the same time per GPU when --jobs is not given: a vit-mini run leaves most
# of an H200 idle between its kernels (docs/mini.md: throughput of 1, 2 and 4 runs side by side).
RUNS_PER_GPU = 4
POLL_S = 0.2


def cpu_cores() -> int:
    """The cores this process may use (the affinity mask, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def slot_environment(jobs: int, slot: int, gpus: int) -> dict[str, str]:
    """The environment of the run in ``slot`` (0..jobs-1): its share of the cores, its GPU."""
    threads = str(max(1, cpu_cores() // jobs))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(gpus)]
        env["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
    return env


def check_jobs(jobs: int, gpus: int) -> str | None:
    """What is wrong with ``--jobs`` on this machine, or None."""
    if jobs < 1:
        return f"--jobs must be at least 1, got {jobs}"
    return None


def chain_costs(runs: list[Run], cost: Callable[[Run], float]) -> dict[str, float]:
    """The cost of the costliest chain each of ``runs`` heads: its own cost plus that of the
    costliest chain among the runs of ``runs`` that need it."""
    needed_by: dict[str, list[Run]] = {r.name: [] for r in runs}
    for run in runs:
        for dep in run.refs():
            if dep in needed_by:
                needed_by[dep].append(run)
    chain: dict[str, float] = {}

    def chain_cost(run: Run) -> float:
        if run.name not in chain:
            chain[run.name] = cost(run) + max((chain_cost(r) for r in needed_by[run.name]), default=0.0)
        return chain[run.name]

    return {r.name: chain_cost(r) for r in runs}


def longest_chain_first(runs: list[Run], cost: Callable[[Run], float]) -> list[Run]:
    """``runs`` ordered by the cost of the costliest chain each heads (:func:`chain_costs`),
    costliest first; ties keep the given order. Any order is safe: a run starts only once the runs
    it needs have finished."""
    chain = chain_costs(runs, cost)
    order = {r.name: i for i, r in enumerate(runs)}
    return sorted(runs, key=lambda r: (-chain[r.name], order[r.name]))


@dataclass
class Running:
    run: Run
    slot: int
    process: subprocess.Popen
    started: float
    log: Path


def start_command(module: str, args: list[str], run_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    """``python -m module args`` with ``env`` added, output appended to ``RUN/launch.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", module, *args]
    with open(run_dir / LOG_FILE, "a") as log:
        log.write(f"$ {' '.join(f'{k}={v}' for k, v in env.items())} {shlex.join(cmd)}\n")
        log.flush()
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)


def run_concurrently(
    todo: list[Run], ready_done: set[str], jobs: int, gpus: int, *,
    command: Callable[[Run], tuple[str, list[str], Path] | None],
    call: Callable[[Run], None],
    on_start: Callable[[Run, str], None],
    on_end: Callable[[Run, float | None, str | None], None],
) -> dict[str, str]:
    """Runs ``todo`` (in dependency order) ``jobs`` at a time; returns the failed or blocked runs
    with why. ``ready_done`` holds the names of the runs finished before. ``command(run)`` gives
    its module, arguments and run directory (None: ``call(run)`` runs it in this process); ``on_start(run,
    where)`` and ``on_end(run, seconds or None, error or None)`` report."""
    pending = list(todo)
    finished = set(ready_done)
    failed: dict[str, str] = {}
    running: dict[str, Running] = {}
    free = list(range(jobs))
    stop = {"signal": None}

    def forward(signum: int, _frame: Any) -> None:
        stop["signal"] = signum
        for job in running.values():
            job.process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while pending or running:
            for run in list(pending):
                if stop["signal"] is not None:
                    break
                bad = [d for d in run.refs() if d in failed]
                if bad:
                    pending.remove(run)
                    failed[run.name] = f"blocked by {', '.join(bad)}"
                    on_end(run, None, failed[run.name])
                    continue
                if not free or not all(d in finished for d in run.refs()):
                    continue
                pending.remove(run)
                started = time.time()
                target = command(run)
                if target is None:  # a quick in-process kind (data)
                    on_start(run, "in the driver's process")
                    try:
                        call(run)
                    except Exception as err:  # one failed run must not stop the others
                        failed[run.name] = f"{type(err).__name__}: {err}"
                        on_end(run, None, failed[run.name])
                    else:
                        finished.add(run.name)
                        on_end(run, time.time() - started, None)
                    continue
                slot = free.pop(0)
                module, args, run_dir = target
                env = slot_environment(jobs, slot, gpus)
                process = start_command(module, args, run_dir, env)
                running[run.name] = Running(run, slot, process, started, run_dir / LOG_FILE)
                on_start(run, f"slot {slot + 1}/{jobs}, {env['OMP_NUM_THREADS']} threads"
                         + (f", GPU {env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else ""))
            if not running:
                if pending and stop["signal"] is None and not any(
                        all(d in finished for d in r.refs()) or any(d in failed for d in r.refs()) for r in pending):
                    raise LaunchError(f"no run of {[r.name for r in pending]} can start: they need runs not in the plan")
                if stop["signal"] is not None:
                    break
                continue
            time.sleep(POLL_S)
            for name, job in list(running.items()):
                code = job.process.poll()
                if code is None:
                    continue
                del running[name]
                free.append(job.slot)
                free.sort()
                if code == 0:
                    finished.add(name)
                    on_end(job.run, time.time() - job.started, None)
                elif code in (EXIT_PREEMPTED, EXIT_INTERRUPTED):
                    failed[name] = "stopped by a signal; its checkpoint resumes it"
                    on_end(job.run, None, failed[name])
                else:
                    failed[name] = f"exit code {code}; see {job.log}"
                    on_end(job.run, None, failed[name])
    except KeyboardInterrupt:  # the terminal sent SIGINT to the runs too: let them write their checkpoints
        for job in running.values():
            job.process.wait()  # a second Ctrl-C here stops the driver at once
        message = "interrupted by Ctrl-C: every running run wrote its checkpoint; run the same command again to resume"
        print(message, file=sys.stderr)
        raise Preempted(message, EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stop["signal"] is not None:
        message = "stopped by SIGTERM: every running run wrote its checkpoint; run the same command again to resume"
        print(message, file=sys.stderr)
        raise Preempted(message, EXIT_PREEMPTED)
    for run in pending:  # never started (a stop signal)
        failed.setdefault(run.name, "not started")
    return failed
