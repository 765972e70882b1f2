"""Shared fixtures: one synthetic data root per test session, in the real on-disk formats, a tiny
Fashion-MNIST in the official idx format, a pre-training stopped after its first checkpoint, and
a function whose n-th call fails (a full disk mid-write)."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import numpy as np
import pytest

# A suite started in the background by a non-interactive shell (`nohup ./run_tests.sh &`) inherits
# SIGINT ignored, and so would every command it starts, so the Ctrl-C tests would see no Ctrl-C. A
# handler of this process's own is reset to the default in each command it starts.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def learnable_clothes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` 28x28 images of 10 balanced classes that pixels can tell apart: class c is a
    bright bar at row band c over noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(count, 28, 28))
    for i, c in enumerate(labels):
        images[i, 2 + 2 * c: 4 + 2 * c, 4:24] = 230
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_fashion_mnist(folder: Path, train: int = 240, test: int = 60, gz: bool = True) -> Path:
    """A tiny Fashion-MNIST in the official files and format (``{train,t10k}-...-ubyte[.gz]``)."""
    from benchmark.data.fashion_mnist import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for part, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = learnable_clothes(count, seed)
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", labels)
    return folder


@pytest.fixture(scope="session")
def make_fashion_mnist():
    """``make(folder, train=240, test=60, gz=True)``: writes a tiny, learnable Fashion-MNIST there
    in the official idx files (class c: a bright bar at row band c); returns the folder."""
    return write_fashion_mnist


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Fashion-MNIST (240 train, 60 test images, gzipped idx files)."""
    return write_fashion_mnist(tmp_path_factory.mktemp("fashion-mnist"))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make_all(root, seed=0, scale="smoke")``: classification/, coco/ and ade20k/ below it."""
    from benchmark.data.synthetic import make_all

    root = tmp_path_factory.mktemp("synthetic")
    make_all(root, seed=0, scale="smoke")
    return root


@pytest.fixture
def pretrain_to_first_checkpoint(monkeypatch: pytest.MonkeyPatch):
    """``run(cfg, out)``: pre-trains ``cfg`` into ``out`` and stops it right after its first
    checkpoint is written, as a kill would; the run can then be resumed."""
    from benchmark.stages.pretrain import pretrain
    from benchmark.training.checkpoint import TrainingCheckpoint

    class Interrupted(Exception):
        pass

    real_save = TrainingCheckpoint.save

    def save_then_stop(self, step: int) -> None:
        real_save(self, step)
        raise Interrupted

    def run(cfg, out: Path) -> None:
        monkeypatch.setattr(TrainingCheckpoint, "save", save_then_stop)
        try:
            with pytest.raises(Interrupted):
                pretrain(cfg, out)
        finally:
            monkeypatch.setattr(TrainingCheckpoint, "save", real_save)

    return run


@pytest.fixture
def fail_on_call(monkeypatch: pytest.MonkeyPatch):
    """``fail(owner, name, n)``: from now on the ``n``-th call of ``owner.name`` raises
    OSError("disk full") and the others run; returns the call counter (``{"n": calls}``), which a
    test may reset."""
    def fail(owner: object, name: str, n: int) -> dict[str, int]:
        real, calls = getattr(owner, name), {"n": 0}

        def failing(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise OSError("disk full")
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, failing)
        return calls

    return fail


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def tree_digest():
    """``digest(root)``: one hash over every file's relative path and bytes below ``root``."""
    return _tree_digest


@pytest.fixture(scope="session")
def snapshot():
    """``snapshot(root)``: the bytes and modification time of every file below ``root`` (equal
    snapshots: nothing was written, not even the same bytes again)."""
    return _snapshot
