"""Fashion-MNIST from its official idx files: tiny valid and broken files written by the tests,
the splits the suite uses, the Debian package's folder where no data root was named, and the real package."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

import benchmark.data.fashion_mnist as fm
from benchmark.data.classification import load_classification, load_splits
from benchmark.errors import DataError
from benchmark.experiments import datasets
from benchmark.experiments.datasets import SYSTEM_COPIES, dataset_dir, missing_datasets, resolve_data
from benchmark.experiments.model import Run


@pytest.fixture
def no_debian_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The Debian package's folder moved to an empty place, so that only the test's files count."""
    empty = tmp_path / "no-debian-package"
    monkeypatch.setattr(fm, "DEBIAN_DIR", empty)
    return empty


@pytest.mark.parametrize("gz", [True, False])
def test_the_idx_files_read_as_written_with_a_fixed_stratified_val_split(tmp_path, gz, no_debian_copy,
                                                                         make_fashion_mnist) -> None:
    root = make_fashion_mnist(tmp_path / "fm", train=240, test=60, gz=gz)
    train, val, test = (fm.FashionMNIST(root, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (200, 40, 60)
    suffix = ".gz" if gz else ""
    images = fm.read_idx(root / f"train-images-idx3-ubyte{suffix}", 3)
    test_images = fm.read_idx(root / f"t10k-images-idx3-ubyte{suffix}", 3)
    # val and train partition the official train split; each class keeps its share in val
    assert np.bincount(val.targets, minlength=10).tolist() == [4] * 10
    together = np.concatenate([train.images, val.images])
    assert sorted(map(bytes, together)) == sorted(map(bytes, images))
    assert fm.FashionMNIST(root, "val").targets == val.targets  # fixed
    image, label = test[0]
    assert image.mode == "RGB" and image.size == (28, 28)
    assert np.array_equal(np.asarray(image)[..., 0], test_images[0]) and label == test.targets[0]
    assert train.classes[9] == "Ankle boot"
    # through the suite's reader, with the held-out test split
    held_train, held_test = load_splits("fashion-mnist", root, "test")
    assert len(held_train) == 200 and len(held_test) == 60


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(5))),
     "not an idx file of images (magic number 00000801, expected 00000803)"),
    (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100])),
     "truncated (46956 bytes, the header's 60x28x28 needs 47056)"),
    (lambda p: p.write_bytes(p.read_bytes()[:50]), "cannot be read as gzip"),
])
def test_a_broken_idx_file_is_one_line_naming_it(tmp_path, damage, message, no_debian_copy, make_fashion_mnist) -> None:
    root = make_fashion_mnist(tmp_path / "fm", train=240, test=60)
    damage(root / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError) as err:
        fm.FashionMNIST(root, "test")
    assert str(err.value).startswith(f"{root / 't10k-images-idx3-ubyte.gz'}: ")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_image_and_label_counts_that_disagree_are_one_line(tmp_path, no_debian_copy, make_fashion_mnist) -> None:
    root = make_fashion_mnist(tmp_path / "fm", train=240, test=60)
    labels = fm.read_idx(root / "t10k-labels-idx1-ubyte.gz", 1)
    fm.write_idx(root / "t10k-labels-idx1-ubyte.gz", labels[:50])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz holds 60 images but .*t10k-labels-idx1-ubyte.gz 50 labels"):
        fm.FashionMNIST(root, "test")


def test_a_missing_data_set_says_how_to_get_it(tmp_path, no_debian_copy) -> None:
    with pytest.raises(DataError) as err:
        load_classification("fashion-mnist", tmp_path / "nothing", "train")
    text = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in text and "train-images-idx3-ubyte.gz" in text and "\n" not in text


def test_the_debian_folder_is_used_only_where_no_data_root_was_named(tmp_path, monkeypatch, make_fashion_mnist) -> None:
    package = make_fashion_mnist(tmp_path / "usr-share-datasets-fashion-mnist")
    monkeypatch.setattr(fm, "DEBIAN_DIR", package)
    monkeypatch.setitem(SYSTEM_COPIES, "fashion-mnist", package)
    default = tmp_path / "data"  # the driver's data root when none is named
    monkeypatch.setattr(datasets, "DEFAULT_DATA_ROOT", default)
    assert dataset_dir("fashion-mnist", default) == package
    run = Run("r", "finetune", {"data_root": {"data": "fashion-mnist", "path": ""}})
    assert missing_datasets([run], default) == {}
    assert resolve_data(run.config, default) == {"data_root": str(package)}  # the config names the data read
    # a root that was named is read as given, never replaced
    with pytest.raises(DataError, match="no such directory"):
        fm.FashionMNIST(default / "fashion-mnist", "train")
    assert dataset_dir("fashion-mnist", tmp_path / "named") is None
    # files under the data root win, uncompressed ones too
    own = make_fashion_mnist(default / "fashion-mnist", gz=False)
    assert dataset_dir("fashion-mnist", default) == own
    assert fm.FashionMNIST(own, "train").folder == own


def test_the_debian_package_holds_the_official_splits() -> None:
    """The real data (CI installs Debian's dataset-fashion-mnist through scripts/bootstrap.sh)."""
    assert fm.holds_files(fm.DEBIAN_DIR), f"{fm.DEBIAN_DIR}: run scripts/bootstrap.sh (it installs the package)"
    train, val, test = (fm.FashionMNIST(fm.DEBIAN_DIR, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (50_000, 10_000, 10_000)
    assert np.bincount(val.targets).tolist() == [1000] * 10 and np.bincount(test.targets).tolist() == [1000] * 10
    assert train.images.shape[1:] == (28, 28) and train.images.dtype == np.uint8
