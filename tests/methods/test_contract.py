"""The contract every registered method keeps, checked for each of them (as timm checks every
model of its registry): a step's loss is finite and its gradient reaches the encoder that trains;
a short pre-training on the synthetic images lowers the loss; the export is the checkpoint's
encoder and loads strictly into timm's ViT; a run stopped after its first checkpoint and resumed
ends with the same weights, bit for bit, as one that was never stopped, with the per-image loader
and with the images held on the device (``images_on_device``)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from benchmark.methods import METHODS, build_method
from benchmark.methods.base import synthetic_batch
from benchmark.models.vit import create_vit
from benchmark.stages.pretrain import PretrainConfig, pretrain
from benchmark.utils.io import read_log


def test_every_registered_method_has_a_contract_run(contract_runs) -> None:
    assert set(contract_runs) == set(METHODS)


@pytest.mark.parametrize("method", list(METHODS))
def test_forward_is_finite_and_backward_reaches_the_trained_encoder(method: str, contract_runs) -> None:
    torch.manual_seed(0)
    args = dict(contract_runs[method][0])
    if METHODS[method].needs_labels:
        args["num_classes"] = 6
    model = build_method(method, create_vit("vit-smoke", 64, drop_path_rate=0.1), **args)
    model.prepare([torch.randn(8, 3, 64, 64)])
    model.train()
    losses = model(synthetic_batch(model, 64, 4), torch.Generator().manual_seed(0))
    assert losses["loss"].dim() == 0 and math.isfinite(float(losses["loss"].detach()))
    losses["loss"].backward()
    trained = getattr(model, "student_backbone", model.encoder)  # DINO exports its teacher, trains its student
    grad = trained.patch_embed.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("method", list(METHODS))
def test_pretraining_lowers_the_loss(method: str, pretrained, contract_runs) -> None:
    cfg, out, _ = pretrained(method)
    losses = [r["loss"] for r in read_log(out)]
    assert len(losses) == cfg.steps and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    required = contract_runs[method][2]
    assert last < first - required, f"{method}: loss went from {first:.3f} to {last:.3f}"


@pytest.mark.parametrize("method", list(METHODS))
def test_export_is_the_checkpoints_encoder_and_loads_strictly(method: str, pretrained) -> None:
    cfg, out, encoder_path = pretrained(method)
    state = load_file(str(encoder_path))
    create_vit(cfg.arch, cfg.img_size, num_classes=0).load_state_dict(state, strict=True)
    model = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    encoder = {k[len("encoder."):]: v for k, v in model.items() if k.startswith("encoder.")}
    assert encoder.keys() == state.keys() and all(torch.equal(encoder[k], state[k]) for k in state)


@pytest.mark.parametrize("images_on_device", [False, True], ids=["loader", "images-on-device"])
@pytest.mark.parametrize("method", list(METHODS))
def test_a_resumed_run_ends_as_the_uninterrupted_one(method: str, images_on_device: bool, synthetic_root, tmp_path,
                                                     contract_runs, pretrain_to_first_checkpoint) -> None:
    # drop_path > 0: the run depends on the global RNG stream, which the resumed run must continue.
    cfg = PretrainConfig(data_root=str(synthetic_root / "classification" / "train"), method=method,
                         method_args=dict(contract_runs[method][0]), arch="vit-smoke", img_size=64, steps=6,
                         batch_size=8, blr=1e-3, warmup_steps=2, drop_path=0.1, crop_scale_min=0.5,
                         checkpoint_every=2, log_every=1, seed=3, images_on_device=images_on_device)
    whole = load_file(str(pretrain(cfg, tmp_path / "whole")))
    pretrain_to_first_checkpoint(cfg, tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "checkpoint.pth", weights_only=True)["step"] == 2
    resumed = load_file(str(pretrain(replace(cfg), tmp_path / "resumed")))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert [r["loss"] for r in read_log(tmp_path / "resumed")] == [r["loss"] for r in read_log(tmp_path / "whole")]
