"""``python -m benchmark.perf`` never replaces a table with a partial or defaulted run: a run's rows
are merged into the table at ``--out`` (a row measured again is replaced, every other row stays),
and a bad value is one ``error:`` line and exit code 2 before anything is measured or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import benchmark
from benchmark.tools.perf import main
from benchmark.tools.perf_table import machine

ROOT = Path(benchmark.__file__).resolve().parents[1]  # the checkout whose code the subprocesses run
# a run of a few seconds, should it be measured: the supervised step and the bare ViT at a toy size
TINY = ["--parts", "steps", "--archs", "vit-smoke", "--methods", "supervised", "--img-size", "32", "--batch-size", "2",
        "--steps", "1", "--warmup", "0", "--device", "cpu"]


@pytest.fixture()
def committed(tmp_path: Path) -> Path:
    """The committed CPU table (53 rows) in a folder of its own, its json naming this machine
    (the table is this repository's CPU machine's), and an earlier plot beside it."""
    out = tmp_path / "perf.csv"
    out.write_bytes((ROOT / "tables" / "perf.csv").read_bytes())
    meta = json.loads((ROOT / "tables" / "perf.json").read_text()) | machine(torch.device("cpu"))
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (tmp_path / "perf.png").write_bytes(b"an earlier plot")
    return out


def files(folder: Path) -> dict[str, bytes | None]:
    """What ``folder`` holds: each file's bytes (None for a folder)."""
    return {p.name: p.read_bytes() if p.is_file() else None for p in sorted(folder.iterdir())}


def perf(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real command, in its own process."""
    return subprocess.run([sys.executable, "-m", "benchmark.perf", *argv], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_a_partial_run_adds_its_rows_and_keeps_the_others(committed: Path) -> None:
    before = pd.read_csv(committed)
    count = len(before)
    assert count > 10
    old_date = json.loads(committed.with_suffix(".json").read_text())["date"]
    argv = [*TINY, "--out", str(committed), "--plot", str(committed.with_suffix(".png"))]
    done = perf(*argv, cwd=committed.parent)
    assert done.returncode == 0, done.stderr
    assert f"merged into the {count} there" in done.stdout
    after = pd.read_csv(committed)
    assert len(after) == count + 2 and set(after[after.arch == "vit-smoke"].method) == {"supervised", "vit (bare)"}
    kept = after[after.measured == old_date].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[before.columns], before, check_dtype=False)
    assert list(after.part.str.split("-").str[0].drop_duplicates()) == ["steps", "pipeline", "scaling"]
    runs = json.loads(committed.with_suffix(".json").read_text())["runs"]
    assert runs[0]["date"] == old_date and "--archs vit-smoke" in runs[1]["command"]
    # The same run again replaces its own two rows, not the others.
    assert main(argv) == 0
    again = pd.read_csv(committed)
    assert len(again) == count + 2 and len(again[again.measured == old_date]) == count
    pd.testing.assert_frame_equal(again[again.measured == old_date].reset_index(drop=True)[before.columns], before,
                                  check_dtype=False)
    from benchmark.report.perf_section import perf_section

    section = "\n".join(perf_section(committed.parent))
    assert "in 2 runs" in section and "python -m benchmark.perf --compile splitmask beit mae" in section


def test_a_batch_size_of_zero_is_refused_not_read_as_the_default(committed: Path) -> None:
    before = files(committed.parent)
    done = perf(*TINY, "--batch-size", "0", "--out", str(committed), "--plot", str(committed.with_suffix(".png")),
                cwd=committed.parent)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--batch-size: 0 should be at least 1" in lines[0]
    assert files(committed.parent) == before


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own exits
        return int(exc.code or 0)


BAD = {
    "--steps 0": (["--steps", "0"], "--steps: 0 should be at least 1"),
    "--steps -1": (["--steps", "-1"], "--steps: -1 should be at least 1"),
    "--warmup -1": (["--warmup", "-1"], "--warmup: -1 should be at least 0"),
    "--workers -1": (["--workers", "-1"], "--workers: -1 should be at least 0"),
    "--peak-tflops 0": (["--peak-tflops", "0"], "--peak-tflops: 0 should be above 0"),
    "an unknown arch": (["--archs", "vit-huge"], "--archs: unknown arch 'vit-huge'"),
    "an unknown scaling arch": (["--parts", "scaling", "--scaling-arch", "vit-h14", "--batch-sizes", "1",
                                 "--img-sizes", "32"], "--scaling-arch: unknown arch 'vit-h14'"),
    "a scaling batch of 0": (["--parts", "scaling", "--scaling-arch", "vit-smoke", "--batch-sizes", "0"],
                             "--batch-sizes: 0 should be at least 1"),
    "an image size the patches do not divide": (["--img-size", "60"], "image size 60: not a multiple of vit-smoke's"),
    "an unknown part": (["--parts", "speed"], "--parts: invalid choice: 'speed'"),
    "a table of another machine": (["another machine"], "its rows were measured on another machine or scale"),
    "a table without its json": (["no json"], "not a table of python -m benchmark.perf with its perf.json"),
    "--out a directory": (["out dir"], "a directory"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_values_are_one_line_before_anything_is_measured(case: str, committed: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    extra, message = BAD[case]
    out = committed
    if extra == ["another machine"]:
        meta = json.loads(committed.with_suffix(".json").read_text()) | {"device": "NVIDIA H200", "cpu_cores": 16}
        committed.with_suffix(".json").write_text(json.dumps(meta))
        extra = []
    elif extra == ["no json"]:
        committed.with_suffix(".json").unlink()
        extra = []
    elif extra == ["out dir"]:
        out, extra = committed.parent / "tables", []
        out.mkdir()
    before = files(committed.parent)
    assert run_main([*TINY, *extra, "--out", str(out), "--plot", str(committed.with_suffix(".png"))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert files(committed.parent) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: --device cuda is valid here")
def test_a_device_that_is_not_there_is_one_line(committed: Path, capsys: pytest.CaptureFixture) -> None:
    before = files(committed.parent)
    argv = [*TINY, "--device", "cuda", "--out", str(committed), "--plot", str(committed.with_suffix(".png"))]
    assert run_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cuda: no CUDA device is visible" in err
    assert files(committed.parent) == before
