"""Faults: a run stopped by SIGTERM, killed or crashed at a random step resumes to the
uninterrupted result bit for bit; the SLURM launcher checkpoints and requeues; writes are atomic,
so neither a crash nor a concurrent reader ever meets a partial file; a full disk stops a run with
one line and leaves the previous checkpoint usable.

(The SIGKILL test of a real pre-training subprocess is tests/test_resume.py.)"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmark import REPO
from benchmark.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, Preempted
from benchmark.stages.pretrain import PretrainConfig
from benchmark.training.log import RunLog
from benchmark.utils.io import read_log

SEG_CONFIG = REPO / "configs_mm" / "upernet_vit_smoke.py"
DET_CONFIG = REPO / "configs_mm" / "mask_rcnn_vit_fpn_smoke.py"
STEPS = 24


@pytest.fixture(autouse=True)
def _skip_corrupt_images(monkeypatch) -> None:
    """The CLIs set the corrupt-image policy in the environment; each test starts from the default."""
    monkeypatch.setenv("SSLBENCH_CORRUPT_IMAGES", "skip")


def _pretrain_config(data_root: Path, **overrides) -> PretrainConfig:
    values = dict(data_root=str(data_root), method="splitmask", method_args={"vocab_size": 32}, arch="vit-smoke",
                  img_size=64, steps=STEPS, batch_size=16, blr=4e-3, warmup_steps=3, drop_path=0.1,
                  checkpoint_every=1000, log_every=1, seed=5)
    return PretrainConfig(**{**values, **overrides})


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tmp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


def _logged_steps(out: Path) -> list[int]:
    try:  # the run may be writing its log right now
        return [r["step"] for r in read_log(out)]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


# ---------------------------------------------------------------------------- SIGTERM


@pytest.mark.slow
def test_sigterm_checkpoints_pretraining_exits_75_and_resumes_bit_for_bit(synthetic_root, tmp_path) -> None:
    cfg = _pretrain_config(synthetic_root / "classification" / "train")
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(asdict(cfg)))
    out = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "benchmark.pretrain", "--config", str(cfg_path), "--out", str(out)]
    # Both runs in a subprocess with the same thread count: CPU sums in another order differ in the last bits.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    uninterrupted = subprocess.run([*cmd[:-1], str(tmp_path / "whole")], cwd=REPO, env=env, capture_output=True, text=True,
                                   timeout=300)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    whole = tmp_path / "whole" / "encoder.safetensors"

    after = random.Random().randint(3, STEPS - 8)  # a different step each time the test runs
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while (not _logged_steps(out) or _logged_steps(out)[-1] < after) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == EXIT_PREEMPTED
    last = proc.stderr.read().strip().splitlines()[-1]
    step = torch.load(out / "checkpoint.pth", weights_only=True)["step"]  # checkpoint_every is 1000: the stop wrote it
    assert after <= step < STEPS, (after, step)
    assert last == (f"[pretrain] pre-training stopped by SIGTERM after step {step}/{STEPS}; {out / 'checkpoint.pth'} "
                    "holds it: run the same command again to resume")
    assert not (out / "encoder.safetensors").exists() and not _tmp_files(out)

    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {out} at step {step}/{STEPS}" in proc.stderr
    assert _same_tensors(load_file(str(whole)), load_file(str(out / "encoder.safetensors"))), f"stopped after {step}"
    assert _logged_steps(out) == list(range(1, STEPS + 1))
    assert [r["loss"] for r in read_log(out)] == [r["loss"] for r in read_log(tmp_path / "whole")]


def test_sigterm_checkpoints_finetuning_and_resumes_bit_for_bit(synthetic_root, tmp_path, monkeypatch, capsys) -> None:
    from benchmark.stages.finetune import FinetuneConfig, finetune, main

    cfg = FinetuneConfig(data_root=str(synthetic_root / "classification"), arch="vit-smoke", img_size=64, epochs=2,
                         batch_size=32, blr=4e-3, warmup_epochs=1, layer_decay=0.75, drop_path=0.1, mixup=0.8,
                         cutmix=1.0, rand_augment="rand-m9-mstd0.5-inc1", log_every=1, checkpoint_every=1000, seed=1)
    whole = finetune(cfg, tmp_path / "whole")
    (tmp_path / "cfg.json").write_text(json.dumps(asdict(cfg)))
    total = len(read_log(tmp_path / "whole"))
    signal_at = random.Random().randint(1, total - 3)
    real_step = RunLog.step

    def step_then_sigterm(self, step, *args, **kwargs):  # SLURM's notice, at a random step
        real_step(self, step, *args, **kwargs)
        if step == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(RunLog, "step", step_then_sigterm)
    out = tmp_path / "stopped"
    capsys.readouterr()
    assert main(["--config", str(tmp_path / "cfg.json"), "--out", str(out)]) == EXIT_PREEMPTED
    step = torch.load(out / "checkpoint.pth", weights_only=True)["step"]
    assert signal_at < step < total
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"[finetune] fine-tuning stopped by SIGTERM after step {step}/{total}; {out / 'checkpoint.pth'} holds it: "
        "run the same command again to resume")
    assert not (out / "result.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone

    monkeypatch.setattr(RunLog, "step", real_step)
    assert finetune(cfg, out) == whole
    a = torch.load(tmp_path / "whole" / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    assert _same_tensors(a, b)


def test_sigterm_during_the_set_up_exits_75_with_one_line_and_the_run_starts_again(synthetic_root, tmp_path) -> None:
    """Before its loop there is no step to finish: a SIGTERM while the head is fitted (LP-FT) stops
    the command at once with 75, as the driver expects of a stopped run (the signal used to kill it:
    -15, a failure), and the same command then runs it whole."""
    from benchmark.stages.finetune import FinetuneConfig, main

    cfg = FinetuneConfig(data_root=str(synthetic_root / "classification"), arch="vit-smoke", img_size=64, epochs=1,
                         batch_size=32, blr=4e-3, warmup_epochs=0.5, head_init="linear-probe", seed=2)
    (tmp_path / "cfg.json").write_text(json.dumps(asdict(cfg)))
    args = ["--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "stopped")]
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_WHILE_FITTING_THE_HEAD, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "[finetune] stopped by SIGTERM outside its training steps (in its set-up or its evaluation)")
    assert not (tmp_path / "stopped" / "result.json").exists()
    assert main(args) == 0 and (tmp_path / "stopped" / "result.json").exists()


_SIGTERM_WHILE_FITTING_THE_HEAD = """
import os, signal, sys
import benchmark.stages.finetune as stage
fit_head = stage.fit_head
def sigterm_then_fit(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return fit_head(*args, **kwargs)
stage.fit_head = sigterm_then_fit
sys.exit(stage.main(sys.argv[1:]))
"""


def _mm_interrupt(monkeypatch, at_iter: int, how: str) -> None:
    """Makes the next mm run get SIGTERM (``how="sigterm"``) or crash (``"crash"``, as a kill
    would: no checkpoint of its own) after iteration ``at_iter``."""
    from mmengine.hooks import Hook

    import benchmark.downstream.mm.runner as runner_module

    class Interrupt(Hook):
        priority = "NORMAL"  # before FaultTolerance (LOWEST) looks at the stop flag

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if runner.iter + 1 == at_iter:
                if how == "crash":
                    raise KeyboardInterrupt("killed")
                os.kill(os.getpid(), signal.SIGTERM)

    real = runner_module.build_runner

    def build(prepared):
        built = real(prepared)
        built.register_hook(Interrupt())
        return built

    monkeypatch.setattr(runner_module, "build_runner", build)


@pytest.mark.slow
def test_sigterm_stops_detection_mid_epoch_and_it_resumes_bit_for_bit(synthetic_root, tmp_path, monkeypatch) -> None:
    """Mask R-CNN's loop is epoch-based: a SIGTERM in the middle of an epoch writes a checkpoint
    there, and the resumed run skips the epoch's batches already trained."""
    from benchmark.downstream.mm.runner import DETECT, main
    from benchmark.stages.dense import run_detection

    options = {"default_hooks.checkpoint": {"_delete_": True, "type": "CheckpointHook", "by_epoch": True, "interval": 2}}
    args = (None, DET_CONFIG, synthetic_root / "coco")
    whole = run_detection(*args, tmp_path / "whole", seed=0, cfg_options=options)
    at = random.Random().randint(1, 7)  # 2 epochs of 4 iterations; not the last one
    _mm_interrupt(monkeypatch, at, "sigterm")
    work = tmp_path / "stopped"
    with pytest.raises(Preempted, match=rf"detection stopped by SIGTERM after step {at}/8; .*preempt_iter_{at}\.pth holds it"):
        run_detection(*args, work, seed=0, cfg_options=options)
    assert (work / "last_checkpoint").read_text() == str(work / f"preempt_iter_{at}.pth")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(work / f"preempt_iter_{at}.pth") == []
    assert not (work / "result.json").exists() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    monkeypatch.undo()
    assert run_detection(*args, work, seed=0, cfg_options=options) == whole
    a = torch.load(tmp_path / "whole" / "epoch_2.pth", weights_only=True)["state_dict"]
    b = torch.load(work / "epoch_2.pth", weights_only=True)["state_dict"]
    assert _same_tensors(a, b), f"stopped after iteration {at}"
    assert not list(work.glob("preempt_*.pth"))  # used up

    def preempted(*_a, **_k):
        raise Preempted("detection stopped by SIGTERM after step 3/8; X holds it: run the same command again to resume")

    monkeypatch.setattr("benchmark.downstream.mm.runner.run", preempted)
    argv = ["--ckpt", "none", "--config", str(DET_CONFIG), "--data-root", "x", "--work-dir", str(tmp_path / "preempted")]
    assert main(DETECT, "", argv) == 75


@pytest.mark.slow
def test_killed_segmentation_resumes_from_its_last_checkpoint_bit_for_bit(synthetic_root, tmp_path, monkeypatch) -> None:
    """Killed between two checkpoints, a run resumes from the last one; the checkpoints load with
    ``weights_only=True`` and hold the RNG states, so that drop path, dropout and the random crops
    continue as in the uninterrupted run."""
    from benchmark.stages.dense import run_segmentation

    options = {"default_hooks.checkpoint": {"_delete_": True, "type": "CheckpointHook", "by_epoch": False, "interval": 4},
               "train_cfg.max_iters": 12, "train_cfg.val_interval": 12}
    args = (None, SEG_CONFIG, synthetic_root / "ade20k")
    whole = run_segmentation(*args, tmp_path / "whole", seed=0, cfg_options=options)
    at = random.Random().randint(5, 11)
    _mm_interrupt(monkeypatch, at, "crash")
    work = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_segmentation(*args, work, seed=0, cfg_options=options)
    last = Path((work / "last_checkpoint").read_text())
    assert last.name == f"iter_{(at - 1) // 4 * 4}.pth" and not (work / "result.json").exists()  # the kill came first
    assert torch.serialization.get_unsafe_globals_in_checkpoint(last) == []
    monkeypatch.undo()
    assert run_segmentation(*args, work, seed=0, cfg_options=options) == whole
    a = torch.load(tmp_path / "whole" / "iter_12.pth", weights_only=True)["state_dict"]
    b = torch.load(work / "iter_12.pth", weights_only=True)["state_dict"]
    assert _same_tensors(a, b), f"killed after iteration {at}"


# ---------------------------------------------------------------------------- SLURM requeue

TRAINER = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
def stop(signum, frame):
    (out / "checkpoint").write_text(signal.Signals(signum).name)
    sys.exit(75)
signal.signal(signal.SIGTERM, stop)
(out / "started").write_text("")
time.sleep(120)
"""


def test_slurm_job_checkpoints_its_run_and_submitit_requeues_it(tmp_path, monkeypatch) -> None:
    """submitit's pre-emption / time-out handler (the real one) calls the job's ``checkpoint``:
    the running trainer gets SIGTERM and writes its checkpoint, the same job is pickled for the
    requeue, and the requeue is asked for."""
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths

    from benchmark.driver.launch import TorchrunJob
    from benchmark.errors import LaunchError

    (tmp_path / "trainer.py").write_text(TRAINER)
    job = TorchrunJob("pretrain", ["--config", "c.json", "--out", str(tmp_path)], gpus_per_node=1, stop_timeout_s=30)
    monkeypatch.setattr(TorchrunJob, "command", lambda self, *a: [sys.executable, str(tmp_path / "trainer.py"), str(tmp_path)])
    errors: list[BaseException] = []

    def run_job() -> None:
        try:
            job()
        except LaunchError as err:
            errors.append(err)

    thread = threading.Thread(target=run_job)
    thread.start()
    deadline = time.time() + 60
    while not (tmp_path / "started").exists():
        assert time.time() < deadline and thread.is_alive()
        time.sleep(0.05)

    requeued: list[int] = []

    class Env:  # the SLURM side of submitit's JobEnvironment
        global_rank = 0

        def _requeue(self, countdown: int) -> None:
            requeued.append(countdown)

    paths = JobPaths(tmp_path / "slurm", job_id="42")
    paths.folder.mkdir(parents=True)
    delayed = DelayedSubmission(job)
    delayed.set_timeout(60, 3)
    handler = SignalHandler(Env(), paths, delayed)
    monkeypatch.setattr(handler, "_exit", lambda: None)  # submitit exits the job process here
    handler.checkpoint_and_try_requeue(signal.SIGUSR2)
    thread.join(timeout=60)

    assert (tmp_path / "checkpoint").read_text() == "SIGTERM"
    assert requeued == [3] and errors and "exited with 75" in str(errors[0])
    again = DelayedSubmission.load(paths.submitted_pickle)
    assert isinstance(again.function, TorchrunJob) and again.function == job  # the same command: it resumes
    assert again.function._proc is None


def test_a_run_stopped_by_a_signal_stops_the_in_process_driver(tmp_path) -> None:
    """In one process, SIGTERM reached the driver too: after the run's checkpoint it stops
    (exit 75 from ``benchmark.driver.run``), instead of going on with the next run."""
    from benchmark.driver.launch import InProcess

    def stopped() -> None:
        raise Preempted("pre-training stopped by SIGTERM after step 3/9; X holds it: run the same command again to resume")

    launcher = InProcess()
    with pytest.raises(Preempted, match="stopped by SIGTERM after step 3/9"):
        launcher.submit("a", "pretrain", stopped, tmp_path / "a")
    with pytest.raises(Preempted, match="pretrain b stopped by a signal"):
        launcher.submit("b", "pretrain", lambda: EXIT_PREEMPTED, tmp_path / "b")  # a CLI main's exit code
    assert [h.status for h in launcher.wait()] == ["stopped", "stopped"]
    assert not (tmp_path / "a" / "error.log").exists()


# ---------------------------------------------------------------------------- atomic writes


def test_a_crash_mid_write_leaves_the_previous_files_whole(tmp_path, monkeypatch) -> None:
    from benchmark.training.checkpoint import load_state, save_state
    from benchmark.utils.io import write_json
    from benchmark.utils.results import load_result, write_result

    ckpt, table = tmp_path / "checkpoint.pth", tmp_path / "table.json"
    save_state(ckpt, model={"w": torch.ones(3)}, optimizer={}, scheduler={}, step=2, rng={}, config={})
    write_result(tmp_path, "finetune", {"top1": 50.0}, {}, seed=0, started=time.time())
    write_json(table, {"rows": 1})
    before = {p: p.read_bytes() for p in (ckpt, tmp_path / "result.json", table)}

    def dies_half_way(obj, fh, *args, **kwargs):  # a kill while torch.save writes
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_state(ckpt, model={"w": torch.zeros(3)}, optimizer={}, scheduler={}, step=4, rng={}, config={})
    monkeypatch.undo()

    real_write_text = Path.write_text

    def half_text(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2])
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Path, "write_text", half_text)
    with pytest.raises(KeyboardInterrupt):
        write_result(tmp_path, "finetune", {"top1": 99.0}, {}, seed=0, started=time.time())
    with pytest.raises(KeyboardInterrupt):
        write_json(table, {"rows": 2})
    monkeypatch.undo()

    assert {p: p.read_bytes() for p in before} == before
    assert load_state(ckpt)["step"] == 2 and load_result(tmp_path / "result.json")["metrics"] == {"top1": 50.0}
    assert not _tmp_files(tmp_path)


def test_a_reader_never_meets_a_partial_result(tmp_path) -> None:
    """The report reads ``result.json`` files while runs write them: every read gets a whole file."""
    from benchmark.utils.results import load_result, write_result

    config = {f"key{i}": "x" * 200 for i in range(500)}  # ~100 kB: a write takes a while
    write_result(tmp_path, "finetune", {"top1": 0.0}, config, seed=0, started=time.time())
    done = threading.Event()

    def writer() -> None:
        for i in range(1, 150):
            write_result(tmp_path, "finetune", {"top1": float(i)}, config, seed=0, started=time.time())
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    while not done.is_set():
        seen.add(load_result(tmp_path / "result.json")["metrics"]["top1"])  # raises on a partial file
    thread.join()
    assert len(seen) > 1 and load_result(tmp_path / "result.json")["metrics"]["top1"] == 149.0
    assert not _tmp_files(tmp_path)


# ---------------------------------------------------------------------------- disk full


def test_disk_full_while_checkpointing_stops_with_one_line_and_keeps_the_previous_checkpoint(
        synthetic_root, tmp_path, monkeypatch, capsys) -> None:
    from benchmark.stages.pretrain import main

    cfg = _pretrain_config(synthetic_root / "classification" / "train", steps=6, checkpoint_every=2)
    (tmp_path / "cfg.json").write_text(json.dumps(asdict(cfg)))
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def fills_the_disk(obj, fh, *args, **kwargs):  # the second checkpoint (step 4) meets a full disk
        calls.append(1)
        if len(calls) == 2:
            fh.write(b"PK\x03\x04 part of a checkpoint")
            fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_the_disk)
    capsys.readouterr()
    assert main(["--config", str(tmp_path / "cfg.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: {out / 'checkpoint.pth'}: no space left on device while writing the step 4 checkpoint; "
                       "the previous checkpoint is unchanged: free some space, then run the same command again to resume")
    assert not any(line.startswith("Traceback") for line in err)
    assert torch.load(out / "checkpoint.pth", weights_only=True)["step"] == 2  # usable
    assert not (out / "encoder.safetensors").exists() and not _tmp_files(out)

    monkeypatch.undo()  # space freed
    assert main(["--config", str(tmp_path / "cfg.json"), "--out", str(out)]) == 0
    assert f"resuming {out} at step 2/6" in capsys.readouterr().err
    assert _logged_steps(out) == list(range(1, 7))


def test_disk_full_is_named_for_any_file_and_leaves_it_as_it_was(tmp_path, monkeypatch) -> None:
    from benchmark.errors import DiskFull
    from benchmark.utils.io import write_json

    path = tmp_path / "tables" / "table.json"
    write_json(path, {"a": 1})
    before = path.read_bytes()

    def quota(self, *args, **kwargs):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(Path, "write_text", quota)
    with pytest.raises(DiskFull, match=r"table\.json: no space left on device; not written \(an earlier version") as info:
        write_json(path, {"a": 2})
    assert info.value.errno == errno.EDQUOT
    monkeypatch.undo()
    assert path.read_bytes() == before and not _tmp_files(tmp_path)


# The disk fills up after the run's first checkpoint: from then on the process may write files of at
# most LIMIT bytes (ulimit -f), so the next checkpoint fails in torch's own writer, with the
# operating system's EFBIG, as a full disk fails it with ENOSPC.
FULL_AFTER_FIRST_CHECKPOINT = """
import resource, signal, sys
from benchmark.training import checkpoint

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
real_save = checkpoint.TrainingCheckpoint.save

def save_then_fill_the_disk(self, step):
    real_save(self, step)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))

checkpoint.TrainingCheckpoint.save = save_then_fill_the_disk
from benchmark.stages.pretrain import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_real_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(synthetic_root,
                                                                                               tmp_path) -> None:
    cfg = _pretrain_config(synthetic_root / "classification" / "train", steps=6, checkpoint_every=2)
    (tmp_path / "cfg.json").write_text(json.dumps(asdict(cfg)))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", FULL_AFTER_FIRST_CHECKPOINT, "--config", str(tmp_path / "cfg.json"),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert not any("Traceback" in line for line in err), proc.stderr
    assert err[-1] == (f"error: {out / 'checkpoint.pth'}: no space left on device while writing the step 4 checkpoint; "
                       "the previous checkpoint is unchanged: free some space, then run the same command again to resume")
    assert torch.load(out / "checkpoint.pth", weights_only=True)["step"] == 2  # the previous one, whole
    assert not (out / "encoder.safetensors").exists() and not _tmp_files(out)


# ---------------------------------------------------------------------------- Ctrl-C


def _start_pretraining(cfg: PretrainConfig, tmp_path: Path, out: Path) -> subprocess.Popen:
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(asdict(cfg)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "benchmark.pretrain", "--config", str(cfg_path), "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int) -> None:
    deadline = time.time() + 300
    while (not _logged_steps(out) or _logged_steps(out)[-1] < step) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.01)


def test_ctrl_c_checkpoints_after_the_step_and_exits_130_with_one_line(synthetic_root, tmp_path) -> None:
    out = tmp_path / "run"
    proc = _start_pretraining(_pretrain_config(synthetic_root / "classification" / "train"), tmp_path, out)
    _wait_for_step(proc, out, 3)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == EXIT_INTERRUPTED
    err = proc.stderr.read().strip().splitlines()
    assert not any("Traceback" in line for line in err), err
    step = torch.load(out / "checkpoint.pth", weights_only=True)["step"]  # checkpoint_every is 1000: Ctrl-C wrote it
    assert 3 <= step < STEPS
    assert err[-1] == (f"[pretrain] pre-training stopped by SIGINT after step {step}/{STEPS}; {out / 'checkpoint.pth'} "
                       "holds it: run the same command again to resume")


def test_a_second_ctrl_c_stops_at_once(synthetic_root, tmp_path, monkeypatch) -> None:
    """The second Ctrl-C interrupts the step the first one let finish: no checkpoint is written."""
    import benchmark.stages.pretrain as pretrain_module
    from benchmark.stages.pretrain import main

    cfg = _pretrain_config(synthetic_root / "classification" / "train", steps=6, checkpoint_every=1000)
    (tmp_path / "cfg.json").write_text(json.dumps(asdict(cfg)))
    real_optimizer = pretrain_module.build_optimizer

    def optimizer_whose_step_meets_two_ctrl_cs(*args, **kwargs):
        optimizer = real_optimizer(*args, **kwargs)
        real_step = optimizer.step

        def step(*a, **k):
            if len(calls) == 1:  # during the second step: Ctrl-C, then Ctrl-C again
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            calls.append(1)
            return real_step(*a, **k)

        optimizer.step = step
        return optimizer

    calls: list[int] = []
    monkeypatch.setattr(pretrain_module, "build_optimizer", optimizer_whose_step_meets_two_ctrl_cs)
    out = tmp_path / "run"
    assert main(["--config", str(tmp_path / "cfg.json"), "--out", str(out)]) == EXIT_INTERRUPTED
    assert len(calls) == 1  # the second step never finished
    assert not (out / "checkpoint.pth").exists() and not (out / "encoder.safetensors").exists()
