"""The data-set records are the one place their facts live: what the planner, the dry run and the
layouts read is derived from them, and each names a reader that exists."""

from __future__ import annotations

from benchmark.data.classification import READERS
from benchmark.data.sets import DATA_SETS
from benchmark.experiments.datasets import DATASETS, FORMATS, TRAIN_IMAGES, WRITTEN
from benchmark.stages.cost import DATASET_SIZES


def test_every_record_names_a_reader_that_exists_and_a_folder_with_a_layout() -> None:
    for name, record in DATA_SETS.items():
        assert record.reader is None or record.reader in READERS, name
        assert record.root in DATASETS or record.written_by is not None, name  # found under the data root, or written
        assert not (record.pretrain_images is None and record.reader is None and record.train is not None
                    and record.written_by is None), f"{name}: a pre-training set needs a folder or a reader"


def test_the_planner_and_the_dry_run_read_the_same_counts() -> None:
    for name, sizes in DATASET_SIZES.items():
        assert TRAIN_IMAGES[name] == sizes["train"] == DATA_SETS[name].train
    assert set(FORMATS) == {"fashion-mnist"} and set(WRITTEN) == {"fashion-mnist-scenes"}
