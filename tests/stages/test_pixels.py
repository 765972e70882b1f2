"""The pixel floors: logistic regression and k-NN on raw pixels, the setting chosen on val."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import benchmark.data.fashion_mnist as fm
from benchmark.data.folders import fraction_subset
from benchmark.errors import EXIT_BAD_INPUT
from benchmark.stages.pixels import PixelsConfig, at_edge, main, pixel_floor, pixels_of


@pytest.fixture
def fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_fashion_mnist) -> Path:
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-package")
    return make_fashion_mnist(tmp_path / "fm", train=600, test=200)


@pytest.mark.parametrize("classifier", ["logistic", "knn"])
def test_a_floor_learns_the_pixels_and_records_its_choice(fashion, tmp_path, classifier) -> None:
    cfg = PixelsConfig(data_root=str(fashion), dataset="fashion-mnist", classifier=classifier, train_fraction=0.2,
                       eval_split="test", seed=3)
    metrics = pixel_floor(cfg, tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["kind"] == "pixels" and result["metrics"] == metrics
    assert metrics["top1"] > 90  # a bar per class over noise: pixels tell the classes apart
    choice = result["config"]["choice"]
    assert choice["grid"] == list(map(float, cfg.settings())) and len(choice["val_top1"]) == len(choice["grid"])
    assert choice["chosen"] == choice["grid"][int(np.argmax(choice["val_top1"]))]
    assert choice["at_edge"] == at_edge(choice["setting"], choice["chosen"], choice["grid"])
    # the labelled images are fine-tuning's: the class-balanced fraction of train for the same seed
    train = fm.FashionMNIST(fashion, "train")
    assert choice["labelled_images"] == len(fraction_subset(len(train), 0.2, 3, labels=train.targets)) == 100


def test_chance_labels_leave_the_floor_at_chance(fashion, tmp_path, monkeypatch) -> None:
    """The floor measures the pixels, not the recipe: with the labels shuffled it is near 10%."""
    real = fm.FashionMNIST.__init__

    def shuffled(self, root, split):
        real(self, root, split)
        self.targets = list(np.random.default_rng(0).permutation(self.targets))

    monkeypatch.setattr(fm.FashionMNIST, "__init__", shuffled)
    cfg = PixelsConfig(data_root=str(fashion), dataset="fashion-mnist", train_fraction=0.5, eval_split="test")
    assert pixel_floor(cfg, tmp_path / "run")["top1"] < 30


def test_pixels_are_read_at_the_configured_size(fashion) -> None:
    test = fm.FashionMNIST(fashion, "test")
    feats, labels = pixels_of(test, [0, 1], 14, grey=True)
    assert feats.shape == (2, 196) and feats.dtype == np.float32 and 0 <= feats.min() and feats.max() <= 1
    assert labels.tolist() == test.targets[:2]
    assert pixels_of(test, [0], 28, grey=False)[0].shape == (1, 28 * 28 * 3)


def test_a_grid_larger_than_the_labelled_set_is_one_line(fashion, tmp_path, capsys) -> None:
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"data_root": str(fashion), "dataset": "fashion-mnist", "classifier": "knn",
                                  "grid": [1, 500], "train_fraction": 0.1}))
    assert main(["--config", str(config), "--out", str(tmp_path / "run")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.strip() == "error: PixelsConfig.grid: k = 500 is more than the 50 labelled images"
    assert not (tmp_path / "run").exists()


def test_a_choice_at_a_grid_edge_is_flagged_unless_nothing_lies_beyond_it() -> None:
    grid = [1.0, 3.0, 5.0, 10.0, 20.0]
    assert at_edge("k", 20.0, grid) and not at_edge("k", 5.0, grid)
    assert not at_edge("k", 1.0, grid)  # there is no k below 1
    assert at_edge("k", 3.0, [3.0, 5.0]) and at_edge("C", 0.001, [0.001, 0.01, 0.1]) and at_edge("C", 0.1, [0.001, 0.1])
    assert not at_edge("C", 0.01, [0.001, 0.01, 0.1]) and not at_edge("C", 0.01, [0.01])
