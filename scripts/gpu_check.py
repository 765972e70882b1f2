"""Checks the GPU paths of the suite on the machine it runs on.

    python scripts/gpu_check.py OUT_DIR [--methods ...] [--arch vit-s16] [--steps 60] [--skip-resume] [--skip-chain]

CI has no GPU, so this is what a user (or a developer with a GPU machine) runs before a long job:

1. every method pre-trains for ``--steps`` steps under ``torchrun --nproc_per_node 1`` (so the
   process group, DistributedDataParallel and nccl are all in the path) with bf16 autocast,
   and its loss falls (the mean of the last fifth of the logged losses is below the first fifth);
2. a SplitMask run killed after a checkpoint and resumed ends with the same encoder weights as
   an uninterrupted run (reported as bitwise equal, or as the largest difference when cuBLAS or
   an atomic-add kernel makes the GPU non-deterministic);
3. the whole chain through the driver (``--subset smoke --launcher torchrun``, synthetic data):
   pre-training, conversion, Mask R-CNN and UperNet for a few iterations, fine-tuning and the
   report; every planned run finishes and the dense runs write their metrics (with mmcv's CUDA
   ops, or with torchvision's where this mmcv has none: the line says which);
4. with two GPUs or more: the same pre-training in two processes logs the same losses as in one
   process with the same global batch (to the GPU's floating point).

It writes ``OUT_DIR/gpu_check.json`` with one record per check and exits non-zero if a check
failed. Synthetic data (``--scale mini``) is generated under ``OUT_DIR/data`` on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark.methods import METHODS  # noqa: E402  (after the sys.path insert above)
from benchmark.utils.io import read_log  # noqa: E402

# Settings that keep each method's run to about half a minute on one GPU.
METHOD_ARGS = {
    "splitmask": {"vocab_size": 1024},
    "beit": {"vocab_size": 1024},
    "dino": {"local_crops": 4, "out_dim": 8192},
    "supervised": {},
}


def _torchrun(cfg: dict, out: Path, log: Path) -> subprocess.Popen:
    cfg_path = out.with_suffix(".json")
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           "-m", "benchmark.pretrain", "--config", str(cfg_path), "--out", str(out)]
    # A session of its own, so that a kill reaches torchrun's worker too.
    return subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)


def _config(data: Path, method: str, arch: str, steps: int, batch_size: int, **extra) -> dict:
    root = data / "classification" / "train"
    return {"data_root": str(root), "method": method, "method_args": METHOD_ARGS.get(method, {}), "arch": arch,
            "img_size": 224, "steps": steps, "batch_size": batch_size, "warmup_steps": max(1, steps // 10),
            "blr": 1.5e-3, "num_workers": 8, "log_every": 1, "checkpoint_every": steps, "device": "cuda", **extra}


def check_method(data: Path, out: Path, method: str, arch: str, steps: int, batch_size: int) -> dict:
    run = out / "runs" / method
    started = time.time()
    rc = _torchrun(_config(data, method, arch, steps, batch_size), run, out / f"{method}.log").wait()
    record = {"check": f"pretrain {method}", "arch": arch, "steps": steps, "batch_size": batch_size,
              "returncode": rc, "wall_s": round(time.time() - started, 1)}
    if rc == 0:
        losses = [r["loss"] for r in read_log(run)]
        fifth = max(1, len(losses) // 5)
        first, last = sum(losses[:fifth]) / fifth, sum(losses[-fifth:]) / fifth
        rates = [r["img_per_s"] for r in read_log(run)]
        record.update(first_loss=first, last_loss=last, img_per_s=rates[-1], ok=last < first)
    else:
        record["ok"] = False
    return record


def check_resume(data: Path, out: Path, arch: str, steps: int, batch_size: int) -> dict:
    cfg = _config(data, "splitmask", arch, steps, batch_size, checkpoint_every=max(1, steps // 4), num_workers=4)
    whole, killed = out / "resume" / "whole", out / "resume" / "killed"
    log = out / "resume.log"
    if _torchrun(cfg, whole, log).wait() != 0:
        return {"check": "resume", "ok": False, "error": f"uninterrupted run failed; see {log}"}
    proc = _torchrun(cfg, killed, log)
    checkpoint = killed / "checkpoint.pth"
    while proc.poll() is None and not checkpoint.exists():
        time.sleep(0.2)
    time.sleep(1.0)  # a few steps past the checkpoint, which the resumed run repeats
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    if (killed / "encoder.safetensors").exists():
        return {"check": "resume", "ok": False, "error": "the run finished before it was killed; raise --steps"}
    at = torch.load(checkpoint, weights_only=True)["step"]
    if _torchrun(cfg, killed, log).wait() != 0:
        return {"check": "resume", "ok": False, "error": f"resumed run failed; see {log}"}
    a, b = load_file(str(whole / "encoder.safetensors")), load_file(str(killed / "encoder.safetensors"))
    max_diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    scale = max(float(a[k].float().abs().max()) for k in a)
    losses_a, losses_b = [r["loss"] for r in read_log(whole)], [r["loss"] for r in read_log(killed)]
    return {"check": "resume", "killed_after_checkpoint_step": at, "steps": steps,
            "bitwise_equal": all(torch.equal(a[k], b[k]) for k in a), "max_abs_diff": max_diff,
            "max_abs_weight": scale, "losses_equal": losses_a == losses_b,
            "ok": max_diff <= 1e-3 * scale}


def check_chain(out: Path) -> dict:
    """The smoke plan through the driver under torchrun, then its report."""
    runs, report = out / "chain" / "runs", out / "chain" / "report"
    log = out / "chain.log"
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    cmd = [sys.executable, "-m", "benchmark.run", "--subset", "smoke", "--scale", "smoke", "--launcher", "torchrun",
           "--runs-dir", str(runs), "--report-dir", str(report)]
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode
    results = {}
    for path in sorted(runs.glob("*/*/result.json")):
        metrics = json.loads(path.read_text()).get("metrics", {})
        results[path.parent.name] = {k: round(float(v), 3) for k, v in metrics.items()}
    dense = {name: m for name, m in results.items() if "bbox_mAP" in m or "mIoU" in m}
    from benchmark.downstream.mm.ops import mmcv_compiled_ops, needed

    why = "no CUDA ops" if mmcv_compiled_ops() else "no compiled ops at all"
    return {"check": "chain", "returncode": rc, "wall_s": round(time.time() - started, 1), "results": results,
            "dense_ops": f"torchvision's (this mmcv has {why})" if needed(True) else "mmcv's CUDA ops",
            "report": (report / "REPORT.md").is_file(), "log": str(log),
            "ok": rc == 0 and len(dense) >= 2 and (report / "REPORT.md").is_file()}


def check_ddp(data: Path, out: Path, arch: str, steps: int, batch_size: int) -> dict:
    """Two processes against one with the same global batch: the same logged losses."""
    runs = {}
    for nproc in (1, 2):
        cfg = _config(data, "splitmask", arch, steps, batch_size, num_workers=4)
        run = out / "ddp" / f"nproc{nproc}"
        cfg_path = run.with_suffix(".json")
        cfg_path.parent.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(json.dumps(cfg))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "benchmark.pretrain", "--config", str(cfg_path), "--out", str(run)]
        with open(out / "ddp.log", "a") as fh:
            if subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
                return {"check": "ddp", "ok": False, "error": f"{nproc} process(es) failed; see {out / 'ddp.log'}"}
        runs[nproc] = [r["loss"] for r in read_log(run) if "loss" in r]
    diff = max(abs(a - b) for a, b in zip(runs[1], runs[2]))
    return {"check": "ddp", "steps": steps, "global_batch": batch_size, "max_loss_diff": diff,
            "losses_1": runs[1][:5], "losses_2": runs[2][:5], "ok": len(runs[1]) == len(runs[2]) and diff < 1e-2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS))
    parser.add_argument("--arch", default="vit-s16")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--skip-resume", action="store_true")
    parser.add_argument("--skip-chain", action="store_true", help="not the smoke plan through the driver (check 3)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no GPU visible (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    data = out / "data"
    if not (data / "synthetic.json").is_file():
        subprocess.run([sys.executable, "-m", "benchmark.data.synthetic", "--out", str(data), "--seed", "0",
                        "--scale", "mini"], cwd=ROOT, check=True)
    records = []
    checks = [lambda m=m: check_method(data, out, m, args.arch, args.steps, args.batch_size) for m in args.methods]
    if not args.skip_resume:
        checks.append(lambda: check_resume(data, out, args.arch, 40, 64))
    if not args.skip_chain:
        checks.append(lambda: check_chain(out))
    if torch.cuda.device_count() >= 2:
        checks.append(lambda: check_ddp(data, out, args.arch, 20, 64))
    for check in checks:
        record = check()
        records.append(record)
        print(json.dumps(record), flush=True)
        (out / "gpu_check.json").write_text(json.dumps({"device": torch.cuda.get_device_name(0),
                                                        "torch": torch.__version__, "checks": records}, indent=1))
    failed = [r["check"] for r in records if not r["ok"]]
    print(f"{len(records) - len(failed)}/{len(records)} checks passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
