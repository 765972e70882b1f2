"""Supervised (DeiT-style) pre-training, and the class-balanced subsets it trains on."""

from __future__ import annotations

from collections import Counter

from safetensors.torch import load_file

from benchmark.data.folders import fraction_subset
from benchmark.utils.io import read_log
from benchmark.models.vit import create_vit
from benchmark.stages.pretrain import PretrainConfig, pretrain


def test_fraction_subsets_are_class_balanced_and_repeatable() -> None:
    labels = [i % 4 for i in range(400)] + [4] * 3  # four classes of 100, one of 3
    subset = fraction_subset(len(labels), 0.1, seed=7, labels=labels)
    counts = Counter(labels[i] for i in subset)
    assert counts == {0: 10, 1: 10, 2: 10, 3: 10, 4: 1}  # every class keeps its share, at least one
    assert subset == fraction_subset(len(labels), 0.1, seed=7, labels=labels)
    assert subset != fraction_subset(len(labels), 0.1, seed=8, labels=labels)
    assert set(fraction_subset(100, 0.05, seed=0)) < set(range(100)) and len(fraction_subset(100, 0.05, seed=0)) == 5


def test_supervised_pretraining_learns_the_labels(synthetic_root, tmp_path) -> None:
    cfg = PretrainConfig(
        data_root=str(synthetic_root / "classification" / "train"), method="supervised",
        method_args={"mixup": 0.0, "cutmix": 0.0, "rand_augment": None, "random_erase": 0.0},
        arch="vit-smoke", img_size=64, steps=60, batch_size=32, blr=4e-3, warmup_steps=5, drop_path=0.0,
        crop_scale_min=0.5, checkpoint_every=60, log_every=1, seed=0,
    )
    encoder_path = pretrain(cfg, tmp_path)
    records = read_log(tmp_path)
    first = sum(r["loss"] for r in records[:10]) / 10
    last = sum(r["loss"] for r in records[-10:]) / 10
    assert last < first - 0.2, f"loss went from {first:.3f} to {last:.3f}"
    # Six classes: chance is 1/6. The last steps' training accuracy must be well above it.
    assert sum(r["train_acc"] for r in records[-10:]) / 10 > 0.35
    state = load_file(str(encoder_path))
    assert not any(k.startswith("head") for k in state)
    create_vit("vit-smoke", 64, num_classes=0).load_state_dict(state, strict=True)
