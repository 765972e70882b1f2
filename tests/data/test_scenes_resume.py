"""A scenes run killed half-way (SIGKILL: no handler runs, nothing is cleaned up) is finished by
the same command: at whatever point the kill came, the second run exits 0, leaves the set a run
never stopped writes, byte for byte, and no staged (``.tmp``) or replaced (``.old``) folder; the
other files of the directory stay as they were. A different command is told that the directory
holds an unfinished set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_scenes import write_fake_fashion  # this folder's (pytest puts it on the path)

import benchmark
from benchmark.data.scenes import MANIFEST, PARTS, main, make_scenes

ROOT = Path(benchmark.__file__).resolve().parents[1]  # the checkout whose code the subprocesses run
TRAIN, VAL = 6, 3

# Runs the CLI (argv after the first two arguments) in a process that SIGKILLs itself at a chosen
# point: at the n-th image it writes (save_png N), just before a rename onto a name (replace NAME),
# or just before a folder whose name ends so is removed (rmtree SUFFIX).
KILLED_AT = """
import os, shutil, signal, sys
from pathlib import Path
from benchmark.data import scenes

where, arg = sys.argv[1], sys.argv[2]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def wrap(owner, name, kills):
    real = getattr(owner, name)

    def call(*args, **kwargs):
        if kills(*args):
            die()
        return real(*args, **kwargs)

    setattr(owner, name, call)


calls = [0]


def nth(*args):
    calls[0] += 1
    return calls[0] == int(arg)


if where == "save_png":
    wrap(scenes, "save_png", nth)
elif where == "replace":
    wrap(os, "replace", lambda src, dst: Path(dst).name == arg)
elif where == "rmtree":
    wrap(shutil, "rmtree", lambda path: Path(path).name.endswith(arg))
sys.exit(scenes.main(sys.argv[3:]))
"""


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def killed_at(where: str, arg: str, argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED_AT, where, arg, *argv], env=environment(), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, f"not killed at {where} {arg}: {done}"


def hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def files(out: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file below ``out`` (but those below the top-level names ``skip``) and its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] not in skip}


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_fashion(tmp_path_factory.mktemp("fashion-mnist"))


@pytest.fixture(scope="module")
def whole(fake_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The files of seed 0's set written by a run never stopped."""
    out = tmp_path_factory.mktemp("whole") / "out"
    make_scenes(out, 0, fake_root, TRAIN, VAL)
    return files(out)


# where the kill comes: (how, arg, over an earlier set of seed 1 with --overwrite)
KILLS = {
    "writing the staged parts": ("save_png", "3", False),
    "renaming the parts into place": ("replace", "ade20k", False),  # unlabelled/ in place, the others staged
    "after the parts, before the manifest": ("replace", MANIFEST, False),
    "--overwrite, writing the staged parts": ("save_png", "3", True),
    "--overwrite, swapping in the parts": ("replace", "ade20k", True),  # the old ade20k/ half moved away
    "--overwrite, removing a replaced part": ("rmtree", ".old", True),
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_the_same_command_finishes_a_run_killed_at_any_point(kill: str, fake_root: Path, whole: dict[str, bytes],
                                                             tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    where, arg, overwrite = KILLS[kill]
    out = tmp_path / "out"
    argv = ["--out", str(out), "--seed", "0", "--data-root", str(fake_root), "--train-scenes", str(TRAIN),
            "--val-scenes", str(VAL)] + (["--overwrite"] if overwrite else [])
    if overwrite:  # a directory of the user's holding an earlier set
        make_scenes(out, 1, fake_root, TRAIN, VAL)
        (out / "notes.txt").write_text("mine")
    killed_at(where, arg, argv)
    assert [n for n in hidden(out) if n.endswith((".tmp", ".old"))], "the kill came after the run had cleaned up"
    capsys.readouterr()
    assert main(argv) == 0
    assert f"wrote {TRAIN} train and {VAL} val scenes" in capsys.readouterr().out
    assert hidden(out) == [], "leftovers of the killed run"
    assert files(out, skip=("notes.txt",)) == whole
    if overwrite:
        assert (out / "notes.txt").read_text() == "mine"


def test_a_real_kill_while_the_scenes_are_written(fake_root: Path, tmp_path: Path) -> None:
    """The command killed from outside once its staged folders hold images, then run again, as
    the user would: no leftovers, the set whole."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "benchmark.data.scenes", "--out", str(out), "--seed", "0", "--data-root",
            str(fake_root), "--train-scenes", "300", "--val-scenes", "30"]
    run = subprocess.Popen(argv, env=environment(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".unlabelled.*.tmp/train/scenes/*.png")) and run.poll() is None:
            assert time.monotonic() < deadline, "no staged images appeared"
            time.sleep(0.005)
        run.send_signal(signal.SIGKILL)
    finally:
        run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL, "the run finished before it was killed: give it more scenes"
    assert [n for n in hidden(out) if n.endswith(".tmp")]
    again = subprocess.run(argv, env=environment(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "wrote 300 train and 30 val scenes" in again.stdout
    assert hidden(out) == [] and sorted(p.name for p in out.iterdir()) == sorted([*PARTS, MANIFEST])
    reference = tmp_path / "reference"
    make_scenes(reference, 0, fake_root, 300, 30)
    assert files(out) == files(reference)


def test_another_command_is_told_the_set_is_unfinished(fake_root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    base = ["--out", str(out), "--data-root", str(fake_root), "--train-scenes", str(TRAIN), "--val-scenes", str(VAL)]
    killed_at("replace", "ade20k", [*base, "--seed", "0"])
    before = files(out)
    capsys.readouterr()
    assert main([*base, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "unfinished" in err and "different seed" in err
    assert files(out) == before
    assert main([*base, "--seed", "1", "--overwrite"]) == 0
    assert hidden(out) == []
