"""Compute estimates (benchmark.driver.compute, benchmark.stages.cost): FLOP counts on the meta device
(benchmark.models.flops) and their scaling."""

from __future__ import annotations

import time

import pytest

from benchmark.driver.compute import estimate
from benchmark.methods.flops import pretrain_flops_per_image
from benchmark.models.flops import vit_flops
from benchmark.stages.cost import DATASET_SIZES, REFERENCE_MFU, REFERENCE_PEAK_FLOPS


def test_vit_s16_forward_matches_deit() -> None:
    # DeiT-S / timm vit_small_patch16_224: 4.6 GMACs at 224 = 9.2e9 FLOPs (a multiply-add is 2).
    assert vit_flops("vit-s16", 224, train=False) == pytest.approx(9.2e9, rel=0.05)


def test_vit_b16_count_is_fast_and_backward_is_twice_forward() -> None:
    vit_flops.cache_clear()
    started = time.perf_counter()
    train = vit_flops("vit-b16", 224, train=True)
    elapsed = time.perf_counter() - started
    forward = vit_flops("vit-b16", 224, train=False)
    assert forward == pytest.approx(2 * 17.6e9, rel=0.05)  # ViT-B/16: 17.6 GMACs
    assert train == pytest.approx(3 * forward, rel=0.02)
    assert elapsed < 5.0  # well under a second on an idle core; slack for a shared CI box


def test_mae_step_is_cheaper_than_beit() -> None:
    # ViT-B with MAE's own decoder (8 x 512): the encoder on 25% of the tokens dominates the saving.
    # (On ViT-S that decoder costs more than the encoder, and MAE's step is dearer than BEiT's.)
    mae = pretrain_flops_per_image("mae", "vit-b16", 224)
    beit = pretrain_flops_per_image("beit", "vit-b16", 224, {"vocab_size": 8192})
    splitmask = pretrain_flops_per_image("splitmask", "vit-b16", 224, {"vocab_size": 8192})
    assert mae < 0.7 * beit
    assert splitmask > beit  # two half-sequences (= one full) plus a decoder on both
    small_decoder = pretrain_flops_per_image("mae", "vit-s16", 224, {"decoder_dim": 256, "decoder_depth": 4,
                                                                     "decoder_heads": 8})
    assert small_decoder < 0.7 * pretrain_flops_per_image("beit", "vit-s16", 224, {"vocab_size": 8192})


PRETRAIN = {"data_root": "/data/imagenet/train", "method": "mae", "arch": "vit-smoke", "img_size": 64,
            "batch_size": 64}


def test_doubling_steps_doubles_the_estimate() -> None:
    one = estimate("pretrain", {**PRETRAIN, "steps": 100})
    two = estimate("pretrain", {**PRETRAIN, "steps": 200})
    assert one.known and one.steps == 100
    assert two.flops == pytest.approx(2 * one.flops)
    assert two.gpu_hours == pytest.approx(2 * one.gpu_hours)
    assert one.gpu_hours == pytest.approx(one.flops / (REFERENCE_PEAK_FLOPS * REFERENCE_MFU) / 3600)
    assert "312 TFLOP/s at 40% MFU" in one.summary()


def test_epochs_and_steps_with_the_same_iterations_agree() -> None:
    # 3 epochs of 10% of 12,800 images at batch 64 = 60 iterations.
    by_epochs = estimate("pretrain", {**PRETRAIN, "epochs": 3.0, "fraction": 0.1}, {"train": 12_800})
    by_steps = estimate("pretrain", {**PRETRAIN, "steps": 60})
    assert by_epochs.steps == 60
    assert by_epochs.flops == pytest.approx(by_steps.flops)


def test_unknown_sizes_are_reported_not_guessed() -> None:
    est = estimate("pretrain", {**PRETRAIN, "epochs": 3.0})
    assert not est.known and est.gpu_hours is None
    assert est.summary().startswith("unknown")
    assert not estimate("finetune", {"data_root": "/x", "arch": "vit-smoke", "img_size": 64}).known


def test_finetune_and_probe_scale_with_the_data_set() -> None:
    cfg = {"data_root": "/x", "dataset": "stanford-cars", "arch": "vit-smoke", "img_size": 64, "epochs": 2,
           "batch_size": 16}
    ft = estimate("finetune", cfg)
    sizes = DATASET_SIZES["stanford-cars"]
    assert ft.steps == 2 * (sizes["train"] // 16)
    assert ft.eval_flops == pytest.approx(sizes["val"] * vit_flops("vit-smoke", 64, False, 1000))
    # the monitor: before the first step, after epoch 2 (every 2), and at the end (epoch 3)
    monitored = estimate("finetune", {**cfg, "epochs": 3, "monitor_every": 2})
    assert monitored.eval_flops == pytest.approx(4 * sizes["val"] * vit_flops("vit-smoke", 64, False, 1000))
    probe_cfg = {"data_root": "/x", "arch": "vit-smoke", "img_size": 64, "mode": "knn"}
    knn = estimate("probe", probe_cfg, {"train": 1000, "val": 100})
    assert knn.flops == pytest.approx(1100 * vit_flops("vit-smoke", 64, False))


def test_smoke_plan_is_estimated_with_refs_unresolved() -> None:
    from benchmark.experiments.registry import plan_runs

    for run in plan_runs("smoke", "smoke"):
        est = estimate(run.kind, run.config, {"train": 320, "val": 64})
        assert est.known, (run.name, est.notes)
        assert est.flops >= 0


@pytest.mark.parametrize("scale", ["mini", "mini-gpu"])
def test_the_dry_run_prices_every_run_of_the_miniature(scale: str) -> None:
    """A select run reads results only; the runs on the scenes take their counts from the data run
    that writes them, and a dense run trained on the first N scenes is priced for those N."""
    from benchmark.driver.compute import estimate_run
    from benchmark.experiments.registry import plan_runs

    runs = plan_runs("mini-all", scale)
    plan = {run.name: run for run in runs}
    estimates = {run.name: estimate_run(run, plan) for run in runs if run.kind != "data"}
    assert [name for name, est in estimates.items() if not est.known] == []
    assert {estimates[r.name].flops for r in runs if r.kind == "select"} == {0.0}
    scenes = plan["scenes-fashion-mnist"].config
    detect = [r for r in runs if r.kind == "detect" and r.tags["method"] != "random-init"][0]
    options = detect.config["cfg_options"]
    assert options["train_dataloader.dataset.indices"] < scenes["train_scenes"]
    assert estimates[detect.name].train_images == options["train_cfg.max_epochs"] * options["train_dataloader.dataset.indices"]
    assert not estimate_run(detect).known  # without the plan the scenes' counts are unknown, not guessed
