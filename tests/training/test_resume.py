"""A pre-training killed at a random step and resumed ends with the same weights, bit for bit."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmark import REPO
from benchmark.errors import ConfigError
from benchmark.stages.pretrain import PretrainConfig, pretrain
from benchmark.utils.io import read_log

STEPS = 24


def _config(data_root: Path) -> PretrainConfig:
    # drop_path > 0 makes the run depend on the global RNG stream, which a resume must continue.
    return PretrainConfig(
        data_root=str(data_root), method="splitmask", method_args={"vocab_size": 32}, arch="vit-smoke",
        img_size=64, steps=STEPS, batch_size=16, blr=4e-3, warmup_steps=3, drop_path=0.1,
        checkpoint_every=3, log_every=1, seed=5,
    )


def _start(cfg_path: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "benchmark.pretrain", "--config", str(cfg_path), "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _logged_steps(out: Path) -> list[int]:
    try:  # the run may be writing its log right now: a missing file or a half line is "not yet"
        return [r["step"] for r in read_log(out)]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(synthetic_root, tmp_path) -> None:
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(asdict(_config(synthetic_root / "classification" / "train"))))

    whole = tmp_path / "whole"
    proc = _start(cfg_path, whole)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()

    killed = tmp_path / "killed"
    kill_after = random.Random().randint(4, STEPS - 4)  # a different step each time the test runs
    proc = _start(cfg_path, killed)
    deadline = time.time() + 600
    while (not _logged_steps(killed) or _logged_steps(killed)[-1] < kill_after) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "encoder.safetensors").exists(), "the run finished before it could be killed"
    interrupted_at = torch.load(killed / "checkpoint.pth", weights_only=True)["step"]
    assert 0 < interrupted_at < STEPS

    proc = _start(cfg_path, killed)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    a, b = load_file(str(whole / "encoder.safetensors")), load_file(str(killed / "encoder.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"killed after step {kill_after}"
    # The resumed log holds every step once, with the same losses as the uninterrupted run.
    assert _logged_steps(killed) == list(range(1, STEPS + 1))
    assert [r["loss"] for r in read_log(killed)] == [r["loss"] for r in read_log(whole)]


def test_resume_refuses_a_checkpoint_of_another_config(synthetic_root, tmp_path) -> None:
    cfg = _config(synthetic_root / "classification" / "train")
    cfg.steps, cfg.checkpoint_every = 2, 1
    pretrain(cfg, tmp_path)
    (tmp_path / "encoder.safetensors").unlink()  # as if it had been killed before the export
    cfg.blr = 1e-3
    with pytest.raises(ConfigError, match=r"written with another config \(differs in \['blr'\]\)"):
        pretrain(cfg, tmp_path)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(synthetic_root, tmp_path, monkeypatch) -> None:
    from benchmark.errors import NonFiniteLoss
    from benchmark.methods.splitmask import SplitMask

    cfg = _config(synthetic_root / "classification" / "train")
    # The NaN comes between log lines (every 8 steps): the checkpoint due after it must see it.
    cfg.steps, cfg.checkpoint_every, cfg.log_every = 8, 2, 8
    real_forward, calls = SplitMask.forward, []

    def forward_that_diverges(self, batch, generator):  # the loss turns NaN at the 6th step
        out = real_forward(self, batch, generator)
        calls.append(1)
        return {**out, "loss": out["loss"] * float("nan")} if len(calls) == 6 else out

    monkeypatch.setattr(SplitMask, "forward", forward_that_diverges)
    with pytest.raises(NonFiniteLoss,
                       match=r"the loss is nan at step 5; stopping\. The last good checkpoint is .*checkpoint\.pth"):
        pretrain(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "encoder.safetensors").exists()


def test_a_checkpoint_written_with_0_workers_resumes_with_2_to_the_same_weights(synthetic_root, tmp_path,
                                                                               pretrain_to_first_checkpoint) -> None:
    """num_workers changes how fast batches come, not which: a run resumes across it (RUNTIME_FIELDS)."""
    cfg = _config(synthetic_root / "classification" / "train")
    cfg.steps, cfg.checkpoint_every, cfg.num_workers = 4, 2, 0
    pretrain(cfg, tmp_path / "whole")

    pretrain_to_first_checkpoint(cfg, tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "checkpoint.pth", weights_only=True)["step"] == 2
    cfg.num_workers = 2
    pretrain(cfg, tmp_path / "resumed")
    a = load_file(str(tmp_path / "whole" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "encoder.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["num_workers"] == 2
