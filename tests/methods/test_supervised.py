"""Supervised (DeiT-style) pre-training, and the class-balanced subsets it trains on."""

from __future__ import annotations

from collections import Counter

from safetensors.torch import load_file

from benchmark.data.folders import fraction_subset
from benchmark.utils.io import read_log


def test_fraction_subsets_are_class_balanced_and_repeatable() -> None:
    labels = [i % 4 for i in range(400)] + [4] * 3  # four classes of 100, one of 3
    subset = fraction_subset(len(labels), 0.1, seed=7, labels=labels)
    counts = Counter(labels[i] for i in subset)
    assert counts == {0: 10, 1: 10, 2: 10, 3: 10, 4: 1}  # every class keeps its share, at least one
    assert subset == fraction_subset(len(labels), 0.1, seed=7, labels=labels)
    assert subset != fraction_subset(len(labels), 0.1, seed=8, labels=labels)
    assert set(fraction_subset(100, 0.05, seed=0)) < set(range(100)) and len(fraction_subset(100, 0.05, seed=0)) == 5


# The shared smoke pre-training (tests/methods/conftest.py) passes the contract test
# (test_contract.py): its loss falls, its export is its encoder and loads strictly, it resumes.


def test_supervised_pretraining_learns_the_labels(pretrained) -> None:
    _, out, encoder_path = pretrained("supervised")
    records = read_log(out)
    # Six classes: chance is 1/6. The last steps' training accuracy must be well above it.
    assert sum(r["train_acc"] for r in records[-10:]) / 10 > 0.35
    assert not any(k.startswith("head") for k in load_file(str(encoder_path)))
