"""Data-loader workers (benchmark.data.loader): how many by default, and that they never change
what a batch holds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data import loader
from benchmark.data.augment import Augmentation
from benchmark.data.folders import EpochSampler, ImageFiles, SeededTransform
from benchmark.errors import ConfigError
from benchmark.methods.base import PretrainMethod

CPU = torch.device("cpu")


@pytest.mark.parametrize("cores, world, expected", [(1, 1, 0), (2, 1, 1), (16, 1, 10), (64, 1, 10), (16, 8, 1),
                                                     (16, 4, 3), (4, 8, 0)])
def test_default_workers_share_the_cores_of_this_process(cores, world, expected, monkeypatch) -> None:
    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert loader.default_workers(world) == expected


def test_a_model_on_the_cpu_loads_its_own_batches_by_default(monkeypatch) -> None:
    """On a CPU the model's threads use every core: no worker by default, whatever the cores."""
    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loader.default_workers(1, CPU) == 0 and loader.resolve_workers(-1, 1, CPU) == 0
    assert loader.default_workers(1, torch.device("cuda", 0)) == 10
    assert loader.resolve_workers(2, 1, CPU) == 2  # a number given is kept


def test_default_workers_without_an_affinity_mask_count_the_machine_s_cores(monkeypatch) -> None:
    def unsupported(pid):
        raise OSError

    monkeypatch.setattr(loader.os, "sched_getaffinity", unsupported, raising=False)
    monkeypatch.setattr(loader.os, "cpu_count", lambda: 6)
    assert loader.default_workers() == 5


def test_num_workers_minus_one_is_the_default_and_other_negatives_are_refused() -> None:
    assert loader.resolve_workers(-1, 1) == loader.default_workers(1)
    assert loader.resolve_workers(3) == 3
    with pytest.raises(ConfigError, match=r"num_workers=-2 should be -1 \(default_workers\(\) for this machine\)"):
        loader.resolve_workers(-2)


def test_a_probe_config_with_a_negative_num_workers_is_refused_before_it_runs() -> None:
    from benchmark.stages.probe import ProbeConfig
    from benchmark.training.config import validate

    with pytest.raises(ConfigError, match=r"ProbeConfig.num_workers = -2: should be -1 \(default_workers\(\) for this"):
        validate(ProbeConfig(data_root="data", arch="vit-smoke", num_workers=-2))


def test_a_config_with_a_negative_num_workers_is_one_error_line(tmp_path, capsys) -> None:
    import json
    from dataclasses import asdict

    from benchmark.stages.pretrain import PretrainConfig, main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(asdict(PretrainConfig(data_root=str(_jpegs(tmp_path / "images", 8)), arch="vit-smoke",
                                                    img_size=32, steps=1, batch_size=8, num_workers=-3))))
    assert main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {cfg}: PretrainConfig.num_workers = -3: should be -1 (default_workers() for this machine) or at least 0")


def _jpegs(root, count: int):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (20 + i, 28, 3), dtype=np.uint8)).save(root / f"{i:02d}.jpg")
    return root


def test_batches_are_identical_with_0_or_2_workers(tmp_path) -> None:
    images = ImageFiles(_jpegs(tmp_path / "images", 12))
    aug = Augmentation(16, (0.2, 1.0), 0.4, 0.5)
    data = SeededTransform(images, PretrainMethod.train_transform(None, aug), seed=3)  # type: ignore[arg-type]

    def batches(workers: int) -> list[torch.Tensor]:
        sampler = EpochSampler(len(data), seed=3, start=5)
        made = loader.make_loader(data, 4, device=CPU, num_workers=workers, sampler=sampler, drop_last=True)
        return [images for images, _ in itertools.islice(made, 7)]  # past the first epoch

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 7
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))


def test_make_loader_keeps_workers_up_and_batches_ready(tmp_path) -> None:
    made = loader.make_loader(list(range(8)), 2, device=CPU, num_workers=2)
    assert made.persistent_workers and made.prefetch_factor == loader.PREFETCH
    assert made.worker_init_fn is not None and not made.pin_memory
    assert loader.make_loader(list(range(8)), 2, device=CPU, num_workers=0).num_workers == 0
