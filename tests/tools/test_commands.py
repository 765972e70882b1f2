"""The commands' own help and checks read well: no raw markup, no warnings mid-table, help before
any installation."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmark import REPO


def test_the_package_help_shows_no_raw_markup() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmark", "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "python -m benchmark <command>" in proc.stderr and "``" not in proc.stderr


def test_doctor_prints_its_table_without_warnings_in_it() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmark", "doctor"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, cwd=REPO)
    assert "torchvision ops" in proc.stdout and "Warning" not in proc.stdout, proc.stdout


def test_run_all_help_needs_no_installation(tmp_path) -> None:
    """./run_all.sh --help answers at once, with the system's Python, and installs nothing."""
    env = {**os.environ, "SSLBENCH_VENV": str(tmp_path / "venv"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "run_all.sh"), "--help"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m benchmark.run"), proc.stderr
    assert not (tmp_path / "venv").exists()
