"""The GPU miniature's checks and measurements, on the GPU machine it runs on (the miniature's
plan itself is ``python -m benchmark.run --scale mini-gpu``).

    python scripts/gpu_miniature.py OUT_DIR [--parts agree share trials records] [--data-root data]

- ``agree``: every method's views of the mini-gpu scale, made for one batch of Fashion-MNIST on the
  CPU and on the GPU from the same draws: the largest difference (floating point only);
- ``share``: the throughput of 1, 2, 4 and 8 vit-mini pre-trainings side by side on the one GPU
  (images per second of each from its log, summed), the measurement behind the driver's
  ``RUNS_PER_GPU``;
- ``trials``: short pre-trainings of the core methods at several base learning rates, side by
  side, with the online k-NN on the val split every few hundred steps (docs/mini.md reads them);
- ``records``: the records of the finished runs of ``--runs-dir`` copied to ``OUT_DIR/records``
  as the report keeps them (``benchmark.report.records``), for a machine whose runs cannot travel.

Each part writes ``OUT_DIR/<part>.json`` as soon as it ends. Exit code 1 if a part failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark.experiments.datasets import resolve_data  # noqa: E402  (after the sys.path insert above)
from benchmark.experiments.registry import plan_runs  # noqa: E402
from benchmark.utils.io import read_log  # noqa: E402

SCALE = "mini-gpu"


def pretrain_configs(data_root: str) -> dict[str, dict[str, Any]]:
    """The mini-gpu plan's 100% pre-training config of each method, its data root resolved."""
    configs = {}
    for subset in ("mini", "mini_more"):
        for run in plan_runs(subset, SCALE):
            if run.kind == "pretrain" and run.config["fraction"] == 1.0 and run.config["seed"] == 0:
                configs.setdefault(run.config["method"], resolve_data(run.config, data_root))
    return configs


def agree(out: Path, data_root: str) -> dict[str, Any]:
    from benchmark.data.augment import Augmentation
    from benchmark.data.batch_views import BatchViews, DeviceImages
    from benchmark.data.fashion_mnist import FashionMNIST
    from benchmark.methods import build_method
    from benchmark.models.vit import create_vit

    data = FashionMNIST(Path(data_root) / "fashion-mnist", "train")
    rows = list(range(512))
    result = {}
    for method, config in pretrain_configs(data_root).items():
        args = {**config["method_args"], **({"num_classes": 10} if method == "supervised" else {})}
        model = build_method(method, create_vit(config["arch"], config["img_size"]), **args)
        aug = Augmentation(config["img_size"], (config["crop_scale_min"], 1.0), 0.4, 0.5)
        views = BatchViews(model.view_specs(aug))
        made = {}
        for device in ("cpu", "cuda"):
            store = DeviceImages.from_dataset(data, rows, torch.device(device))
            batch = views(store, torch.arange(256), torch.Generator().manual_seed(7))
            made[device] = [v.cpu() for v in (batch if isinstance(batch, list) else [batch])]
        result[method] = max(float((a - b).abs().max()) for a, b in zip(made["cpu"], made["cuda"]))
        print(f"[agree] {method}: largest CPU/GPU difference {result[method]:.2e}", flush=True)
    return {"largest_difference": result, "ok": max(result.values()) < 1e-3}


def _launch(config: dict[str, Any], out: Path, env: dict[str, str]) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.json").write_text(json.dumps(config))
    log = open(out.parent / f"{out.name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "benchmark.pretrain", "--config", str(out.parent / f"{out.name}.json"),
                             "--out", str(out)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _steady_rate(run: Path, batch_size: int) -> float | None:
    """Images per second between the run's first and last logged steps (its start-up left out)."""
    if not (run / "log.jsonl").is_file():  # the run failed at its start: its .log says why
        return None
    steps = [r for r in read_log(run) if "img_per_s" in r]
    if len(steps) < 2:
        return None
    first, last = steps[0], steps[-1]
    return batch_size * (last["step"] - first["step"]) / max(last["time"] - first["time"], 1e-9)


def share(out: Path, data_root: str, methods: list[str], counts: list[int], steps: int) -> dict[str, Any]:
    configs = pretrain_configs(data_root)
    threads = str(max(1, (os.cpu_count() or 2) // max(counts)))
    result: dict[str, Any] = {}
    for method in methods:
        config = {**configs[method], "steps": steps, "warmup_steps": 10, "log_every": 25, "monitor_every": 0,
                  "checkpoint_every": 10**6}
        for count in counts:
            folder = out / "share" / f"{method}-x{count}"
            started = time.time()
            procs = [_launch(config, folder / f"run{i}", {"OMP_NUM_THREADS": threads}) for i in range(count)]
            codes = [p.wait() for p in procs]
            rates = [_steady_rate(folder / f"run{i}", config["batch_size"]) for i in range(count)]
            total = sum(r for r in rates if r) if all(rates) else None
            result[f"{method} x{count}"] = {"codes": codes, "img_per_s_each": rates, "img_per_s_total": total,
                                           "wall_s": round(time.time() - started, 1)}
            print(f"[share] {method} x{count}: {total and round(total)} img/s in all, each {rates}", flush=True)
    return result


def share_table(result: dict[str, Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``share`` part's rows as ``tables/perf_share_gpu.csv`` holds them: images per second of
    N runs side by side, in all, per run, and against one run."""
    rows = []
    for key, record in result.items():
        if " x" not in key or not record.get("img_per_s_total"):
            continue
        method, count = key.rsplit(" x", 1)
        each = record["img_per_s_each"]
        rows.append({"method": method, "runs": int(count), "img_per_s_total": round(record["img_per_s_total"]),
                     "img_per_s_each_mean": round(sum(each) / len(each)), "wall_s": record["wall_s"], **meta})
    for row in rows:
        one = next((r for r in rows if r["method"] == row["method"] and r["runs"] == 1), None)
        row["speedup_vs_one"] = round(row["img_per_s_total"] / one["img_per_s_total"], 2) if one else None
    return rows


def trials(out: Path, data_root: str, methods: list[str], blrs: list[float], steps: int, jobs: int,
           deadline_s: float) -> dict[str, Any]:
    configs = pretrain_configs(data_root)
    todo = [(m, b) for b in blrs for m in methods]
    threads = str(max(1, (os.cpu_count() or 2) // jobs))
    running: dict[tuple[str, float], subprocess.Popen] = {}
    stop_at = time.time() + deadline_s
    while (todo or running) and time.time() < stop_at:
        while todo and len(running) < jobs:
            method, blr = todo.pop(0)
            config = {**configs[method], "blr": blr, "steps": steps, "warmup_steps": max(1, steps // 30),
                      "monitor_every": max(1, steps // 8), "checkpoint_every": 10**6}
            running[(method, blr)] = _launch(config, out / "trials" / f"{method}-blr{blr:g}", {"OMP_NUM_THREADS": threads})
        for key, proc in list(running.items()):
            if proc.poll() is not None:
                del running[key]
        time.sleep(1)
    for proc in running.values():
        proc.terminate()
    result = {}
    for method in methods:
        for blr in blrs:
            run = out / "trials" / f"{method}-blr{blr:g}"
            knn = [(r["step"], r["knn_top1"]) for r in read_log(run) if "knn_top1" in r] if run.is_dir() else []
            result[f"{method} blr {blr:g}"] = {"knn_top1": knn, "steps": steps}
            print(f"[trials] {method} blr {blr:g}: k-NN {[round(v, 1) for _, v in knn]}", flush=True)
    return result


def records(out: Path, runs_dir: str) -> dict[str, Any]:
    from benchmark.report.records import save_records
    from benchmark.utils.lock import exclusive

    with exclusive(out, "report directory"):  # as a report does: no other report copies into it meanwhile
        saved = save_records(Path(runs_dir), out / "records")
    return {"saved": saved}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--parts", nargs="+", default=["agree", "share", "trials"],
                        choices=["agree", "share", "trials", "records"])
    parser.add_argument("--data-root", default=str(ROOT / "data"))
    parser.add_argument("--runs-dir", default=str(ROOT / "runs"))
    parser.add_argument("--share-methods", nargs="+", default=["splitmask"])
    parser.add_argument("--share-counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--share-steps", type=int, default=300)
    parser.add_argument("--trial-methods", nargs="+", default=["splitmask", "beit", "dino"])
    parser.add_argument("--trial-blrs", type=float, nargs="+", default=[7.5e-4, 1.5e-3, 3e-3])
    parser.add_argument("--trial-steps", type=int, default=2000)
    parser.add_argument("--trial-jobs", type=int, default=9)
    parser.add_argument("--trial-deadline-s", type=float, default=150)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = {
        "agree": lambda: agree(out, args.data_root),
        "share": lambda: share(out, args.data_root, args.share_methods, args.share_counts, args.share_steps),
        "trials": lambda: trials(out, args.data_root, args.trial_methods, args.trial_blrs, args.trial_steps,
                                 args.trial_jobs, args.trial_deadline_s),
        "records": lambda: records(out, args.runs_dir),
    }
    failed = False
    for name in args.parts:
        started = time.time()
        try:
            result = parts[name]()
        except Exception:  # one part's failure must not cost the others' measurements
            result, failed = {"error": traceback.format_exc()}, True
            print(result["error"], file=sys.stderr, flush=True)
        result["seconds"] = round(time.time() - started, 1)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        if name == "share":
            import pandas as pd

            config = pretrain_configs(args.data_root)[args.share_methods[0]]
            meta = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                    "arch": config["arch"], "batch_size": config["batch_size"],
                    "steps": args.share_steps, "date": time.strftime("%Y-%m-%d"),
                    "command": "python scripts/gpu_miniature.py OUT " + " ".join(sys.argv[2:] if argv is None else argv[1:])}
            pd.DataFrame(share_table(result, meta)).to_csv(out / "share.csv", index=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
