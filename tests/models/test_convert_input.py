"""``python -m benchmark.convert`` never writes over its own input and answers an output path it
cannot write with one line: the same file as the input (by any name), a directory, a path below a
file. Exit code 2, the input byte for byte as it was, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import benchmark
from benchmark.models.checkpoints.cli import main
from benchmark.models.checkpoints.export import save_encoder, to_mm
from benchmark.models.vit import create_vit, model_spec

ROOT = Path(benchmark.__file__).resolve().parents[1]  # the checkout whose code the subprocesses run


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_encoder(create_vit("vit-smoke", 64, num_classes=0), model_spec("vit-smoke", 64),
                        tmp_path / "encoder.safetensors")


def convert(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """The real command, in its own process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "benchmark.convert", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_the_same_path_as_input_and_output_is_refused(export: Path, tmp_path: Path) -> None:
    before = export.read_bytes()
    done = convert(export, export, cwd=tmp_path)
    assert done.returncode == 2, done
    line = one_error_line(done.stderr)
    assert "the same file as the input" in line and str(export) in line
    assert export.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["encoder.safetensors"]


def test_an_output_directory_is_refused(export: Path, tmp_path: Path) -> None:
    folder = tmp_path / "backbones"
    folder.mkdir()
    (folder / "kept.pth").write_bytes(b"an earlier file")
    before = export.read_bytes()
    done = convert(export, folder, cwd=tmp_path)
    assert done.returncode == 2, done
    assert "a directory, not a file" in one_error_line(done.stderr)
    assert export.read_bytes() == before
    assert [(p.name, p.read_bytes()) for p in folder.iterdir()] == [("kept.pth", b"an earlier file")]


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own exits
        return int(exc.code or 0)


@pytest.mark.parametrize("case", ["mm, another spelling", "mm, a symbolic link", "import, the same path",
                                  "import, a directory", "mm, below a file"])
def test_every_form_of_an_unwritable_output_is_one_line(case: str, export: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    mm = to_mm(export, tmp_path / "backbone.pth")
    link = tmp_path / "link.safetensors"
    link.symlink_to(export)
    argv, message = {
        "mm, another spelling": (["mm", str(export), "./encoder.safetensors"], "the same file as the input"),
        "mm, a symbolic link": ([str(export), str(link)], "the same file as the input"),
        # an export reads as a timm checkpoint: without the check it is imported over itself
        "import, the same path": (["import", str(export), str(export)], "the same file as the input"),
        "import, a directory": (["import", str(export), str(tmp_path)], "a directory, not a file"),
        "mm, below a file": ([str(export), str(mm / "out.pth")], "is a file, not a directory"),
    }[case]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert run_main(argv) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
