"""``--jobs N``: independent runs at the same time, each in its own process with its share of the
cores; the same results as the runs made one at a time with the same thread count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import benchmark.driver.run as driver
from benchmark.driver.jobs import check_jobs, slot_environment
from benchmark.experiments.model import Run, ref
from benchmark.utils.timing import read_invocations, summary_line


def _plan(fashion: Path) -> list[Run]:
    data = {"data_root": str(fashion), "dataset": "fashion-mnist", "arch": "vit-mini", "img_size": 32}
    tune = {**data, "train_fraction": 0.2, "eval_split": "test", "epochs": 1, "batch_size": 20, "warmup_epochs": 0.5,
            "rand_augment": None, "mixup": 0.0, "cutmix": 0.0, "drop_path": 0.0, "log_every": 1}
    pre = Run("pre", "pretrain", {**data, "method": "mae", "method_args": {"decoder_dim": 32, "decoder_depth": 1,
                                                                         "decoder_heads": 2},
                                  "steps": 4, "batch_size": 16, "warmup_steps": 1, "drop_path": 0.0, "log_every": 1})
    encoder = ref("pre", "encoder.safetensors")
    return [
        Run("floor", "pixels", {"data_root": str(fashion), "dataset": "fashion-mnist", "grid": [0.1, 1.0],
                                "train_fraction": 0.5, "eval_split": "test"}),
        pre,
        Run("tune-pre", "finetune", {**tune, "checkpoint": encoder}),
        Run("knn-pre", "probe", {**data, "checkpoint": encoder, "mode": "knn", "train_fraction": 0.5, "eval_split": "test",
                                 "batch_size": 32}),
        Run("tune-random", "finetune", dict(tune)),
    ]


def _results(runs_dir: Path) -> dict[str, dict]:
    return {p.parent.name.rsplit("-", 1)[0]: json.loads(p.read_text())["metrics"] for p in runs_dir.rglob("result.json")}


def test_two_jobs_give_the_results_of_the_runs_made_one_at_a_time(tmp_path, monkeypatch, capsys,
                                                                   make_fashion_mnist) -> None:
    fashion = make_fashion_mnist(tmp_path / "fm", train=240, test=60)
    monkeypatch.setattr(driver, "plan_runs", lambda subset, scale: _plan(fashion))
    monkeypatch.setattr("benchmark.driver.jobs.cpu_cores", lambda: 2)  # one thread each, as on the 2-core machine
    common = ["--subset", "smoke", "--no-report", "--data-root", str(tmp_path)]

    assert driver.main([*common, "--runs-dir", str(tmp_path / "two"), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert driver.main([*common, "--runs-dir", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)

    two, one = _results(tmp_path / "two"), _results(tmp_path / "one")
    assert set(two) == {"floor", "tune-pre", "knn-pre", "tune-random"}
    assert two == one
    encoders = [load_file(next((tmp_path / d / "pretrain").glob("pre-*/encoder.safetensors"))) for d in ("two", "one")]
    assert encoders[0].keys() == encoders[1].keys()
    assert all(torch.equal(encoders[0][k], encoders[1][k]) for k in encoders[0])
    # two runs at a time: the floor and the pre-training start before either ends; each run its own log
    lines = [line for line in out.splitlines() if " start " in line or " end " in line]
    assert [" start " in line for line in lines[:2]] == [True, True], lines
    assert "slot 1/2, 1 threads" in out and "slot 2/2, 1 threads" in out
    logs = list((tmp_path / "two").glob("*/*/launch.log"))
    assert len(logs) == 5 and all("OMP_NUM_THREADS=1" in log.read_text().splitlines()[0] for log in logs)
    # a run that needs another starts after it ended
    assert out.index("end pretrain pre:") < out.index("start finetune tune-pre")
    # where the time went: printed at the end and kept for the report
    (record,) = read_invocations(tmp_path / "two")
    assert record["jobs"] == 2 and record["runs"] == record["planned"] == 5 and record["startup_s"] >= 0
    assert {k: v["runs"] for k, v in record["by_kind"].items()} == {"pre-training": 1, "fine-tuning": 2, "probes": 1,
                                                                     "floors": 1}
    assert f"{summary_line(record)}\n" in out


def test_a_failed_run_blocks_what_needs_it_and_the_rest_goes_on(tmp_path, monkeypatch, capsys, make_fashion_mnist) -> None:
    fashion = make_fashion_mnist(tmp_path / "fm", train=240, test=60)
    plan = _plan(fashion)
    plan[1].config["method_args"]["decoder_sise"] = 3  # the pre-training fails on its config
    monkeypatch.setattr(driver, "plan_runs", lambda subset, scale: [plan[0], plan[1], plan[2]])
    code = driver.main(["--subset", "smoke", "--no-report", "--runs-dir", str(tmp_path / "r"), "--jobs", "2",
                        "--data-root", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 1
    assert "end pretrain pre: FAILED (exit code 2; see" in out.out
    assert "end finetune tune-pre: skipped (blocked by pre)" in out.out
    assert set(_results(tmp_path / "r")) == {"floor"}


def test_each_job_gets_its_share_of_the_cores_and_a_gpu_shared_round_robin(monkeypatch) -> None:
    monkeypatch.setattr("benchmark.driver.jobs.cpu_cores", lambda: 16)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert slot_environment(4, 2, gpus=0) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    assert slot_environment(2, 1, gpus=8)["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert slot_environment(2, 1, gpus=2)["CUDA_VISIBLE_DEVICES"] == "5"
    # more runs than GPUs: they take the GPUs in turn, several to a GPU
    assert [slot_environment(3, k, gpus=2)["CUDA_VISIBLE_DEVICES"] for k in range(3)] == ["3", "5", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert {slot_environment(4, k, gpus=1)["CUDA_VISIBLE_DEVICES"] for k in range(4)} == {"0"}
    assert check_jobs(3, gpus=2) is None
    assert check_jobs(0, gpus=0) == "--jobs must be at least 1, got 0"
    assert check_jobs(4, gpus=0) is None


@pytest.mark.parametrize("options, message", [
    (["--jobs", "2", "--launcher", "torchrun"], "--jobs 2 needs --launcher inprocess"),
    (["--jobs", "0"], "--jobs must be at least 1, got 0"),
])
def test_jobs_with_other_options_is_one_line(options, message, capsys) -> None:
    assert driver.main(["--subset", "smoke", "--dry-run", *options]) == 2
    assert message in capsys.readouterr().err


def test_sigterm_to_the_driver_checkpoints_every_running_run_and_a_rerun_resumes(tmp_path, make_fashion_mnist) -> None:
    import signal
    import subprocess
    import sys
    import time

    from benchmark import REPO

    fashion = make_fashion_mnist(tmp_path / "fm", train=240, test=60)
    plan = _plan(fashion)[1:3]  # the pre-training and the fine-tuning that needs it
    plan[0].config.update(steps=400, checkpoint_every=1000)
    (tmp_path / "plan.json").write_text(json.dumps([[r.name, r.kind, r.config, r.tags] for r in plan]))
    script = ("import json, sys; import benchmark.driver.run as d; from benchmark.experiments.model import Run; "
              f"plan = [Run(*x) for x in json.load(open({str(tmp_path / 'plan.json')!r}))]; "
              "d.plan_runs = lambda subset, scale: plan; "
              f"sys.exit(d.main(['--subset', 'smoke', '--no-report', '--jobs', '2', '--runs-dir', {str(tmp_path / 'r')!r}, "
              f"'--data-root', {str(tmp_path)!r}]))")
    driver_proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
    deadline = time.time() + 300
    while not list((tmp_path / "r").glob("pretrain/*/log.jsonl")) and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    driver_proc.send_signal(signal.SIGTERM)
    out, err = driver_proc.communicate(timeout=300)
    assert driver_proc.returncode == 75, out[-2000:] + err[-2000:]
    assert "stopped by SIGTERM: every running run wrote its checkpoint" in err
    (pre_dir,) = (tmp_path / "r" / "pretrain").iterdir()
    assert (pre_dir / "checkpoint.pth").is_file() and not (pre_dir / "encoder.safetensors").exists()
    assert "stopped by SIGTERM" in (pre_dir / "launch.log").read_text()
    assert not list((tmp_path / "r").glob("finetune/*/result.json"))  # nothing started after the signal
    again = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "resuming" in (pre_dir / "launch.log").read_text()
    assert list((tmp_path / "r").glob("finetune/*/result.json"))


def test_the_miniature_runs_two_jobs_by_default_on_a_multicore_cpu_and_several_per_gpu() -> None:
    from benchmark.driver.jobs import RUNS_PER_GPU

    assert driver.default_jobs("mini", "inprocess", gpus=0, cores=2) == 2
    assert driver.default_jobs("mini-quick", "inprocess", gpus=0, cores=16) == 2
    assert driver.default_jobs("mini", "inprocess", gpus=0, cores=1) == 1      # one core: nothing to share
    assert driver.default_jobs("mini", "inprocess", gpus=1, cores=16) == RUNS_PER_GPU  # small runs share a GPU
    assert driver.default_jobs("smoke", "inprocess", gpus=0, cores=2) == 1     # other scales: as before
    assert driver.default_jobs("mini", "torchrun", gpus=0, cores=2) == 1


def test_the_run_heading_the_costliest_chain_starts_first() -> None:
    """A long pre-training (and what needs it) goes before quick independent runs; ties keep the
    plan's order; a run never precedes one it needs."""
    from benchmark.driver.jobs import longest_chain_first

    quick = [Run(f"quick{i}", "finetune", {}) for i in range(3)]
    short_pre, long_pre = Run("pre-short", "pretrain", {}), Run("pre-long", "pretrain", {})
    after = [Run(f"ft-{p.name}", "finetune", {"checkpoint": ref(p.name, "encoder.safetensors")}) for p in (short_pre, long_pre)]
    cost = {"pre-short": 5.0, "pre-long": 20.0, "quick0": 3.0, "quick1": 3.0, "quick2": 3.0}
    order = [r.name for r in longest_chain_first([*quick, short_pre, long_pre, *after], lambda r: cost.get(r.name, 2.0))]
    assert order == ["pre-long", "pre-short", "quick0", "quick1", "quick2", "ft-pre-short", "ft-pre-long"]


def test_the_miniature_defaults_to_its_gpu_scale_and_several_runs_per_gpu_where_a_gpu_is_visible() -> None:
    from benchmark.driver.jobs import RUNS_PER_GPU
    from benchmark.driver.run import default_jobs, default_scale

    assert default_scale("mini", gpus=1) == "mini-gpu" and default_scale("mini_seeds", gpus=2) == "mini-gpu"
    assert default_scale("mini", gpus=0) == "mini" and default_scale("smoke", gpus=1) == "smoke"
    assert default_scale("mini-quick", gpus=1) == "mini-quick"  # a scale named as the subset stays itself
    assert default_jobs("mini-gpu", "inprocess", gpus=2, cores=16) == 2 * RUNS_PER_GPU
    assert default_jobs("mini", "inprocess", gpus=0, cores=2) == 2
    assert default_jobs("paper", "inprocess", gpus=8, cores=64) == 1
    assert default_jobs("mini-gpu", "torchrun", gpus=1, cores=16) == 1
