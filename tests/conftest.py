"""Shared fixtures: one synthetic data root per test session, in the real on-disk formats."""

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
