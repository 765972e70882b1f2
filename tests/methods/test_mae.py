"""MAE: the random masking, the unshuffling, the masked-patch loss, and that pre-training learns
and exports."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file

from benchmark.methods import build_method
from benchmark.methods.base import gather_tokens
from benchmark.methods.losses import masked_mse
from benchmark.methods.mae import sincos_pos_embed_2d
from benchmark.methods.masking import random_mask
from benchmark.models.vit import create_vit

SMALL_DECODER = {"decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 4}


def small_mae(**kwargs):
    torch.manual_seed(0)
    return build_method("mae", create_vit("vit-smoke", 64), **{**SMALL_DECODER, **kwargs})


@pytest.mark.parametrize("num_patches,ratio,keep", [(196, 0.75, 49), (16, 0.75, 4), (196, 0.4, 117)])
def test_random_mask_keeps_exactly_the_unmasked_fraction(num_patches: int, ratio: float, keep: int) -> None:
    m = random_mask(32, num_patches, ratio, torch.Generator().manual_seed(0))
    assert m.num_visible == keep and m.visible.shape == (32, keep)
    assert torch.equal(m.mask.sum(1), torch.full((32,), num_patches - keep))
    for row, mask_row in zip(m.visible.tolist(), m.mask):
        assert len(set(row)) == keep  # no patch kept twice
        assert set(row) == set(torch.nonzero(~mask_row).flatten().tolist())  # visible = not masked
    assert len({tuple(sorted(r)) for r in m.visible.tolist()}) > 16  # the samples' sets differ


def test_random_mask_repeats_with_seed_and_rejects_degenerate_ratios() -> None:
    a = random_mask(4, 196, 0.75, torch.Generator().manual_seed(5))
    b = random_mask(4, 196, 0.75, torch.Generator().manual_seed(5))
    c = random_mask(4, 196, 0.75, torch.Generator().manual_seed(6))
    assert torch.equal(a.order, b.order) and not torch.equal(a.order, c.order)
    for bad in (0.0, 0.999, 1.0):
        with pytest.raises(ValueError, match="at least one"):
            random_mask(1, 16, bad, torch.Generator())


def test_unshuffle_restores_patch_order_with_mask_tokens_at_masked_patches() -> None:
    method = small_mae()
    b, n, d = 3, method.num_patches, SMALL_DECODER["decoder_dim"]
    m = random_mask(b, n, 0.75, torch.Generator().manual_seed(1))
    # Toy tokens whose value names their sample and patch.
    x = (torch.arange(n).view(1, n, 1) + 100 * torch.arange(b).view(b, 1, 1)).float().expand(b, n, d)
    assert torch.equal(gather_tokens(gather_tokens(x, m.order), m.restore), x)  # restore inverts order
    out = method.restore_sequence(gather_tokens(x, m.visible), m)
    assert out.shape == (b, n, d)
    assert torch.equal(out[~m.mask], x[~m.mask])  # visible tokens back at their own patch
    assert torch.equal(out[m.mask], method.mask_token.detach().view(1, d).expand(int(m.mask.sum()), d))


def test_masked_mse_ignores_visible_patches() -> None:
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 2, 16, 12, generator=gen)
    mask = torch.rand(2, 16, generator=gen) < 0.5
    base = masked_mse(pred, target, mask)
    expected = ((pred - target) ** 2).mean(-1)[mask].mean()
    assert base.item() == pytest.approx(expected.item(), rel=1e-6)
    changed = target.clone()
    changed[~mask] += 5.0
    assert masked_mse(pred, changed, mask).item() == pytest.approx(base.item(), rel=1e-6)
    changed = target.clone()
    changed[mask] += 5.0
    assert masked_mse(pred, changed, mask).item() > base.item() + 1.0


def test_loss_touches_masked_patches_only() -> None:
    """End to end: the loss depends on the targets of the masked patches only, and its gradient
    reaches the predictions of the masked patches only. (The pixels of a visible patch do change
    the loss through the encoder's input; what must not count is their reconstruction.)"""
    method = small_mae()
    images = torch.randn(4, 3, 64, 64)
    mask = random_mask(4, method.num_patches, 0.75, torch.Generator().manual_seed(3)).mask
    clean = method.pixel_targets(images)

    def loss_with(targets: torch.Tensor) -> float:
        method.pixel_targets = lambda _images: targets  # instance attribute shadows the method
        try:
            return method(images, torch.Generator().manual_seed(3))["loss"].item()
        finally:
            del method.pixel_targets

    base = loss_with(clean)
    visible_changed = clean.clone()
    visible_changed[~mask] = torch.randn_like(visible_changed[~mask])
    assert loss_with(visible_changed) == pytest.approx(base, rel=1e-6)
    masked_changed = clean.clone()
    masked_changed[mask] += 1.0
    assert abs(loss_with(masked_changed) - base) > 0.1

    grads = {}

    def keep_grad(_module, _inputs, out):
        out.register_hook(lambda g: grads.setdefault("pred", g))

    handle = method.decoder_pred.register_forward_hook(keep_grad)
    try:
        method(images, torch.Generator().manual_seed(3))["loss"].backward()
    finally:
        handle.remove()
    per_patch = grads["pred"].abs().sum(-1)
    assert torch.all(per_patch[~mask] == 0) and torch.all(per_patch[mask] > 0)


def test_norm_pix_targets_are_standardised_per_patch() -> None:
    method = small_mae()
    images = 3.0 * torch.rand(2, 3, 64, 64) + 5.0  # far from zero mean / unit variance
    target = method.pixel_targets(images)
    assert target.shape == (2, method.num_patches, 3 * 16 * 16)
    assert torch.allclose(target.mean(-1), torch.zeros(2, method.num_patches), atol=1e-4)
    assert torch.allclose(target.var(-1), torch.ones(2, method.num_patches), atol=1e-3)
    raw = small_mae(norm_pix_loss=False).pixel_targets(images)
    assert raw.mean().item() == pytest.approx(images.mean().item(), rel=1e-5)


def test_decoder_position_embedding_is_fixed_sincos() -> None:
    pos = sincos_pos_embed_2d(8, 2, 3)
    assert pos.shape == (6, 8)
    # MAE's layout (its meshgrid puts w first): the first half encodes the column, the second the row.
    assert torch.equal(pos[0, 4:], pos[1, 4:]) and not torch.equal(pos[0, :4], pos[1, :4])  # same row
    assert torch.equal(pos[0, :4], pos[3, :4]) and not torch.equal(pos[0, 4:], pos[3, 4:])  # same column
    method = small_mae()
    assert "decoder_pos_embed" not in method.state_dict()
    assert not any(name == "decoder_pos_embed" for name, _ in method.named_parameters())


def test_forward_backward_reaches_encoder_and_decoder() -> None:
    method = small_mae()
    out = method(torch.randn(4, 3, 64, 64), torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "visible_mse"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    for param in [method.encoder.blocks[0].attn.qkv.weight, method.encoder.pos_embed, method.decoder[0].attn.qkv.weight,
                  method.decoder_pred.weight, method.mask_token]:
        assert param.grad is not None and param.grad.abs().sum() > 0
    # Every trainable parameter takes part (DDP runs without find_unused_parameters).
    assert not [name for name, p in method.named_parameters() if p.requires_grad and p.grad is None]


def test_default_decoder_is_maes_and_beit_encoders_are_refused() -> None:
    method = build_method("mae", create_vit("vit-smoke", 64))
    assert (method.decoder_embed.out_features, len(method.decoder), method.decoder[0].attn.num_heads) == (512, 8, 16)
    assert method.mask_ratio == 0.75 and method.norm_pix_loss
    beit = timm.create_model("beit_base_patch16_224", pretrained=False, img_size=64, num_classes=0, embed_dim=64, depth=1,
                             num_heads=2)
    with pytest.raises(TypeError, match="VisionTransformer"):
        build_method("mae", beit)


# The shared smoke pre-training (tests/methods/conftest.py) passes the contract test
# (test_contract.py): its loss falls, its export is its encoder and loads strictly, it resumes.


def test_export_holds_no_decoder_or_mask_token(pretrained) -> None:
    _, _, encoder_path = pretrained("mae")
    assert not any(k.startswith(("decoder", "mask_token")) for k in load_file(str(encoder_path)))
