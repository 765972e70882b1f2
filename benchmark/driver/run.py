"""The driver: resolve artifacts into runs, skip what is done, run the rest in dependency order.

    python -m benchmark.run [--subset smoke|mini|...] [--scale smoke|mini|mini-quick|mini-gpu|mini-gpu-quick|small|paper]
                            [--runs-dir runs] [--data-root DATA] [--dry-run]
                            [--launcher inprocess|torchrun|slurm] [--nproc-per-node N] [--slurm-...] [--jobs N]

Each run gets ``RUNS_DIR/<kind>/<name>-<key>/`` where ``key`` hashes the run's kind and
resolved config (a changed config is a new run; an unchanged one is found again). The run
directory holds ``run.json`` (name, kind, key, tags, config; ``wall_s`` once finished), the stage's own files, and for
evaluations ``result.json``. A run that fails is reported, the runs that need it are skipped,
and every other run still goes ahead; the exit code is non-zero if anything failed. A real data
set missing under ``--data-root`` is reported with the layout it needs and the artifacts it
blocks. ``--dry-run`` prints the plan with an estimate of each run's compute (GPU-hours,
:mod:`benchmark.driver.compute`). Runs go in this process, under torchrun, or to SLURM through submitit
(:mod:`benchmark.driver.launch`; dependencies become job dependencies), or, with ``--jobs N``,
N independent runs at a time on this machine, each with its share of it (:mod:`benchmark.driver.jobs`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmark import REPO
from benchmark.driver.compute import estimate_run, flops_or_none
from benchmark.driver.jobs import POLL_S, RUNS_PER_GPU, check_jobs, cpu_cores, longest_chain_first, run_concurrently
from benchmark.driver.launch import Handle, InProcess, Launcher, Slurm, Torchrun
from benchmark.driver.time_left import TimeLeft, recorded_walls, trains, wall_seconds
from benchmark.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, Preempted, SuiteError, error_line
from benchmark.experiments.datasets import DEFAULT_DATA_ROOT, missing_datasets, resolve_data
from benchmark.experiments.mini import MINIATURE_OF
from benchmark.experiments.model import Run
from benchmark.experiments.plan import is_done, locate, order_runs, resolve_refs
from benchmark.experiments.registry import ARTIFACTS, SCALES, SUBSETS, plan_runs
from benchmark.experiments.scales import SCALE_SPECS
from benchmark.report.records import RECORDS
from benchmark.stages.catalogue import run_kind
from benchmark.stages.kinds import RunKind
from benchmark.utils.io import write_json
from benchmark.utils.lock import Busy, exclusive, in_use_by
from benchmark.utils.timing import by_kind, clock, machine, process_started, read_invocations, record_invocation, summary_line

DEFAULT_RUNS = REPO / "runs"


def make_launcher(args: argparse.Namespace) -> Launcher:
    if args.launcher == "torchrun":
        return Torchrun(nproc_per_node=args.nproc_per_node, echo=True)
    if args.launcher == "slurm":
        options = {"partition": args.slurm_partition, "gpus_per_node": args.nproc_per_node, "nodes": args.slurm_nodes,
                   "timeout_min": args.slurm_timeout_min, "account": args.slurm_account}
        return Slurm({k: v for k, v in options.items() if v is not None})
    return InProcess()


def print_plan(runs: list[Run], dirs: dict[str, Path], runs_dir: Path, blocked: dict[str, str], estimates: bool) -> None:
    total, unknown, by_name = 0.0, 0, {r.name: r for r in runs}
    for i, run in enumerate(runs, 1):
        status = "done" if is_done(run, dirs[run.name]) else ("blocked" if run.name in blocked else "to run")
        line = f"  {i:>3}. {run.kind:<9} {run.name:<44} {status:<7} {dirs[run.name].relative_to(runs_dir)}"
        if estimates:
            est = estimate_run(run, by_name)
            if est.gpu_hours is None:
                unknown += run.kind != "data"
            elif status != "done":
                total += est.gpu_hours
            line += f"  {est.summary() if run.kind != 'data' else ''}"
        print(line)
    if estimates:
        from benchmark.stages.cost import reference

        print(f"compute still to run: {total:,.3g} GPU-hours ({reference()})"
              + (f"; {unknown} runs unknown" if unknown else ""))


def print_pace(runs: list[Run], dirs: dict[str, Path], runs_dir: Path, report_dir: Path, scale: str, jobs: int) -> None:
    """The dry run's wall-clock estimate, from the runs of this plan that finished before, in the
    runs directory or in the report's records (the repository's too): a small model's steps are
    bound by kernel launches, not FLOPs, so the GPU-hours above say little there."""
    records = list(dict.fromkeys([REPO / RECORDS, report_dir / RECORDS]))  # the report dir's own win
    walls = recorded_walls(runs, dirs, records, scale)
    todo = [r for r in runs if not is_done(r, dirs[r.name])]
    # the walls were measured with that invocation's runs side by side: the same number shares them here
    invocations = sorted((i for folder in records + [runs_dir] for i in read_invocations(folder) if i.get("scale") == scale),
                         key=lambda i: str(i.get("finished")))
    side_by_side = int(invocations[-1].get("jobs", jobs)) if invocations else jobs
    by_name = {r.name: r for r in runs}
    seconds = TimeLeft(todo, jobs=side_by_side, flops=lambda run: flops_or_none(run, by_name), measured=walls).seconds()
    if seconds is None or not todo:
        return
    where = f"on {invocations[-1].get('machine', 'unknown')}; " if invocations else ""
    print(f"time still to run: about {clock(seconds)} at the pace of {len(walls)} runs of this plan that finished "
          f"before ({where}--jobs {side_by_side})")


def default_jobs(scale: str, launcher: str, gpus: int, cores: int) -> int:
    """``--jobs`` when not given: for the miniature's small runs in this process, 2 on a CPU of 2 or
    more cores (two one-thread runs fine-tune about 1.2x the images per second of one two-thread
    run on 2 cores: docs/mini.md) and :data:`RUNS_PER_GPU` per GPU on a GPU machine; else 1."""
    if not SCALE_SPECS[scale].miniature or launcher != "inprocess":
        return 1
    if gpus:
        return RUNS_PER_GPU * gpus
    return 2 if cores >= 2 else 1


def default_scale(subset: str, gpus: int) -> str:
    """``--scale`` when not given: a subset named as a scale (``smoke``, ``mini``) that scale, else
    the first scale (in ``--scale``'s order) that every artifact of the subset has (the miniature's
    subsets: ``mini``; the paper's: ``smoke``); where a GPU is visible, the scale that scale names
    for it (its ``on_gpu``: ``mini`` -> ``mini-gpu``, trained further)."""
    artifacts = [ARTIFACTS[name] for name in SUBSETS.get(subset, [subset]) if name in ARTIFACTS]
    shared = [s for s in SCALES if all(s in artifact.scales for artifact in artifacts)]
    scale = subset if subset in SCALES else (shared or SCALES)[0]
    return (SCALE_SPECS[scale].on_gpu or scale) if gpus else scale


def conflicting_options(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of options, or None."""
    slurm_only = [f"--slurm-{name.replace('_', '-')}" for name in ("partition", "nodes", "timeout_min", "account")
                  if getattr(args, f"slurm_{name}") is not None]
    if slurm_only and args.launcher != "slurm":
        return f"{', '.join(slurm_only)} needs --launcher slurm (got --launcher {args.launcher})"
    if args.nproc_per_node < 1:
        return f"--nproc-per-node must be at least 1, got {args.nproc_per_node}"
    if args.jobs not in (None, 1) and args.launcher != "inprocess":
        return f"--jobs {args.jobs} needs --launcher inprocess (torchrun runs one run at a time; SLURM schedules its jobs)"
    if args.nproc_per_node > 1 and args.launcher == "inprocess":
        return (f"--nproc-per-node {args.nproc_per_node} needs --launcher torchrun or slurm "
                "(--launcher inprocess runs one process)")
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark.run", description="Run the experiments of the paper's artifacts.")
    parser.add_argument("--subset", default="mini", help=f"an artifact or a group: {sorted(set(SUBSETS) | set(ARTIFACTS))}")
    parser.add_argument("--scale", default=None, choices=SCALES,
                        help="default: mini for mini and mini_* (and for fig2, table6, table8: their miniatures), "
                             "else smoke")
    parser.add_argument("--runs-dir", default=str(DEFAULT_RUNS),
                        help="where the run directories go, runs/<kind>/<name>-<key>/ (default: %(default)s)")
    parser.add_argument("--report-dir", default=None,
                        help="where the rebuilt tables/, plots/ and REPORT.md go (default: the repository for the "
                             "default --runs-dir, else RUNS_DIR/report)")
    parser.add_argument("--wait", action="store_true",
                        help="if another driver holds --runs-dir, wait for it instead of stopping")
    parser.add_argument("--data-root", default=os.environ.get("SSLBENCH_DATA", str(DEFAULT_DATA_ROOT)),
                        help="the real data sets, one folder each (docs/datasets.md); default $SSLBENCH_DATA or ./data")
    parser.add_argument("--dry-run", action="store_true", help="print the plan with compute estimates and exit")
    parser.add_argument("--launcher", choices=["inprocess", "torchrun", "slurm"], default="inprocess")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="processes (GPUs) per run for torchrun / slurm")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at the same time, each in its own process with cores/N threads (on a GPU machine, the GPUs in "
                             "turn: several runs share a GPU where N exceeds them); "
                             "independent runs only (default for the miniature: 2 on a CPU with 2 or more cores, "
                             f"{RUNS_PER_GPU} per GPU on a GPU machine; else 1)")
    parser.add_argument("--slurm-partition")
    parser.add_argument("--slurm-nodes", type=int, default=None)
    parser.add_argument("--slurm-timeout-min", type=int, default=None)
    parser.add_argument("--slurm-account")
    parser.add_argument("--no-report", action="store_true", help="do not rebuild tables/, plots/ and REPORT.md at the end")
    parser.add_argument("--corrupt-images", choices=["skip", "fail"], default="skip",
                        help="a corrupt or truncated image: skip it (counted in the run's log) or stop the run")
    return parser


def choose_scale(args: argparse.Namespace) -> str:
    """The scale the plan runs at, saying why where it was not given (and, for a paper artifact
    named without a scale, switching ``args.subset`` to its miniature)."""
    if args.scale is None and args.subset in MINIATURE_OF:
        print(f"--subset {args.subset} without --scale runs its miniature on Fashion-MNIST "
              f"({MINIATURE_OF[args.subset]}); the paper's {args.subset} needs ImageNet under --data-root and "
              "--scale small or paper (--scale smoke: the synthetic chain)")
        args.subset = MINIATURE_OF[args.subset]
    scale = args.scale or default_scale(args.subset, visible_gpus())
    on_cpu = default_scale(args.subset, gpus=0)
    if args.scale is None and scale != on_cpu:
        print(f"a GPU is visible: --subset {args.subset} runs at --scale {scale} (trained further, several runs "
              f"sharing the GPU); --scale {on_cpu} runs the CPU's version")
    return scale


def blocked_by_missing_data(runs: list[Run], data_root: str) -> dict[str, str]:
    """A missing data set blocks the runs that read it and those that need them (the rest go on):
    run name -> why, with one line per missing data set (one about the root where it is missing)."""
    blocked: dict[str, str] = {}
    missing = missing_datasets(runs, data_root)
    root_exists = Path(data_root).is_dir()
    if missing and not root_exists:  # one line about the root, not one per data set
        users = {u for _, names in missing.values() for u in names}
        print(f"--data-root {data_root}: no such directory; it should hold the real data sets, one folder each "
              f"({', '.join(sorted(missing))} for this plan; layouts: docs/datasets.md); blocks {len(users)} runs",
              file=sys.stderr)
    for name, (layout, users) in missing.items():
        if root_exists:
            artifacts = sorted({r.tags.get("artifact", "?") for r in runs if r.name in users})
            print(f"missing data set {name!r}: expected {Path(data_root) / name} with {layout}; "
                  f"blocks {len(users)} runs of {', '.join(artifacts)}", file=sys.stderr)
        for user in users:
            blocked[user] = f"data set {name} missing"
    for run in runs:  # in dependency order: a run's inputs are decided before it
        if run.name not in blocked and any(d in blocked for d in run.refs()):
            blocked[run.name] = f"blocked by {', '.join(d for d in run.refs() if d in blocked)}"
    return blocked


def execute(args: argparse.Namespace, scale: str, runs: list[Run], keys: dict[str, str], dirs: dict[str, Path],
            blocked: dict[str, str], runs_dir: Path) -> dict[str, str]:
    """Runs the plan holding the runs directory (after the runs another process still holds) and
    records what this invocation spent; returns the failed or blocked runs with why."""
    with exclusive(runs_dir, "runs directory", wait=args.wait):
        wait_for_runs_in_use([r for r in runs if r.name not in blocked and not is_done(r, dirs[r.name])], dirs)
        to_run = [r for r in runs if r.name not in blocked and not is_done(r, dirs[r.name])]
        plan_started = time.time()
        failed = (run_plan if args.jobs == 1 else run_plan_concurrently)(args, runs, keys, dirs, blocked)
        if to_run:
            timing = invocation_record(args, scale, to_run, dirs, plan_started)
            record_invocation(runs_dir, timing)
            print(summary_line(timing))
    return failed


def rebuild_report(runs: list[Run], dirs: dict[str, Path], runs_dir: Path, report_dir: Path) -> None:
    """Rebuilds the report from every record in the runs directory, once a training run of the plan
    has finished."""
    if not any(is_done(run, dirs[run.name]) for run in runs if trains(run)):
        print(f"no run of this plan has finished: the report in {report_dir} is left as it is")
        return
    from benchmark.report.build import rebuild  # the report's libraries only when it is rebuilt

    try:
        rebuild(runs_dir, report_dir, wait=True)  # after another report writing there, not instead of it
        print(f"report: {report_dir / 'REPORT.md'}")
    except SuiteError as err:
        print(f"error: the report was not rebuilt: {error_line(err)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    conflict = conflicting_options(args) or check_jobs(1 if args.jobs is None else args.jobs, visible_gpus())
    if conflict:
        print(f"error: {conflict}", file=sys.stderr)
        return EXIT_BAD_INPUT
    os.environ["SSLBENCH_CORRUPT_IMAGES"] = args.corrupt_images  # read by the data sets, here and in child processes
    scale = choose_scale(args)
    if args.jobs is None:
        args.jobs = default_jobs(scale, args.launcher, visible_gpus(), cpu_cores())
    try:
        runs = order_runs(plan_runs(args.subset, scale))
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    runs_dir = Path(args.runs_dir).resolve()
    keys, dirs = locate(runs, runs_dir)
    blocked = blocked_by_missing_data(runs, args.data_root)
    print(f"plan: {len(runs)} runs for --subset {args.subset} --scale {scale} in {runs_dir}")
    print_plan(runs, dirs, runs_dir, blocked, estimates=args.dry_run)
    if args.dry_run:
        print_pace(runs, dirs, runs_dir, report_dir_for(runs_dir, args.report_dir), scale, args.jobs)
        return 0

    try:
        failed = execute(args, scale, runs, keys, dirs, blocked, runs_dir)
    except Preempted as err:
        return err.code
    except KeyboardInterrupt:
        print("interrupted at once (a second Ctrl-C); each run keeps its last checkpoint: run the same command again "
              "to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Busy as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # a runs directory that cannot be written (read-only, below a file), a full disk
        print(f"error: --runs-dir {runs_dir}: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.no_report:
        rebuild_report(runs, dirs, runs_dir, report_dir_for(runs_dir, args.report_dir))
    for name, why in failed.items():
        print(f"  {name}: {why}", file=sys.stderr)
    return 1 if failed else 0


def wait_for_runs_in_use(runs: list[Run], dirs: dict[str, Path]) -> None:
    """Waits for the runs that another process still holds (a driver killed alone leaves its runs
    going), each named with that process in one line. Afterwards the plan treats them as any other:
    those that finished are done, the others start again here and resume."""
    in_use = {run.name: who for run in runs if (who := in_use_by(dirs[run.name]))}
    for run in runs:
        if run.name in in_use:
            print(f"{run.kind} {run.name}: still running in {in_use[run.name]}; waiting for it to end", flush=True)
    try:
        while any(in_use_by(dirs[name]) for name in in_use):
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        message = (f"interrupted by Ctrl-C while waiting for {', '.join(in_use)}, which go on in their own processes; "
                   "run the same command again")
        print(message, file=sys.stderr)
        raise Preempted(message, EXIT_INTERRUPTED) from None


def invocation_record(args: argparse.Namespace, scale: str, ran: list[Run], dirs: dict[str, Path],
                      plan_started: float) -> dict[str, Any]:
    """What this invocation spent, by run kind, for ``RUNS_DIR/driver.jsonl`` (:mod:`benchmark.utils.timing`)."""
    walls = [(r.kind, s) for r in ran if is_done(r, dirs[r.name]) and (s := wall_seconds(dirs[r.name])) is not None]
    started = process_started()
    return {"subset": args.subset, "scale": scale, "jobs": args.jobs, "machine": machine(),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": len(walls), "planned": len(ran),
            "startup_s": round(plan_started - started, 1), "wall_s": round(time.time() - started, 1),
            "by_kind": by_kind(walls)}


def report_dir_for(runs_dir: Path, asked: str | None) -> Path:
    """Where the driver writes its report: ``asked``, else the repository for the default runs
    directory, else ``RUNS_DIR/report`` (a run elsewhere never replaces the repository's report)."""
    if asked:
        return Path(asked)
    return REPO if runs_dir.resolve() == DEFAULT_RUNS.resolve() else runs_dir / "report"


def start_record(run: Run, keys: dict[str, str], dirs: dict[str, Path], data_root: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Writes ``run.json`` into the run's directory; returns the config its stage takes and the record."""
    run_dir = dirs[run.name]
    config = resolve_data(resolve_refs(run.config, dirs), data_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"name": run.name, "kind": run.kind, "key": keys[run.name], "tags": run.tags, "config": config}
    write_json(run_dir / "run.json", record)
    return run_kind(run.kind).prepare(config, run.tags), record


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_plan_concurrently(args: argparse.Namespace, runs: list[Run], keys: dict[str, str], dirs: dict[str, Path],
                          blocked: dict[str, str]) -> dict[str, str]:
    """``--jobs N``: the plan's runs, N at a time (:mod:`benchmark.driver.jobs`); one line per start
    and end with the time left. Returns the failed or blocked runs with why."""
    t0 = time.time()
    done = {r.name for r in runs if is_done(r, dirs[r.name])}
    by_name = {r.name: r for r in runs}
    flops = {r.name: flops_or_none(r, by_name) for r in runs}
    # the costliest chains first
    todo = longest_chain_first([r for r in runs if r.name not in blocked and r.name not in done],
                               lambda run: flops[run.name] or 0.0)
    left = TimeLeft(todo, done=[(r, s) for r in runs if r.name in done and (s := wall_seconds(dirs[r.name])) is not None],
                    jobs=args.jobs, flops=lambda run: flops.get(run.name))
    for run in runs:
        if run.name in blocked or run.name in done:
            why = f"skipped, {blocked[run.name]}" if run.name in blocked else "done already"
            print(f"[{clock(0)}] {run.kind} {run.name}: {why}")
    records: dict[str, dict[str, Any]] = {}
    configs: dict[str, dict[str, Any]] = {}

    def head() -> str:
        remaining = left.seconds()
        return f"[{clock(time.time() - t0)}{f', about {clock(remaining)} left' if remaining is not None else ''}]"

    def command(run: Run) -> tuple[str, list[str], Path] | None:
        configs[run.name], records[run.name] = start_record(run, keys, dirs, args.data_root)
        kind = run_kind(run.kind)
        if kind.command is None:
            return None
        # the corrupt-image policy reaches the command through the environment (SSLBENCH_CORRUPT_IMAGES)
        return kind.command, kind.command_args(configs[run.name], dirs[run.name]), dirs[run.name]

    def call(run: Run) -> None:
        _run_locked(run_kind(run.kind), configs[run.name], dirs[run.name])

    def on_start(run: Run, where: str) -> None:
        left.started(run)
        print(f"{head()} start {run.kind} {run.name} ({where}) in {dirs[run.name]}", flush=True)

    def on_end(run: Run, seconds: float | None, error: str | None) -> None:
        left.finished(run, seconds)
        if error is None:
            write_json(dirs[run.name] / "run.json", {**records[run.name], "wall_s": round(seconds, 1)})
            print(f"{head()} end {run.kind} {run.name}: finished in {clock(seconds)}", flush=True)
        else:
            print(f"{head()} end {run.kind} {run.name}: {'FAILED' if 'blocked' not in error else 'skipped'} ({error})",
                  flush=True)

    failed = run_concurrently(todo, done, args.jobs, visible_gpus(), command=command, call=call, on_start=on_start,
                              on_end=on_end)
    failed.update(blocked)
    print(f"all runs: {time.time() - t0:.0f}s with --jobs {args.jobs}, {len(failed)} failed or blocked")
    return failed


def run_plan(args: argparse.Namespace, runs: list[Run], keys: dict[str, str], dirs: dict[str, Path],
             blocked: dict[str, str]) -> dict[str, str]:
    """Runs the plan's runs in order (those done already are skipped); returns the failed or
    blocked ones with why. Raises :class:`Preempted` when a stop signal reached this process."""
    launcher = make_launcher(args)
    handles: dict[str, Handle] = {}
    t0 = time.time()
    left = TimeLeft([r for r in runs if r.name not in blocked and not is_done(r, dirs[r.name])],
                    done=[(r, s) for r in runs if is_done(r, dirs[r.name]) and (s := wall_seconds(dirs[r.name])) is not None],
                    flops=functools.partial(flops_or_none, plan={r.name: r for r in runs}))
    for i, run in enumerate(runs, 1):
        run_dir = dirs[run.name]
        remaining = None if isinstance(launcher, Slurm) else left.seconds()  # SLURM's queue decides when runs go
        eta = f", about {clock(remaining)} left" if remaining is not None else ""
        head = f"[{i}/{len(runs)} {clock(time.time() - t0)}{eta}] {run.kind} {run.name}"
        if run.name in blocked:
            print(f"{head}: skipped, {blocked[run.name]}", flush=True)
            continue
        if is_done(run, run_dir):
            print(f"{head}: done already", flush=True)
            continue
        config, record = start_record(run, keys, dirs, args.data_root)
        kind = run_kind(run.kind)
        after = [handles[d] for d in run.refs() if d in handles]
        # The kinds that run under torchrun start their command (which holds its run directory); the
        # others (data, select) are a call, made in this process or, on SLURM, in a job that waits
        # for the jobs it needs.
        target: Any = (kind.command_args(config, run_dir) if kind.multi_process and not isinstance(launcher, InProcess)
                       else functools.partial(_run_locked, kind, config, run_dir))
        print(f"{head}: {'running' if not isinstance(launcher, Slurm) else 'submitting'} in {run_dir}", flush=True)
        started = time.time()
        try:
            handles[run.name] = handle = launcher.submit(run.name, run.kind, target, run_dir, after=after)
        except Preempted as err:  # SIGTERM reached this process: the run wrote its checkpoint; stop here
            print(f"{head}: {err}", flush=True)
            print(f"stopped by a signal after {clock(time.time() - t0)}; run the same command again to resume",
                  file=sys.stderr)
            raise
        if handle.status == "failed":
            print(f"{head}: FAILED ({handle.error}); see {handle.log or run_dir / 'error.log'}", flush=True)
        elif handle.status == "done":
            print(f"{head}: finished in {time.time() - started:.0f}s", flush=True)
            write_json(run_dir / "run.json", {**record, "wall_s": round(time.time() - started, 1)})  # for TimeLeft
        left.finished(run, time.time() - started if handle.status == "done" else None)
    failed = {h.run_name: h.error for h in launcher.wait() if h.status in ("failed", "blocked")}
    failed.update(blocked)
    print(f"all runs: {time.time() - t0:.0f}s, {len(failed)} failed or blocked")
    return failed


def _run_locked(kind: RunKind, config: dict[str, Any], run_dir: Path) -> Any:
    with exclusive(run_dir, "run directory"):
        return kind.run(config, run_dir)
