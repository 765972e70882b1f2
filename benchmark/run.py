"""The driver: resolve artifacts into runs, skip what is done, run the rest in dependency order.

    python -m benchmark.run --subset smoke [--scale smoke] [--runs-dir runs] [--dry-run]

Each run gets ``RUNS_DIR/<kind>/<name>-<key>/`` where ``key`` hashes the run's kind and
resolved config (a changed config is a new run; an unchanged one is found again). The run
directory holds ``run.json`` (name, kind, key, tags, config), the stage's own files, and for
evaluations ``result.json``. A run that fails is reported, the runs that need it are skipped,
and every other run still goes ahead; the exit code is non-zero if anything failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmark.experiments import ARTIFACTS, SCALES, SUBSETS, Run, plan_runs
from benchmark.utils.io import write_json

ROOT = Path(__file__).resolve().parent.parent
DONE_FILE = {"data": "synthetic.json", "pretrain": "encoder.safetensors", "finetune": "result.json",
             "detect": "result.json", "segment": "result.json"}


def order_runs(runs: list[Run]) -> list[Run]:
    """Runs sorted so that each comes after the runs it refers to (stable otherwise)."""
    by_name = {r.name: r for r in runs}
    ordered: list[Run] = []
    state: dict[str, str] = {}

    def visit(run: Run, chain: tuple[str, ...]) -> None:
        if state.get(run.name) == "done":
            return
        if run.name in chain:
            raise ValueError(f"dependency cycle: {' -> '.join(chain + (run.name,))}")
        for dep in run.refs():
            if dep not in by_name:
                raise ValueError(f"run {run.name!r} refers to unknown run {dep!r}")
            visit(by_name[dep], chain + (run.name,))
        state[run.name] = "done"
        ordered.append(run)

    for run in runs:
        visit(run, ())
    return ordered


def _resolve(value: Any, dirs: dict[str, Path], keys: dict[str, str] | None = None) -> Any:
    """Replaces refs by paths (``dirs``) or, for hashing, by the referred run's key (``keys``)."""
    if isinstance(value, dict):
        if set(value) == {"ref", "file"}:
            if keys is not None:
                return f"<{keys[value['ref']]}>/{value['file']}"
            return str(dirs[value["ref"]] / value["file"]) if value["file"] else str(dirs[value["ref"]])
        return {k: _resolve(v, dirs, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, dirs, keys) for v in value]
    return value


def run_key(run: Run, keys: dict[str, str]) -> str:
    blob = json.dumps({"kind": run.kind, "config": _resolve(run.config, {}, keys)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def locate(runs: list[Run], runs_dir: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """Keys and run directories of ``runs`` (which must be in dependency order)."""
    keys: dict[str, str] = {}
    dirs: dict[str, Path] = {}
    for run in runs:
        keys[run.name] = run_key(run, keys)
        dirs[run.name] = runs_dir / run.kind / f"{run.name}-{keys[run.name]}"
    return keys, dirs


def is_done(run: Run, run_dir: Path) -> bool:
    return (run_dir / DONE_FILE[run.kind]).is_file()


def execute(run: Run, config: dict[str, Any], run_dir: Path) -> None:
    """Runs one step in this process."""
    if run.kind == "data":
        from benchmark.data.synthetic import make_all

        make_all(run_dir, seed=config["seed"], scale=config["scale"])
    elif run.kind == "pretrain":
        from benchmark.engine import config_from_dict
        from benchmark.pretrain import PretrainConfig, pretrain

        pretrain(config_from_dict(PretrainConfig, config), run_dir)
    elif run.kind == "finetune":
        from benchmark.engine import config_from_dict
        from benchmark.finetune import FinetuneConfig, finetune

        finetune(config_from_dict(FinetuneConfig, {**config, "tags": run.tags}), run_dir)
    elif run.kind in ("detect", "segment"):
        from benchmark.detect import run_detection
        from benchmark.segment import run_segmentation

        fn = run_detection if run.kind == "detect" else run_segmentation
        config_path = Path(config["config"])
        fn(config["ckpt"], str(config_path if config_path.is_absolute() else ROOT / config_path),
           config["data_root"], str(run_dir), seed=config.get("seed", 0), cfg_options=config.get("cfg_options"))
    else:
        raise ValueError(f"unknown run kind {run.kind!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.run", description="Run the experiments of the paper's artifacts.")
    parser.add_argument("--subset", default="smoke", help=f"an artifact or a group: {sorted(set(SUBSETS) | set(ARTIFACTS))}")
    parser.add_argument("--scale", default=None, choices=SCALES, help="default: the subset's own name if it is a scale, else smoke")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs"))
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--no-report", action="store_true", help="do not rebuild tables/, plots/ and REPORT.md at the end")
    args = parser.parse_args(argv)
    scale = args.scale or (args.subset if args.subset in SCALES else "smoke")
    try:
        runs = order_runs(plan_runs(args.subset, scale))
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    runs_dir = Path(args.runs_dir).resolve()
    keys, dirs = locate(runs, runs_dir)

    print(f"plan: {len(runs)} runs for --subset {args.subset} --scale {scale} in {runs_dir}")
    for i, run in enumerate(runs, 1):
        status = "done" if is_done(run, dirs[run.name]) else "to run"
        print(f"  {i:>2}. {run.kind:<9} {run.name:<32} {status:<7} {dirs[run.name].relative_to(runs_dir)}")
    if args.dry_run:
        return 0

    failed: dict[str, str] = {}
    t0 = time.time()
    for i, run in enumerate(runs, 1):
        run_dir = dirs[run.name]
        blocked = [d for d in run.refs() if d in failed]
        head = f"[{i}/{len(runs)} {time.time() - t0:.0f}s] {run.kind} {run.name}"
        if blocked:
            failed[run.name] = f"blocked by {', '.join(blocked)}"
            print(f"{head}: skipped, {failed[run.name]}", flush=True)
            continue
        if is_done(run, run_dir):
            print(f"{head}: done already", flush=True)
            continue
        print(f"{head}: running in {run_dir}", flush=True)
        config = _resolve(run.config, dirs)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "run.json", {"name": run.name, "kind": run.kind, "key": keys[run.name], "tags": run.tags,
                                          "config": config})
        started = time.time()
        try:
            execute(run, config, run_dir)
        except Exception as err:  # one failed run must not stop the others
            failed[run.name] = f"{type(err).__name__}: {err}"
            (run_dir / "error.log").write_text(traceback.format_exc())
            print(f"{head}: FAILED ({failed[run.name]}); traceback in {run_dir / 'error.log'}", flush=True)
            continue
        print(f"{head}: finished in {time.time() - started:.0f}s", flush=True)

    if not args.no_report:
        from benchmark.report import build_report

        build_report(runs_dir, ROOT / "tables", ROOT / "plots", ROOT / "REPORT.md")
    print(f"all runs: {time.time() - t0:.0f}s, {len(failed)} failed")
    for name, why in failed.items():
        print(f"  {name}: {why}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
