"""BYOL: the loss, the EMA target, the two views, and that pre-training learns and exports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from benchmark.data.augment import Augmentation
from benchmark.methods import build_method
from benchmark.methods.byol import BYOL
from benchmark.methods.ema import cosine_momentum, make_ema_copy
from benchmark.methods.losses import byol_loss, regression_loss
from benchmark.methods.views import GaussianBlur, TwoViews
from benchmark.models.vit import create_vit
from benchmark.training.optim import build_optimizer
from benchmark.utils.io import read_log

SMALL = dict(proj_dim=16, proj_hidden=32, pred_hidden=32)


def small_byol(**kwargs) -> BYOL:
    torch.manual_seed(0)
    return build_method("byol", create_vit("vit-smoke", 64, drop_path_rate=0.1), **{**SMALL, **kwargs})


def views(b: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 64, 64, generator=g) for _ in range(2)]


def test_loss_matches_hand_computation() -> None:
    a = torch.tensor([[1.0, 2.0, 2.0], [0.0, -3.0, 4.0]])
    assert byol_loss(a, a, a * 5, a * 0.1).item() == pytest.approx(0.0, abs=1e-6)  # same directions
    assert byol_loss(a, a, -a, -a).item() == pytest.approx(8.0, abs=1e-6)  # opposite: 4 + 4
    # 60 degrees apart: 2 - 2 * 0.5 = 1 for each direction
    p = torch.tensor([[1.0, 0.0]])
    z = torch.tensor([[0.5, math.sqrt(3) / 2]])
    assert regression_loss(p, z).item() == pytest.approx(1.0, abs=1e-6)
    # the directions pair prediction 1 with target 2 and prediction 2 with target 1
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert byol_loss(e1, e2, e1, e2).item() == pytest.approx(4.0, abs=1e-6)  # both orthogonal
    assert byol_loss(e1, e2, e2, e1).item() == pytest.approx(0.0, abs=1e-6)  # both matched
    # batch mean: one matched row (0) and one opposite row (4) -> 2 per direction
    rows = regression_loss(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[2.0, 0.0], [-1.0, 0.0]]))
    assert rows.item() == pytest.approx(2.0)


def test_target_gets_no_gradient_and_is_not_optimised() -> None:
    method = small_byol()
    target = list(method.target_encoder.parameters()) + list(method.target_projector.parameters())
    assert not any(p.requires_grad for p in target)
    optimizer = build_optimizer(method, lr=1e-3, weight_decay=0.05)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in target}
    method.train()
    out = method(views())
    out["loss"].backward()
    assert all(p.grad is None for p in target)
    assert method.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert method.projector[0].weight.grad.abs().sum() > 0
    assert method.predictor[0].weight.grad.abs().sum() > 0
    assert method.target_encoder.blocks[-1].drop_path1.drop_prob == 0.0  # deterministic target
    assert method.encoder.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


def test_ema_update_numbers() -> None:
    method = small_byol(momentum=0.99)
    online = {**{f"e.{k}": v for k, v in method.encoder.named_parameters()},
              **{f"p.{k}": v for k, v in method.projector.named_parameters()}}
    target = {**{f"e.{k}": v for k, v in method.target_encoder.named_parameters()},
              **{f"p.{k}": v for k, v in method.target_projector.named_parameters()}}
    assert online.keys() == target.keys() and all(torch.equal(online[k], target[k]) for k in online)
    method.train()
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    method(views())["loss"].backward()
    optimizer.step()
    old = {k: v.clone() for k, v in target.items()}
    step, total = 30, 100
    m = cosine_momentum(0.99, step, total)
    assert m == pytest.approx(1 - 0.01 * (math.cos(0.3 * math.pi) + 1) / 2)
    method.after_step(step, total)
    for k in target:
        assert torch.allclose(target[k], m * old[k] + (1 - m) * online[k], atol=1e-6), k
    assert sum(not torch.equal(target[k], old[k]) for k in target) > 10
    assert not hasattr(method, "target_predictor")


def test_two_views_transform() -> None:
    method = small_byol()
    transform = method.train_transform(Augmentation(64, crop_scale=(0.2, 1.0)))
    assert isinstance(transform, TwoViews)
    img = Image.fromarray((torch.rand(70, 90, 3) * 255).byte().numpy())
    torch.manual_seed(3)
    v1, v2 = transform(img)
    assert v1.shape == v2.shape == (3, 64, 64) and not torch.equal(v1, v2)
    torch.manual_seed(3)
    w1, w2 = transform(img)
    assert torch.equal(v1, w1) and torch.equal(v2, w2)


def test_gaussian_blur_smooths_with_its_probability() -> None:
    noise = Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy())

    def roughness(image: Image.Image) -> float:  # mean absolute difference between neighbours
        x = torch.tensor(np.asarray(image), dtype=torch.float32)
        return float((x[1:] - x[:-1]).abs().mean())

    torch.manual_seed(0)
    blurred = [GaussianBlur(p=1.0)(noise) for _ in range(20)]
    assert all(roughness(b) <= roughness(noise) for b in blurred)
    assert sum(roughness(b) < 0.5 * roughness(noise) for b in blurred) >= 10  # sigma > ~0.6 blurs hard
    assert len({roughness(b) for b in blurred}) > 10  # a new sigma each time
    assert GaussianBlur(p=0.0)(noise) is noise
    torch.manual_seed(0)
    kept = sum(GaussianBlur(p=0.3)(noise) is noise for _ in range(400))
    assert 240 < kept < 320  # about 70% untouched


def test_ema_copy_is_independent() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
    copy = make_ema_copy(module)
    assert copy[1].p == 0.0 and module[1].p == 0.5
    with torch.no_grad():
        module[0].weight.add_(1.0)
    assert not torch.equal(copy[0].weight, module[0].weight)


# The shared smoke pre-training (tests/methods/conftest.py) passes the contract test
# (test_contract.py): its loss falls, its export is its encoder and loads strictly, it resumes.


def test_loss_stays_within_its_range(pretrained) -> None:
    """2 - 2 cos for each of the two predictions: between 0 and 8."""
    _, out, _ = pretrained("byol")
    assert all(0 <= r["loss"] <= 8 for r in read_log(out))


def test_export_is_the_online_encoder(pretrained) -> None:
    cfg, out, encoder_path = pretrained("byol")
    state = load_file(str(encoder_path))
    model = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    online = {k[len("encoder."):]: v for k, v in model.items() if k.startswith("encoder.")}
    target = {k[len("target_encoder."):]: v for k, v in model.items() if k.startswith("target_encoder.")}
    assert online.keys() == state.keys() == target.keys()
    assert all(torch.equal(online[k], state[k]) for k in state)
    assert not all(torch.equal(target[k], state[k]) for k in state)
