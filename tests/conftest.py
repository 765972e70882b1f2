"""Shared fixtures: one synthetic data root per test session, in the real on-disk formats, and a
pre-training stopped after its first checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest


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
