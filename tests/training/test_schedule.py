"""Pre-training schedules in iterations or in epochs over the subset."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.errors import ConfigError
from benchmark.stages.pretrain import PretrainConfig, schedule_steps


def test_steps_unless_epochs_are_given() -> None:
    assert schedule_steps(PretrainConfig(data_root=".", steps=123, warmup_steps=7, batch_size=10), 1000) == (123, 7)
    cfg = PretrainConfig(data_root=".", steps=123, warmup_steps=7, batch_size=10, epochs=3, warmup_epochs=0.5)
    assert schedule_steps(cfg, 1000) == (300, 50)


def test_ten_times_the_epochs_on_a_tenth_is_the_same_number_of_iterations() -> None:
    """The paper's ImageNet subsets: 300 epochs of 100%, 3,000 of 10%, 30,000 of 1%."""
    full = schedule_steps(PretrainConfig(data_root=".", batch_size=2048, epochs=300), 1_281_167)[0]
    tenth = schedule_steps(PretrainConfig(data_root=".", batch_size=2048, epochs=3000), 128_116)[0]
    hundredth = schedule_steps(PretrainConfig(data_root=".", batch_size=2048, epochs=30000), 12_811)[0]
    assert full == pytest.approx(tenth, rel=1e-4) and full == pytest.approx(hundredth, rel=1e-3)


def test_warm_up_never_exceeds_the_run_and_epochs_must_be_positive() -> None:
    assert schedule_steps(PretrainConfig(data_root=".", steps=5, warmup_steps=100), 10) == (5, 5)
    with pytest.raises(ConfigError, match="epochs must be positive"):
        schedule_steps(PretrainConfig(data_root=".", epochs=0), 10)


def test_every_method_pretrains_on_the_same_subset(synthetic_root) -> None:
    """A fraction of an ImageFolder is the same images for supervised pre-training (labels) and
    for the self-supervised methods (no labels): both subsets are class-balanced."""

    from benchmark.data.folders import fraction_subset
    from benchmark.stages.pretrain import _images

    cfg = PretrainConfig(data_root=str(synthetic_root / "classification" / "train"), fraction=0.25, seed=3)
    picked = []
    for needs_labels in (True, False):
        images, labels = _images(cfg, needs_labels)
        subset = fraction_subset(len(images), cfg.fraction, cfg.seed, labels=labels)
        files = [Path(images.samples[i][0]) if needs_labels else images.files[i] for i in subset]
        picked.append(sorted(str(f.resolve()) for f in files))
    assert picked[0] == picked[1] and 0 < len(picked[0]) < len(list((synthetic_root / "classification" / "train").rglob("*.png")))
