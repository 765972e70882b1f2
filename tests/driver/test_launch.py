"""Launchers (benchmark.driver.launch): in-process, torchrun subprocesses and SLURM job construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.driver.launch import Handle, InProcess, Slurm, Torchrun, TorchrunJob
from benchmark.errors import LaunchError
from benchmark.stages.catalogue import run_kind

FAKE = """
import os, sys
print("fake", os.environ.get("RANK"), os.environ.get("WORLD_SIZE"), " ".join(sys.argv[1:]), flush=True)
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


def test_in_process_runs_in_order_and_blocks_dependents(tmp_path: Path) -> None:
    calls: list[str] = []
    launcher = InProcess()
    a = launcher.submit("a", "data", lambda: calls.append("a"), tmp_path / "a")
    b = launcher.submit("b", "pretrain", lambda: calls.append("b"), tmp_path / "b", after=[a])

    def boom() -> None:
        raise ValueError("no data")

    c = launcher.submit("c", "finetune", boom, tmp_path / "c", after=[b])
    d = launcher.submit("d", "finetune", lambda: calls.append("d"), tmp_path / "d", after=[a, c])
    assert calls == ["a", "b"]
    assert [h.status for h in launcher.wait()] == ["done", "done", "failed", "blocked"]
    assert "ValueError: no data" in c.error and (tmp_path / "c" / "error.log").is_file()
    assert d.error == "blocked by c"
    with pytest.raises(LaunchError):
        c.check()


def test_in_process_cli_target_uses_main(tmp_path: Path) -> None:
    # benchmark.stages.probe's main exits 2 on a missing config: a failure, reported with its code.
    handle = InProcess().submit("p", "probe", ["--config", str(tmp_path / "missing.json"), "--out", str(tmp_path)], tmp_path)
    assert handle.status == "failed" and handle.error == "exit code 2"


def test_command_args(tmp_path: Path) -> None:
    assert run_kind("pretrain").command_args({"data_root": "/d", "steps": 3}, tmp_path) == [
        "--config", str(tmp_path / "launch_config.json"), "--out", str(tmp_path)]
    assert (tmp_path / "launch_config.json").read_text().count('"steps": 3') == 1
    args = run_kind("segment").command_args({"ckpt": "/e.safetensors", "config": "c.py", "data_root": "/ade", "seed": 1,
                                   "cfg_options": {"train_cfg.max_iters": 160, "a.b": "x"}}, tmp_path)
    assert args == ["--ckpt", "/e.safetensors", "--config", "c.py", "--data-root", "/ade", "--work-dir", str(tmp_path),
                    "--seed", "1", "--cfg-options", "train_cfg.max_iters=160", "a.b=x"]


def test_torchrun_command_line() -> None:
    cmd = Torchrun(nproc_per_node=4, python="/py").command("finetune", ["--config", "c.json", "--out", "/r"])
    assert cmd == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
                   "-m", "benchmark.finetune", "--config", "c.json", "--out", "/r"]


@pytest.fixture()
def fake_module(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "fake_step_probe.py").write_text(FAKE)
    return {"PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}


def test_torchrun_real_one_process_run(tmp_path: Path, fake_module: dict[str, str]) -> None:
    launcher = Torchrun(1, env=fake_module, module="fake_step_{kind}")
    data_calls: list[int] = []
    data = launcher.submit("data", "data", lambda: data_calls.append(1), tmp_path / "data")
    handle = launcher.submit("p", "probe", ["--out", "x y"], tmp_path / "p", after=[data])
    assert data_calls == [1] and data.ok
    assert handle.ok, handle.error
    log = (tmp_path / "p" / "launch.log").read_text()
    assert "fake 0 1 --out x y" in log and "# exit code 0" in log


def test_torchrun_failure_is_reported_with_its_log(tmp_path: Path, fake_module: dict[str, str]) -> None:
    launcher = Torchrun(1, env={**fake_module, "FAKE_EXIT": "3"}, module="fake_step_{kind}")
    handle = launcher.submit("p", "probe", [], tmp_path / "p")
    later = launcher.submit("q", "probe", [], tmp_path / "q", after=[handle])
    assert handle.status == "failed"
    assert str(tmp_path / "p" / "launch.log") in handle.error and handle.log == tmp_path / "p" / "launch.log"
    assert "fake 0 1" in handle.log.read_text()
    assert later.status == "blocked" and not (tmp_path / "q").exists()


class FakeJob:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id


def test_slurm_dependency_and_sbatch_text(tmp_path: Path) -> None:
    slurm = Slurm({"partition": "learnlab", "gpus_per_node": 8, "nodes": 2, "timeout_min": {"pretrain": 4320}})
    a, b = (Handle(n, "pretrain", tmp_path, job=FakeJob(i)) for n, i in (("a", "101"), ("b", "102")))
    params = slurm.parameters("ft", "finetune", after=[a, b])
    assert params["slurm_additional_parameters"]["dependency"] == "afterok:101:102"
    assert params["nodes"] == 2 and params["tasks_per_node"] == 1 and params["gpus_per_node"] == 8
    assert params["slurm_partition"] == "learnlab" and params["timeout_min"] == 48 * 60
    assert slurm.parameters("pre", "pretrain")["timeout_min"] == 4320
    assert slurm.parameters("data", "data")["gpus_per_node"] == 0
    text = slurm.sbatch_text("ft", "finetune", tmp_path, after=[a, b])
    assert "#SBATCH --dependency=afterok:101:102" in text
    assert "#SBATCH --partition=learnlab" in text and "#SBATCH --nodes=2" in text
    assert "#SBATCH --kill-on-invalid-dep=yes" in text and "#SBATCH --gpus-per-node=8" in text
    assert "#SBATCH --ntasks-per-node=1" in text and "#SBATCH --time=2880" in text
    assert "submitit.core._submit" in text and "srun" in text


def test_torchrun_job_command_multi_node() -> None:
    job = TorchrunJob("pretrain", ["--config", "c.json", "--out", "/r"], 8, python="/py")
    assert job.command()[:4] == ["/py", "-m", "torch.distributed.run", "--standalone"]
    cmd = job.command(nodes=2, node_rank=1, master="node-a", job_id="77")
    assert cmd == ["/py", "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1", "--rdzv_backend", "c10d",
                   "--rdzv_endpoint", "node-a:29500", "--rdzv_id", "77", "--nproc_per_node", "8",
                   "-m", "benchmark.pretrain", "--config", "c.json", "--out", "/r"]


def test_slurm_debug_executor_runs_jobs_with_dependencies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pdb

    monkeypatch.setattr(pdb, "post_mortem", lambda *a, **k: None)  # submitit's debug executor opens pdb on failure
    calls: list[str] = []
    slurm = Slurm({"gpus_per_node": 1}, cluster="debug")
    a = slurm.submit("a", "data", lambda: calls.append("a"), tmp_path / "a")
    b = slurm.submit("b", "data", lambda: calls.append("b"), tmp_path / "b")
    c = slurm.submit("c", "probe", ["--config", "c.json", "--out", str(tmp_path / "c")], tmp_path / "c", after=[a, b])
    assert c.parameters["slurm_additional_parameters"]["dependency"] == f"afterok:{a.job_id}:{b.job_id}"
    submitted = c.job.submission().function
    assert isinstance(submitted, TorchrunJob)
    assert submitted.kind == "probe" and submitted.gpus_per_node == 1
    assert submitted.command()[-5:] == ["benchmark.probe", "--config", "c.json", "--out", str(tmp_path / "c")]

    def boom() -> None:
        raise RuntimeError("bad")

    d = slurm.submit("d", "data", boom, tmp_path / "d")
    slurm.submit("e", "data", lambda: calls.append("e"), tmp_path / "e", after=[d])
    c.job = None  # do not start a real torchrun in the debug executor
    c.status = "done"
    handles = slurm.wait()
    assert calls == ["a", "b"]
    assert [h.status for h in handles] == ["done", "done", "done", "failed", "blocked"]
    assert "bad" in d.error
