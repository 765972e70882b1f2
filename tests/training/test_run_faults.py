"""Nothing is lost when a disk fills or a record is damaged: a full disk while logging is
one line and leaves whole files; a torn log line, a truncated export or a damaged result is
written again from what is whole; exports are the same bytes in every process; a non-finite loss
names the checkpoint that exists; a finished evaluation run again changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from benchmark import REPO
from benchmark.stages.pretrain import PretrainConfig
from benchmark.utils.io import read_log, sha256_file
from benchmark.utils.results import load_result

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SSLBENCH_CORRUPT_IMAGES": "skip"}


@pytest.fixture(autouse=True)
def _skip_corrupt_images(monkeypatch) -> None:
    monkeypatch.setenv("SSLBENCH_CORRUPT_IMAGES", "skip")


def _pretrain_config(data_root: Path, **overrides) -> PretrainConfig:
    values = dict(data_root=str(data_root), method="splitmask", method_args={"vocab_size": 32}, arch="vit-smoke",
                  img_size=64, steps=8, batch_size=16, blr=4e-3, warmup_steps=3, drop_path=0.1,
                  checkpoint_every=4, log_every=1, seed=5)
    return PretrainConfig(**{**values, **overrides})


def _write_config(cfg, path: Path) -> Path:
    path.write_text(json.dumps(asdict(cfg)))
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def _run(script: str, *args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env or ENV,
                          capture_output=True, text=True, timeout=600)


def _tmp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


# ---------------------------------------------------------------------------- a full disk while logging

# After the first checkpoint the process may write files of at most the log's size plus a few bytes
# (ulimit -f): the next log line is cut short by the operating system (EFBIG), as a full disk cuts it
# (ENOSPC). The files as they were then are copied to BEFORE.
FULL_WHILE_LOGGING = """
import resource, shutil, signal, sys
from pathlib import Path
from benchmark.training import checkpoint

before = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
real_save = checkpoint.TrainingCheckpoint.save

def save_then_fill_the_disk(self, step):
    real_save(self, step)
    shutil.copytree(self.path.parent, before)
    log = self.path.parent / "log.jsonl"
    resource.setrlimit(resource.RLIMIT_FSIZE, (log.stat().st_size + 20, resource.RLIM_INFINITY))

checkpoint.TrainingCheckpoint.save = save_then_fill_the_disk
from benchmark.stages.pretrain import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_full_disk_while_logging_is_one_line_and_the_run_resumes(synthetic_root, tmp_path) -> None:
    cfg = _write_config(_pretrain_config(synthetic_root / "classification" / "train"), tmp_path / "cfg.json")
    out, before = tmp_path / "run", tmp_path / "before"
    proc = _run(FULL_WHILE_LOGGING, before, "--config", cfg, "--out", out)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert not any("Traceback" in line for line in err), proc.stderr
    assert err[-1] == (f"error: {out / 'log.jsonl'}: no space left on device while logging step 5; the log holds the "
                       "steps before it: free some space, then run the same command again to resume")
    assert _files(out) == _files(before)  # no torn line; the step 4 checkpoint whole
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4] and not _tmp_files(out)

    proc = _run("import sys; from benchmark.stages.pretrain import main; sys.exit(main(sys.argv[1:]))",
                "--config", cfg, "--out", out)  # space freed
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {out} at step 4/8" in proc.stderr
    assert [r["step"] for r in read_log(out)] == list(range(1, 9))


# The same on a real file system that fills up: a small tmpfs, filled after the step 35 checkpoint;
# the log fails as soon as its next line needs a page the disk no longer has (a page holds fewer
# than 35 lines).
FILL_THE_DISK = """
import errno, sys
from pathlib import Path
from benchmark.training import checkpoint

filler = Path(sys.argv[1])
real_save = checkpoint.TrainingCheckpoint.save

def save_then_fill_the_disk(self, step):
    real_save(self, step)
    if step == 35:
        with open(filler, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"x" * 4096)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err

checkpoint.TrainingCheckpoint.save = save_then_fill_the_disk
from benchmark.stages.pretrain import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 96 MiB tmpfs (two checkpoints: the last and the one being written) (root only: skipped where it cannot be mounted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(disk)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_a_disk_that_fills_between_checkpoints_stops_with_one_line_and_resumes(synthetic_root, tmp_path,
                                                                                small_disk) -> None:
    cfg = _write_config(_pretrain_config(synthetic_root / "classification" / "train", steps=70, checkpoint_every=35),
                        tmp_path / "cfg.json")
    out, filler = small_disk / "run", small_disk / "filler"
    proc = _run(FILL_THE_DISK, filler, "--config", cfg, "--out", out)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert not any("Traceback" in line for line in err), proc.stderr
    steps = [r["step"] for r in read_log(out)]
    assert 35 <= steps[-1] < 70 and steps == list(range(1, steps[-1] + 1))  # whole lines only
    assert err[-1] == (f"error: {out / 'log.jsonl'}: no space left on device while logging step {steps[-1] + 1}; the "
                       "log holds the steps before it: free some space, then run the same command again to resume")
    assert torch.load(out / "checkpoint.pth", weights_only=True)["step"] == 35

    filler.unlink()
    proc = _run("import sys; from benchmark.stages.pretrain import main; sys.exit(main(sys.argv[1:]))",
                "--config", cfg, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {out} at step 35/70" in proc.stderr
    assert [r["step"] for r in read_log(out)] == list(range(1, 71))


def test_a_torn_last_log_line_is_cut_on_resume(synthetic_root, tmp_path, pretrain_to_first_checkpoint, capsys) -> None:
    """A kill mid-write leaves the same torn line a full disk did: the resume cuts it, with the
    records after the checkpoint's step."""
    from benchmark.stages.pretrain import main

    cfg = _pretrain_config(synthetic_root / "classification" / "train", steps=6, checkpoint_every=2)
    out = tmp_path / "run"
    pretrain_to_first_checkpoint(cfg, out)
    log = out / "log.jsonl"
    whole = log.read_bytes()
    with open(log, "a") as fh:
        fh.write(json.dumps({"step": 3, "time": 1.0, "img_per_s": 9.0, "loss": 5.0}) + "\n" + '{"step": 4, "ti')
    capsys.readouterr()
    assert main(["--config", str(_write_config(cfg, tmp_path / "cfg.json")), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"[pretrain splitmask] {log}: dropped 1 torn line(s), left by a write that did not finish" in err
    assert f"resuming {out} at step 2/6" in err
    assert log.read_bytes().startswith(whole) and [r["step"] for r in read_log(out)] == list(range(1, 7))


# ---------------------------------------------------------------------------- a damaged export


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_export_is_not_a_finished_pretraining(synthetic_root, tmp_path, capsys, damage) -> None:
    """A truncated export, or one whose tensors no longer match the checkpoint's encoder, is
    exported again from the whole checkpoint, to the same bytes; the other files stay as they were."""
    from benchmark.stages.pretrain import main

    cfg = _write_config(_pretrain_config(synthetic_root / "classification" / "train", steps=4, checkpoint_every=2),
                        tmp_path / "cfg.json")
    out = tmp_path / "run"
    args = ["--config", str(cfg), "--out", str(out)]
    assert main(args) == 0
    export = out / "encoder.safetensors"
    files = _files(out)
    data = bytearray(files[export.name])
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[-3] ^= 0x40  # a bit of the last tensor
    export.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"exporting it again from {out / 'checkpoint.pth'}" in err and "nothing to do" not in err
    assert _files(out) == files and not _tmp_files(out)  # the export as it was, the rest untouched
    assert main(args) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"[pretrain] {export} exists; nothing to do"


# ---------------------------------------------------------------------------- byte-reproducible exports

SAVE_EXPORT = """
import sys, torch
from benchmark.models.checkpoints.export import save_encoder_state
state = {"pos_embed": torch.arange(12.0).reshape(1, 3, 4), "cls_token": torch.ones(1, 1, 4)}
save_encoder_state(state, {"arch": "vit-smoke", "img_size": 64}, sys.argv[1], source="dino:teacher:/ckpt.pth")
"""


def test_the_same_tensors_export_to_the_same_bytes_in_every_process(tmp_path, monkeypatch) -> None:
    """Here and in two more processes, with other hash seeds (safetensors' own metadata order
    changed from one process to the next)."""
    paths = [tmp_path / f"encoder-{seed}.safetensors" for seed in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", SAVE_EXPORT, str(path)], cwd=REPO, stderr=subprocess.PIPE,
                              env={**ENV, "PYTHONHASHSEED": str(seed)}) for seed, path in enumerate(paths[1:], 1)]
    monkeypatch.setattr(sys, "argv", ["-c", str(paths[0])])
    exec(SAVE_EXPORT, {})
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert len({sha256_file(path) for path in paths}) == 1
    header = paths[0].read_bytes()[8:].split(b"}", 1)[0].decode()
    assert header.startswith('{"__metadata__":{"format":"sslbench.encoder/1","model":')  # sorted


# ---------------------------------------------------------------------------- a non-finite loss


@pytest.mark.parametrize("resumed", [False, True])
def test_a_non_finite_loss_names_the_checkpoint_that_exists(synthetic_root, tmp_path, monkeypatch, capsys,
                                                            pretrain_to_first_checkpoint, resumed) -> None:
    """Before the run's first checkpoint there is none to name; after a resume, the one it resumed from."""
    from benchmark.methods.splitmask import SplitMask
    from benchmark.stages.pretrain import main

    cfg = _pretrain_config(synthetic_root / "classification" / "train", steps=6,
                           checkpoint_every=2 if resumed else 1000)
    out = tmp_path / "run"
    if resumed:
        pretrain_to_first_checkpoint(cfg, out)
    before = _files(out) if resumed else {}
    real_forward, calls = SplitMask.forward, []

    def forward_that_diverges(self, batch, generator):  # NaN at the first step of this process
        calls.append(1)
        out = real_forward(self, batch, generator)
        return {**out, "loss": out["loss"] * float("nan")} if len(calls) == 1 else out

    monkeypatch.setattr(SplitMask, "forward", forward_that_diverges)
    capsys.readouterr()
    assert main(["--config", str(_write_config(cfg, tmp_path / "cfg.json")), "--out", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    if resumed:
        assert last == (f"error: the loss is nan at step 2; stopping. The last good checkpoint is {out / 'checkpoint.pth'}, "
                        "of step 2 (a lower learning rate or a longer warm-up is another config, which does not "
                        "resume from it: start again with --resume never)")
        assert _files(out)["checkpoint.pth"] == before["checkpoint.pth"]
    else:
        assert last == ("error: the loss is nan at step 0; stopping. No checkpoint was written yet (lower the learning "
                        "rate or raise the warm-up, then run again)")
        assert not (out / "checkpoint.pth").exists()


# ---------------------------------------------------------------------------- finished evaluations


def _evaluation(kind: str, synthetic_root: Path):
    from benchmark.stages.finetune import FinetuneConfig
    from benchmark.stages.finetune import main as finetune_main
    from benchmark.stages.probe import ProbeConfig
    from benchmark.stages.probe import main as probe_main

    common = dict(data_root=str(synthetic_root / "classification"), arch="vit-smoke", img_size=64, batch_size=32,
                  log_every=1, checkpoint_every=2, seed=1)
    if kind == "finetune":
        cfg = FinetuneConfig(**common, epochs=1, rand_augment=None, mixup=0.0, cutmix=0.0)
        return cfg, finetune_main
    return ProbeConfig(**common, mode=kind, epochs=1), probe_main


@pytest.mark.parametrize("kind", ["finetune", "linear", "knn"])
def test_a_finished_evaluation_run_again_changes_nothing(synthetic_root, tmp_path, capsys, snapshot, kind) -> None:
    """As a finished pre-training: "nothing to do", every file as it was (not even rewritten). A
    damaged result.json is written again, with the same metrics."""
    cfg, main = _evaluation(kind, synthetic_root)
    out = tmp_path / "run"
    args = ["--config", str(_write_config(cfg, tmp_path / "cfg.json")), "--out", str(out)]
    assert main(args) == 0
    stage = "finetune" if kind == "finetune" else "probe"
    result = out / "result.json"
    before, metrics = snapshot(out), load_result(result)["metrics"]
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == f"[{stage}] {result} exists; nothing to do"
    assert json.loads(captured.out) == metrics
    assert snapshot(out) == before

    result.write_bytes(result.read_bytes()[:100])
    assert main(args) == 0
    again = "; evaluating again" + (f" from {out / 'checkpoint.pth'}" if kind != "knn" else "")
    err = capsys.readouterr().err
    assert f"[{stage}] {result}: not valid JSON" in err and again in err
    assert load_result(result)["metrics"] == metrics
    if kind != "knn":
        assert (out / "checkpoint.pth").read_bytes() == before["checkpoint.pth"][0]


def test_the_driver_counts_a_truncated_export_as_not_done(tmp_path) -> None:
    """A pre-training whose export was cut short is run again by the driver (which exports it anew)."""
    from benchmark.experiments.model import Run
    from benchmark.experiments.plan import is_done
    from benchmark.stages.catalogue import run_kind

    run = Run("pre", "pretrain", {})
    done = tmp_path / run_kind("pretrain").done_file({})
    whole = (REPO / "tests" / "golden" / "mae.safetensors").read_bytes()
    done.write_bytes(whole)
    assert is_done(run, tmp_path)
    done.write_bytes(whole[:-100])
    assert not is_done(run, tmp_path)
