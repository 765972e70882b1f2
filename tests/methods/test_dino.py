"""DINO: centre, temperature and momentum schedules, the EMA teacher, the frozen last layer,
multi-crop, the loss's pairs, and that pre-training learns and exports the teacher."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from benchmark.data.augment import Augmentation
from benchmark.methods import build_method
from benchmark.methods.dino import DINO, default_local_size
from benchmark.methods.ema import cosine_momentum
from benchmark.methods.losses import dino_loss, teacher_probs
from benchmark.methods.views import REFERENCE_BLUR_SIGMA, MultiCrop, blur_sigma_for
from benchmark.models.vit import create_vit
from benchmark.training.optim import build_optimizer
from benchmark.utils.io import read_log

SMALL = dict(out_dim=32, head_hidden=64, head_bottleneck=16, local_crops=2)


def small_dino(**kwargs) -> DINO:
    torch.manual_seed(0)
    return build_method("dino", create_vit("vit-smoke", 64, drop_path_rate=0.1), **{**SMALL, **kwargs})


def crops(b: int = 4, local: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    global_crops = [torch.randn(b, 3, 64, 64, generator=g) for _ in range(2)]
    return global_crops + [torch.randn(b, 3, 32, 32, generator=g) for _ in range(local)]


def test_center_moves_by_its_momentum() -> None:
    method = small_dino(out_dim=4, center_momentum=0.9)
    method.center.copy_(torch.tensor([[1.0, 0.0, -2.0, 0.0]]))
    outputs = torch.tensor([[0.0, 4.0, 2.0, 0.0], [0.0, 0.0, 2.0, 1.0]])  # mean (0, 2, 2, 0.5)
    method.update_center(outputs)
    assert torch.allclose(method.center, torch.tensor([[0.9, 0.2, -1.6, 0.05]]), atol=1e-6)


def test_center_follows_teacher_outputs_of_a_training_step() -> None:
    method = small_dino(center_momentum=0.8)
    method.center.fill_(0.5)
    batch = crops()
    with torch.no_grad():  # the teacher's raw outputs on the two global crops
        expected_mean = method.teacher_head(method.teacher_backbone(torch.cat(batch[:2]))).mean(0, keepdim=True)
    method.train()
    method(batch)["loss"].backward()
    assert torch.equal(method.center, torch.full_like(method.center, 0.5))  # not before the step ends
    method.after_step(0, 10)
    assert torch.allclose(method.center, 0.8 * 0.5 + 0.2 * expected_mean, atol=1e-6)
    assert "center" in method.state_dict()


def test_teacher_temperature_warm_up() -> None:
    """DINO's np.linspace(0.04, 0.07, 10): the final temperature at step 9 (golden values from
    DINO's code in test_parity.py)."""
    method = small_dino(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_steps=10)
    assert method.teacher_temp_at(0) == pytest.approx(0.04)
    assert method.teacher_temp_at(3) == pytest.approx(0.05)
    assert method.teacher_temp_at(9) == pytest.approx(0.07)
    assert method.teacher_temp_at(1000) == pytest.approx(0.07)
    # forward uses the step count kept by after_step (a buffer, so a resumed run continues it)
    method.after_step(2, 100)
    assert int(method.steps_done) == 3
    assert method(crops())["teacher_temp"].item() == pytest.approx(0.05)


def test_momentum_schedule() -> None:
    assert cosine_momentum(0.996, 0, 100) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 50, 100) == pytest.approx(0.998)
    assert cosine_momentum(0.996, 100, 100) == pytest.approx(1.0)
    assert cosine_momentum(0.996, 25, 100) == pytest.approx(1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2)


def test_teacher_is_an_ema_of_the_student_and_gets_no_gradient() -> None:
    method = small_dino(momentum_teacher=0.9)
    teacher = {**{f"b.{k}": v for k, v in method.teacher_backbone.named_parameters()},
               **{f"h.{k}": v for k, v in method.teacher_head.named_parameters()}}
    student = {**{f"b.{k}": v for k, v in method.student_backbone.named_parameters()},
               **{f"h.{k}": v for k, v in method.student_head.named_parameters()}}
    assert teacher.keys() == student.keys()
    assert all(torch.equal(teacher[k], student[k]) for k in teacher)  # initialised from the student
    assert not any(p.requires_grad for p in teacher.values())
    # The teacher has no stochastic depth even though the student has.
    assert method.student_backbone.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert method.teacher_backbone.blocks[-1].drop_path1.drop_prob == 0.0

    optimizer = build_optimizer(method, lr=1e-2, weight_decay=0.05)  # the engine's optimiser
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in teacher.values()}
    assert {id(p) for p in method.student_backbone.parameters()} <= optimised

    method.train()
    method(crops())["loss"].backward()
    assert all(p.grad is None for p in teacher.values())
    old = {k: v.clone() for k, v in teacher.items()}
    optimizer.step()
    method.after_step(0, 100)  # momentum at step 0 is the base, 0.9
    moved = 0
    for k in teacher:
        assert torch.allclose(teacher[k], 0.9 * old[k] + 0.1 * student[k], atol=1e-6), k
        moved += not torch.equal(teacher[k], old[k])
    assert moved > 10


def test_last_layer_is_frozen_then_trained() -> None:
    method = small_dino(freeze_last_layer_steps=2)
    method.train()
    last = method.student_head.last_layer.parametrizations.weight.original1  # direction v
    assert not method.student_head.last_layer.parametrizations.weight.original0.requires_grad  # |w| fixed to 1
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    for step, frozen in [(0, True), (1, True), (2, False)]:
        before = last.detach().clone()
        method(crops(seed=step))["loss"].backward()
        assert last.grad is not None and last.grad.abs().sum() > 0  # backward reaches it
        method.before_optimizer_step(step, 10)
        if frozen:
            assert last.grad is None or last.grad.abs().sum() == 0
        else:
            assert last.grad.abs().sum() > 0
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert torch.equal(last, before) == frozen
        # the magnitude stays 1: every row of the effective weight has unit norm
        assert torch.allclose(method.student_head.last_layer.weight.norm(dim=1), torch.ones(32), atol=1e-5)


def test_multi_crop_sizes_and_seeding() -> None:
    assert default_local_size(224, 16) == 96
    assert default_local_size(64, 16) == 32
    method = small_dino(local_crops=3)
    transform = method.train_transform(Augmentation(64))
    assert isinstance(transform, MultiCrop)
    img = Image.fromarray((torch.rand(80, 96, 3) * 255).byte().numpy())
    torch.manual_seed(1)
    views = transform(img)
    assert [tuple(v.shape) for v in views] == [(3, 64, 64)] * 2 + [(3, 32, 32)] * 3
    assert not torch.equal(views[0], views[1])
    torch.manual_seed(1)
    assert all(torch.equal(a, b) for a, b in zip(views, transform(img)))  # torch-seeded randomness
    assert len(small_dino(local_crops=0).train_transform(Augmentation(64))(img)) == 2


def test_blur_scaled_to_a_small_image_keeps_its_edges() -> None:
    """DINO's blur range is in pixels of a 224 px view: on a 32 px image its top (2 px) wipes out
    1 px detail that the same blur relative to the object (``blur_sigma_for(32)``) keeps."""
    assert blur_sigma_for(224) == REFERENCE_BLUR_SIGMA
    assert blur_sigma_for(32) == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))
    stripes = torch.zeros(32, 32, 3, dtype=torch.uint8)
    stripes[:, ::4] = 255
    img = Image.fromarray(stripes.numpy())

    def contrast(sigma: float) -> float:  # the first global view: always blurred (p=1.0)
        method = small_dino(local_crops=0, global_scale=(1.0, 1.0), blur_sigma=(sigma, sigma))
        return float(method.train_transform(Augmentation(32, color_jitter=0.0, hflip=0.0))(img)[0].std())

    sharp = contrast(1e-3)
    assert contrast(blur_sigma_for(32)[1]) > 0.8 * sharp
    assert contrast(REFERENCE_BLUR_SIGMA[1]) < 0.2 * sharp


def test_loss_skips_same_view_pairs() -> None:
    # 3 views (2 global, 1 local), batch 1, K = 2, student temperature 1.
    student = torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [0.0, math.log(3)]])  # p = (1/2,1/2), (3/4,1/4), (1/4,3/4)
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # teacher views 0 and 1
    loss, terms = dino_loss(student, probs, num_views=3, student_temp=1.0)
    assert terms == 4  # (0,1) (0,2) (1,0) (1,2): never (0,0) nor (1,1)
    expected = (-math.log(3 / 4) - math.log(1 / 4) + math.log(2) - math.log(3 / 4)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    with_same = (4 * expected + math.log(2) - math.log(1 / 4)) / 6
    assert abs(loss.item() - with_same) > 0.05
    # 2 global + 8 local crops: 2 * 9 pairs
    _, terms = dino_loss(torch.randn(10 * 3, 5), torch.softmax(torch.randn(2 * 3, 5), -1), num_views=10, student_temp=0.1)
    assert terms == 18


def test_teacher_probs_are_centred_and_sharpened() -> None:
    out = torch.tensor([[1.0, 2.0, 3.0]])
    center = torch.tensor([[0.0, 1.0, 2.0]])
    assert torch.allclose(teacher_probs(out, center, 0.5), torch.softmax(torch.tensor([[2.0, 2.0, 2.0]]), -1))
    assert torch.allclose(teacher_probs(out, torch.zeros(1, 3), 0.5), torch.softmax(out / 0.5, -1))


def test_forward_backward_reaches_encoder_and_handles_local_crops() -> None:
    torch.manual_seed(0)
    plain = create_vit("vit-smoke", 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = plain(x)
    method = build_method("dino", plain, **SMALL)
    with torch.no_grad():  # switching to dynamic image size changes nothing at 64 px
        assert torch.allclose(method.student_backbone(x), reference, atol=1e-5)
    method.train()
    out = method(crops())
    assert set(out) >= {"loss", "kl", "teacher_entropy"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert method.student_backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert method.student_backbone.pos_embed.grad.abs().sum() > 0
    assert method.student_head.mlp[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in method.teacher_backbone.parameters())


def test_export_roles() -> None:
    teacher_first = small_dino()
    assert teacher_first.encoder is teacher_first.teacher_backbone
    assert not any(p.requires_grad for p in teacher_first.encoder.parameters())
    assert "student_encoder.pos_embed" in teacher_first.no_weight_decay()
    student_first = small_dino(export="student")
    assert student_first.encoder is student_first.student_backbone
    assert all(p.requires_grad for p in student_first.encoder.parameters())
    with pytest.raises(ValueError):
        small_dino(export="both")


# The shared smoke pre-training (tests/methods/conftest.py) passes the contract test
# (test_contract.py): its loss falls, its export is its encoder and loads strictly, it resumes.


def test_pretraining_learns(pretrained) -> None:
    _, out, _ = pretrained("dino")
    records = read_log(out)

    def drop(key: str) -> tuple[float, float]:
        values = [r[key] for r in records]
        return sum(values[:10]) / 10, sum(values[-10:]) / 10

    # The student learns to match the teacher across views: KL(teacher || student) falls ...
    first, last = drop("kl")
    assert last < first - 0.15, f"KL went from {first:.3f} to {last:.3f}"
    # ... without collapse: the teacher's outputs neither become one-hot nor uniform (log 256 = 5.5).
    _, entropy = drop("teacher_entropy")
    assert 0.5 < entropy < math.log(256) - 1.0, entropy


def test_export_is_the_teacher(pretrained) -> None:
    cfg, out, encoder_path = pretrained("dino")
    state = load_file(str(encoder_path))
    assert not any(k.startswith(("student", "teacher", "head", "center")) for k in state)
    model = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    teacher = {k[len("encoder."):]: v for k, v in model.items() if k.startswith("encoder.")}
    student = {k[len("student_encoder."):]: v for k, v in model.items() if k.startswith("student_encoder.")}
    assert teacher.keys() == state.keys() == student.keys()
    assert all(torch.equal(teacher[k], state[k]) for k in state)
    assert not all(torch.equal(student[k], state[k]) for k in state)  # the EMA lags the student
    assert int(model["steps_done"]) == 40


def test_weight_decay_follows_dinos_cosine(pretrained) -> None:
    cfg, out, _ = pretrained("dino")
    method = small_dino(weight_decay_end=0.4)
    assert method.weight_decay_at(0, 100, 0.04) == pytest.approx(0.04)
    assert method.weight_decay_at(50, 100, 0.04) == pytest.approx(0.22)
    assert method.weight_decay_at(100, 100, 0.04) == pytest.approx(0.4)
    assert small_dino(weight_decay_end=None).weight_decay_at(50, 100, 0.04) == 0.04
    # The engine applied it: the decayed groups end at the last step's value, the others at 0.
    groups = torch.load(out / "checkpoint.pth", weights_only=True)["optimizer"]["param_groups"]
    last = method.weight_decay_at(cfg.steps - 1, cfg.steps, cfg.weight_decay)
    assert sorted({g["weight_decay"] for g in groups}) == [0.0, pytest.approx(last)]
    assert last > 5 * cfg.weight_decay


def test_gradients_are_clipped_per_parameter() -> None:
    method = small_dino()
    params = [p for p in method.parameters() if p.requires_grad][:3]
    for scale, param in zip((10.0, 0.01, 5.0), params):
        param.grad = torch.full_like(param, scale)
    before = [p.grad.norm().item() for p in params]
    method.clip_gradients(1.0)
    after = [p.grad.norm().item() for p in params]
    for b, a in zip(before, after):
        assert a == pytest.approx(min(b, 1.0), rel=1e-4)  # each on its own: the small one untouched
