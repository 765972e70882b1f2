"""The online k-NN monitor of pre-training: the probe's k-NN on the same features, logged at its
steps, and without any effect on what the run trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import benchmark.data.fashion_mnist as fm
from benchmark.errors import ConfigError
from benchmark.models.vit import create_vit
from benchmark.stages.pretrain import PretrainConfig, pretrain
from benchmark.stages.probe import ProbeConfig, knn_probe
from benchmark.training.config import validate
from benchmark.training.monitor import KnnMonitor
from benchmark.utils.io import read_log


@pytest.fixture
def fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_fashion_mnist) -> Path:
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-package")
    return make_fashion_mnist(tmp_path / "fm", train=240, test=60)


def test_the_monitor_scores_what_the_probes_knn_scores_on_the_same_features(fashion, tmp_path) -> None:
    torch.manual_seed(0)
    encoder = create_vit("vit-mini", 32, num_classes=0)
    # bank: half the train labels (the probe's train_fraction 0.5, same seed); queries: all of val
    monitor = KnnMonitor(str(fashion), "fashion-mnist", 32, bank=100, queries=10_000, k=20, seed=0)
    cfg = ProbeConfig(data_root=str(fashion), dataset="fashion-mnist", arch="vit-mini", img_size=32, mode="knn",
                      train_fraction=0.5, k=20, eval_split="val", batch_size=32, seed=0)
    train, val = fm.FashionMNIST(fashion, "train"), fm.FashionMNIST(fashion, "val")
    probed = knn_probe(cfg, encoder, train, val, torch.device("cpu"), tmp_path)
    encoder.train()
    monitored = monitor(encoder)
    assert monitored == {"knn_top1": pytest.approx(probed["top1"], abs=1e-9)}
    assert encoder.training  # the monitor leaves the encoder in the mode it found it in
    assert len(monitor.bank) == 100 and len(monitor.queries) == len(val) == 40


def _config(fashion: Path, **overrides) -> PretrainConfig:
    values = dict(data_root=str(fashion), dataset="fashion-mnist", method="mae",
                  method_args={"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}, arch="vit-mini", img_size=32,
                  steps=5, batch_size=16, blr=1e-3, warmup_steps=1, drop_path=0.0, log_every=1, seed=2, hflip=0.0)
    return PretrainConfig(**{**values, **overrides})


def test_a_monitored_pretraining_logs_the_knn_and_trains_as_an_unmonitored_one(fashion, tmp_path) -> None:
    pretrain(_config(fashion), tmp_path / "plain")
    pretrain(_config(fashion, monitor_every=2, monitor_root=str(fashion), monitor_dataset="fashion-mnist",
                     monitor_bank=50, monitor_queries=40), tmp_path / "monitored")
    plain, monitored = read_log(tmp_path / "plain"), read_log(tmp_path / "monitored")
    scores = [r for r in monitored if "knn_top1" in r]
    assert [r["step"] for r in scores] == [0, 2, 4, 5]  # before the first step, every 2, the last
    assert all(0 <= r["knn_top1"] <= 100 for r in scores)
    losses = [r for r in monitored if "loss" in r]
    assert [r["loss"] for r in losses] == [r["loss"] for r in plain]
    plain_encoder, monitored_encoder = (load_file(tmp_path / d / "encoder.safetensors") for d in ("plain", "monitored"))
    assert plain_encoder.keys() == monitored_encoder.keys()
    assert all(torch.equal(plain_encoder[k], monitored_encoder[k]) for k in plain_encoder)


def test_a_monitor_without_labelled_data_is_refused() -> None:
    with pytest.raises(ConfigError, match="monitor_every = 5 needs monitor_root"):
        validate(_config(Path("/x"), monitor_every=5))


def test_a_monitored_fine_tuning_logs_its_val_top1_and_trains_as_an_unmonitored_one(fashion, tmp_path) -> None:
    """Fine-tuning's monitor (monitor_every, in epochs): the top-1 on val before the first step,
    every epoch and at the end, the last one what the run's own evaluation on val scores; the
    losses and the result are those of the unmonitored run."""
    from benchmark.stages.finetune import FinetuneConfig, finetune

    values = dict(data_root=str(fashion), dataset="fashion-mnist", arch="vit-mini", img_size=32, epochs=3, batch_size=32,
                  blr=1e-3, warmup_epochs=1.0, drop_path=0.0, rand_augment=None, mixup=0.0, cutmix=0.0, log_every=1,
                  eval_crop=1.0, seed=3)
    plain = finetune(FinetuneConfig(**values), tmp_path / "plain")
    monitored = finetune(FinetuneConfig(**values, monitor_every=1), tmp_path / "monitored")
    assert monitored == plain
    log = read_log(tmp_path / "monitored")
    steps_per_epoch = 200 // 32  # 240 train items, 40 of them val
    checks = [r for r in log if "val_top1" in r]
    assert [r["step"] for r in checks] == [0, steps_per_epoch, 2 * steps_per_epoch, 3 * steps_per_epoch]
    assert checks[-1]["val_top1"] == pytest.approx(plain["top1"], abs=1e-9)  # eval_split val: the same images
    assert [r["loss"] for r in log if "loss" in r] == [r["loss"] for r in read_log(tmp_path / "plain")]
