"""A ``--jobs 2`` driver killed alone (SIGKILL, its runs left going): the next driver on the same runs
directory waits for those runs, naming their processes, instead of failing them and what needs them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmark import REPO
from benchmark.experiments.model import Run, ref


def _plan(fashion: Path) -> list[Run]:
    data = {"data_root": str(fashion), "dataset": "fashion-mnist", "arch": "vit-mini", "img_size": 32}
    return [
        Run("pre", "pretrain", {**data, "method": "mae", "method_args": {"decoder_dim": 32, "decoder_depth": 1,
                                                                        "decoder_heads": 2},
                                "steps": 60, "batch_size": 16, "warmup_steps": 1, "drop_path": 0.0, "log_every": 1}),
        Run("knn-pre", "probe", {**data, "checkpoint": ref("pre", "encoder.safetensors"), "mode": "knn",
                                 "train_fraction": 0.5, "eval_split": "test", "batch_size": 32}),
    ]


def _driver(script: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _until(what, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not what():
        assert proc.poll() is None and time.time() < deadline, f"exit code {proc.poll()}:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def test_the_next_driver_waits_for_the_runs_a_killed_driver_left_going(tmp_path, make_fashion_mnist) -> None:
    fashion = make_fashion_mnist(tmp_path / "fm", train=240, test=60)
    (tmp_path / "plan.json").write_text(json.dumps([[r.name, r.kind, r.config, r.tags] for r in _plan(fashion)]))
    runs = tmp_path / "r"
    script = ("import json, sys; import benchmark.driver.run as d; from benchmark.experiments.model import Run; "
              f"plan = [Run(*x) for x in json.load(open({str(tmp_path / 'plan.json')!r}))]; "
              "d.plan_runs = lambda subset, scale: plan; "
              f"sys.exit(d.main(['--subset', 'smoke', '--no-report', '--jobs', '2', '--runs-dir', {str(runs)!r}, "
              f"'--data-root', {str(tmp_path)!r}]))")
    first = _driver(script, tmp_path / "first.log")
    _until(lambda: list(runs.glob("pretrain/*/log.jsonl")), first, tmp_path / "first.log")
    (pre_dir,) = (runs / "pretrain").iterdir()
    left = json.loads((pre_dir / ".lock").read_text())["pid"]  # the pre-training's own process
    os.kill(left, signal.SIGSTOP)  # held still, so that it is surely running when the next driver starts
    try:
        first.send_signal(signal.SIGKILL)  # the driver alone
        first.wait(timeout=60)
        assert not (pre_dir / "encoder.safetensors").exists()
        record = (pre_dir / "run.json").read_bytes()
        second = _driver(script, tmp_path / "second.log")
        waiting = f"pretrain pre: still running in process {left} on "
        _until(lambda: waiting in (tmp_path / "second.log").read_text(), second, tmp_path / "second.log")
        os.kill(left, signal.SIGCONT)
        second.wait(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGCONT)
        if first.poll() is None:
            first.kill()
    out = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, out[-3000:]
    (line,) = [x for x in out.splitlines() if waiting in x]
    assert line.endswith("; waiting for it to end") and f"benchmark/pretrain.py --config {pre_dir}/" in line
    assert "FAILED" not in out and "skipped" not in out
    # the run the killed driver left finished by itself; the next driver made what needs it
    assert (pre_dir / "encoder.safetensors").is_file() and list(runs.glob("probe/knn-pre-*/result.json"))
    # not started a second time: one command in its log, its record as the killed driver wrote it
    assert [x for x in (pre_dir / "launch.log").read_text().splitlines() if x.startswith("$ ")][1:] == []
    assert (pre_dir / "run.json").read_bytes() == record
