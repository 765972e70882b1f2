"""The commands' own help and checks read well: no raw markup, no warnings mid-table, help before
any installation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from benchmark import REPO
from benchmark.errors import EXIT_INTERRUPTED, command, start_command


def test_the_package_help_shows_no_raw_markup() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmark", "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "python -m benchmark <command>" in proc.stderr and "``" not in proc.stderr


def test_doctor_prints_its_table_without_warnings_in_it() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmark", "doctor"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, cwd=REPO)
    assert "torchvision ops" in proc.stdout and "Warning" not in proc.stdout, proc.stdout


def test_doctor_on_a_gpu_checks_the_dense_ops_there_and_names_the_fix(monkeypatch, capsys) -> None:
    """Where a GPU is visible, the doctor runs RoIAlign and NMS on it, mmcv's and torchvision's (the
    fallback's); an mmcv without CUDA ops (this machine's, which the check then meets) is one
    problem line naming the rebuild, and exit 1. On a machine without a GPU the check is not made
    (the doctor's table above)."""
    import torch

    from benchmark.tools import doctor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "a GPU")
    assert doctor.run_doctor() == 1
    out = capsys.readouterr().out
    assert "mmcv GPU ops     FAILED" in out and "built without CUDA ops" in out
    assert "torchvision GPU  " in out  # the fallback's kernels on the GPU (FAILED here: no CUDA tensor on this CPU)
    assert "- mmcv's RoIAlign and NMS do not run on this GPU: rebuild mmcv with its CUDA ops here" in out


def test_doctor_names_an_mmcv_installed_without_compiled_ops_by_its_own_name(monkeypatch, capsys) -> None:
    """scripts/offline_install.sh ... none installs mmcv as "mmcv-lite": the doctor finds its version
    under that name (not "MISSING") and says so; its ops check then fails on its own line."""
    from importlib import metadata

    from benchmark.tools import doctor

    real = metadata.version

    def version(dist: str) -> str:
        if dist == "mmcv":
            raise metadata.PackageNotFoundError(dist)
        return "2.1.0" if dist == "mmcv-lite" else real(dist)

    monkeypatch.setattr(metadata, "version", version)
    doctor.run_doctor()
    assert "mmcv         2.1.0 (mmcv-lite)\n" in capsys.readouterr().out


def test_run_all_help_needs_no_installation(tmp_path) -> None:
    """./run_all.sh --help answers at once, with the system's Python, and installs nothing."""
    env = {**os.environ, "SSLBENCH_VENV": str(tmp_path / "venv"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "run_all.sh"), "--help"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m benchmark.run"), proc.stderr
    assert not (tmp_path / "venv").exists()


def test_ctrl_c_while_a_command_imports_its_stack_is_one_line_not_a_traceback(tmp_path) -> None:
    """A real SIGINT 0.3 s after the start, while ``python -m benchmark.report`` is still importing
    torch and pandas (seconds here): one line and exit 130, nothing written."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.report", "--runs-dir", str(tmp_path / "no-runs"),
                             "--report-dir", str(tmp_path / "report")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("interrupted by Ctrl-C"), err
    assert not (tmp_path / "report").exists()


def test_start_command_turns_a_ctrl_c_during_the_import_into_its_exit_code(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "slow_to_import.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as stopped:
        start_command(command("slow_to_import"))
    assert stopped.value.code == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "interrupted by Ctrl-C while the command was starting: nothing was done"
