"""BEiT: blockwise masking, mask tokens before the position embedding, the masked-patch loss, and
that pre-training learns and exports, with timm's VisionTransformer and timm's Beit as encoder."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from benchmark.methods import build_method
from benchmark.methods.masking import blockwise_mask
from benchmark.methods.tokenizers import PatchCodebookTokenizer
from benchmark.models import vit
from benchmark.models.vit import create_vit
from benchmark.stages.pretrain import PretrainConfig, pretrain
from benchmark.utils.io import read_log

# The BEiT-flavoured smoke size proposed for benchmark.models.vit.ARCHS: timm's Beit with BEiT's
# pre-training choices (no absolute position embedding, a relative position bias shared by all
# blocks, layer-scale 0.1 from beit_base_patch16_224), at vit-smoke's width, depth and heads.
BEIT_SMOKE = ("beit_base_patch16_224", {"embed_dim": 192, "depth": 4, "num_heads": 3,
                                        "use_rel_pos_bias": False, "use_shared_rel_pos_bias": True})
# 64 px images give a 4x4 grid, too small for blocks of 16 patches.
SMOKE_ARGS = {"vocab_size": 64, "min_mask_patches": 4}


def beit_encoder(shared: bool = True) -> torch.nn.Module:
    name, overrides = BEIT_SMOKE
    overrides = {**overrides, "use_rel_pos_bias": not shared, "use_shared_rel_pos_bias": shared}
    return timm.create_model(name, pretrained=False, img_size=64, num_classes=0, **overrides)


ENCODERS = {
    "vit": lambda: create_vit("vit-smoke", 64),
    "beit-shared-rpb": lambda: beit_encoder(shared=True),
    "beit-layer-rpb": lambda: beit_encoder(shared=False),
}


def small_beit(kind: str, **kwargs):
    torch.manual_seed(0)
    method = build_method("beit", ENCODERS[kind](), **{**SMOKE_ARGS, **kwargs})
    method.prepare([torch.randn(8, 3, 64, 64)])
    return method


def _boundary(masks: torch.Tensor) -> torch.Tensor:
    """Per mask (B, H, W): the number of 4-adjacent pairs with one patch masked, one not."""
    m = masks.float()
    return (m[:, 1:] != m[:, :-1]).flatten(1).sum(1) + (m[:, :, 1:] != m[:, :, :-1]).flatten(1).sum(1)


def test_blockwise_masks_hit_the_ratio_and_stay_within_budget() -> None:
    masks = blockwise_mask(200, 14, 14, 0.4, torch.Generator().manual_seed(0))
    assert masks.shape == (200, 196) and masks.dtype == torch.bool
    assert abs(masks.float().mean().item() - 0.4) < 0.03
    assert masks.sum(1).max().item() <= round(0.4 * 196)  # never more than the budget
    assert masks.sum(1).min().item() >= 16  # at least one whole block


def test_blockwise_masks_are_made_of_blocks() -> None:
    masks = blockwise_mask(200, 14, 14, 0.4, torch.Generator().manual_seed(1)).view(200, 14, 14)
    iid = torch.rand(200, 14, 14, generator=torch.Generator().manual_seed(1)) < masks.float().mean()
    padded = F.pad(masks.float(), (1, 1, 1, 1))
    has_neighbour = (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]) > 0
    # Rectangles of >= 2 patches: every masked patch has a masked 4-neighbour (a 1x1 block can
    # only appear when the remaining budget is tiny); i.i.d. masks at 0.4 give about 85%.
    assert (has_neighbour & masks).sum() / masks.sum() > 0.99
    # Few large blocks have a short outline: about a quarter of an i.i.d. mask's of the same ratio.
    assert _boundary(masks).float().mean() < 0.5 * _boundary(iid).float().mean()


def _reference_blockwise(batch, grid_h, grid_w, ratio, generator, min_patches=16, attempts=10):
    """BEiT's MaskingGenerator written sample by sample, patch by patch, on the same random draws
    (one (B, attempts, 4) draw per round, as blockwise_mask consumes them)."""
    budget_total = round(ratio * grid_h * grid_w)
    masks = [[[False] * grid_w for _ in range(grid_h)] for _ in range(batch)]
    counts, active = [0] * batch, [True] * batch
    while any(active):
        draws = torch.rand(batch, attempts, 4, generator=generator, dtype=torch.float64).tolist()
        for i in range(batch):
            if not active[i]:
                continue
            budget, delta = budget_total - counts[i], 0
            for u in draws[i]:
                area = min_patches + (budget - min_patches) * u[0]
                aspect = math.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u[1])
                h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
                if not (h < grid_h and w < grid_w):
                    continue
                top, left = math.floor(u[2] * (grid_h - h + 1)), math.floor(u[3] * (grid_w - w + 1))
                cells = [(r, c) for r in range(top, top + h) for c in range(left, left + w)]
                fresh = [rc for rc in cells if not masks[i][rc[0]][rc[1]]]
                if 0 < len(fresh) <= budget:
                    for r, c in fresh:
                        masks[i][r][c] = True
                    delta = len(fresh)
                    break
            counts[i] += delta
            active[i] = delta > 0 and counts[i] < budget_total
    return torch.tensor(masks).flatten(1)


@pytest.mark.parametrize("grid,ratio,min_patches", [(14, 0.4, 16), (14, 0.75, 16), (4, 0.4, 4), (7, 0.5, 4)])
def test_blockwise_mask_matches_a_sample_by_sample_reference(grid: int, ratio: float, min_patches: int) -> None:
    fast = blockwise_mask(24, grid, grid, ratio, torch.Generator().manual_seed(4), min_patches=min_patches)
    slow = _reference_blockwise(24, grid, grid, ratio, torch.Generator().manual_seed(4), min_patches=min_patches)
    assert torch.equal(fast, slow)


def test_blockwise_masks_repeat_with_seed() -> None:
    a = blockwise_mask(8, 14, 14, 0.4, torch.Generator().manual_seed(2))
    b = blockwise_mask(8, 14, 14, 0.4, torch.Generator().manual_seed(2))
    c = blockwise_mask(8, 14, 14, 0.4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(row.tolist()) for row in a}) == 8  # each sample its own mask


def test_small_grids_need_smaller_blocks() -> None:
    gen = torch.Generator().manual_seed(0)
    assert blockwise_mask(200, 4, 4, 0.75, gen).float().mean() < 0.1  # 16-patch blocks do not fit
    assert abs(blockwise_mask(200, 4, 4, 0.75, gen, min_patches=4).float().mean().item() - 0.75) < 0.05
    with pytest.warns(UserWarning, match="min_mask_patches"):
        build_method("beit", create_vit("vit-smoke", 64), vocab_size=16, mask_ratio=0.75)


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_masked_patches_get_the_mask_token_before_the_position_embedding(kind: str) -> None:
    method = small_beit(kind)
    mask = method.make_mask(2, torch.Generator().manual_seed(0))
    assert mask.any(1).all() and (~mask).any(1).all()
    images = torch.randn(2, 3, 64, 64)
    base = method.embed_masked(images, mask)
    n_prefix = method.encoder.num_prefix_tokens

    def repaint(which: torch.Tensor) -> tuple[torch.Tensor, int]:
        """images with new pixels in the first patch of sample 0 where ``which`` holds."""
        patch = int(torch.nonzero(which[0])[0])
        row, col = divmod(patch, method.grid[1])
        out = images.clone()
        out[0, :, row * 16:(row + 1) * 16, col * 16:(col + 1) * 16] = torch.randn(3, 16, 16)
        return out, patch

    changed, patch = repaint(mask)  # a masked patch's pixels do not reach the encoder
    assert torch.equal(method.embed_masked(changed, mask), base)
    changed, patch = repaint(~mask)  # a visible patch's do, at its own position only
    diff = (method.embed_masked(changed, mask) - base).abs().sum(-1)
    assert diff[0, n_prefix + patch] > 0 and diff.sum() == diff[0, n_prefix + patch]

    # Masked positions hold mask token + position embedding (none for Beit: relative bias only).
    pos = method.encoder.pos_embed
    expected = method.mask_token[0, 0] + (pos[0, n_prefix:] if pos is not None else 0)
    masked = base[:, n_prefix:][mask]
    expected = expected.expand(2, -1, -1)[mask] if pos is not None else expected.expand_as(masked)
    assert torch.allclose(masked, expected)


@pytest.mark.parametrize("kind", ["vit", "beit-shared-rpb"])
def test_loss_counts_masked_patches_only(kind: str) -> None:
    method = small_beit(kind)
    images = torch.randn(4, 3, 64, 64)
    mask = method.make_mask(4, torch.Generator().manual_seed(7))
    clean = method.tokenize(images)

    def loss_with(tokens: torch.Tensor) -> float:
        # An instance attribute shadows the method: the (B, N) tokens, at the asked-for patches.
        method.tokenize = lambda _images, index: tokens.flatten()[index]
        try:
            return method(images, torch.Generator().manual_seed(7))["loss"].item()
        finally:
            del method.tokenize

    base = loss_with(clean)
    other = (clean + 1 + torch.randint(0, method.vocab_size - 1, clean.shape)) % method.vocab_size
    assert loss_with(torch.where(mask, clean, other)) == pytest.approx(base, rel=1e-6)  # visible changed
    assert abs(loss_with(torch.where(mask, other, clean)) - base) > 1e-3  # masked changed


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_forward_backward_reaches_encoder_and_head(kind: str) -> None:
    method = small_beit(kind)
    out = method(torch.randn(4, 3, 64, 64), torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "token_acc", "mask_ratio"} and torch.isfinite(out["loss"])
    assert 0.3 <= out["mask_ratio"].item() <= 0.4
    out["loss"].backward()
    enc = method.encoder
    params = [enc.patch_embed.proj.weight, enc.blocks[0].attn.qkv.weight, enc.blocks[-1].mlp.fc2.weight,
              method.token_head.weight, method.mask_token]
    if kind == "vit":
        params.append(enc.pos_embed)
        assert method.token_norm is None  # the ViT's own final norm serves
    else:
        params += [enc.blocks[0].gamma_1, method.token_norm.weight]  # layer-scale; Beit's norm is fc_norm
        params.append(enc.rel_pos_bias.relative_position_bias_table if kind == "beit-shared-rpb"
                      else enc.blocks[0].attn.relative_position_bias_table)
    for param in params:
        assert param.grad is not None and param.grad.abs().sum() > 0
    # Every trainable parameter takes part (DDP runs without find_unused_parameters).
    assert not [name for name, p in method.named_parameters() if p.requires_grad and p.grad is None]


def test_tokens_come_from_the_fitted_codebook() -> None:
    method = build_method("beit", create_vit("vit-smoke", 64), vocab_size=32, min_mask_patches=4)
    assert not method.codebook.any()
    fit = torch.randn(4, 3, 64, 64)
    method.prepare([fit])
    assert method.codebook.any() and "codebook" in method.state_dict()
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(method.tokenize(images), PatchCodebookTokenizer.assign(images, method.codebook, 16))
    # random-patches: every codebook entry is one of the fitting patches.
    patches = fit.reshape(4, 3, 4, 16, 4, 16).permute(0, 2, 4, 3, 5, 1).reshape(-1, 768)  # MAE's patch order
    assert ((method.codebook[:, None] - patches[None]).abs().amax(-1).min(1).values < 1e-6).all()


def _pretrain(root, out, arch: str, steps: int) -> tuple[PretrainConfig, object]:
    cfg = PretrainConfig(
        data_root=str(root / "classification" / "train"), method="beit", method_args=dict(SMOKE_ARGS), arch=arch,
        img_size=64, steps=steps, batch_size=32, blr=4e-3, warmup_steps=5, drop_path=0.0, crop_scale_min=0.5,
        checkpoint_every=steps, log_every=1, seed=0,
    )
    return cfg, pretrain(cfg, out)


@pytest.fixture(scope="module")
def beit_pretrain(synthetic_root, tmp_path_factory):
    """Through the real engine with the proposed "beit-smoke" ARCHS entry, added for this run only."""
    out = tmp_path_factory.mktemp("pretrain_beit_beit")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(vit.ARCHS, "beit-smoke", BEIT_SMOKE)
        return (*_pretrain(synthetic_root, out, "beit-smoke", 30), out)


def _losses(out) -> list[float]:
    return [r["loss"] for r in read_log(out)]


# With timm's VisionTransformer, the shared smoke pre-training (tests/methods/conftest.py) passes
# the contract test (test_contract.py); with timm's Beit, the run below is held to the same.
def test_loss_falls_on_synthetic_data_with_timms_beit(beit_pretrain) -> None:
    cfg, _, out = beit_pretrain
    losses = _losses(out)
    assert len(losses) == cfg.steps and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.3, f"loss went from {first:.3f} to {last:.3f}"


def _check_export(out, encoder_path, model: torch.nn.Module) -> None:
    state = load_file(str(encoder_path))
    model.load_state_dict(state, strict=True)
    assert not any(k.startswith(("token_head", "token_norm", "mask_token", "codebook")) for k in state)
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    trained = {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    assert trained.keys() == state.keys() and all(torch.equal(trained[k], state[k]) for k in state)


def test_vit_export_loads_into_timm_strictly(pretrained) -> None:
    cfg, out, encoder_path = pretrained("beit")
    _check_export(out, encoder_path, create_vit(cfg.arch, cfg.img_size, num_classes=0))


def test_beit_export_loads_into_timm_beit_strictly(beit_pretrain) -> None:
    cfg, encoder_path, out = beit_pretrain
    state = load_file(str(encoder_path))
    assert "rel_pos_bias.relative_position_bias_table" in state and "blocks.0.gamma_1" in state
    assert "pos_embed" not in state
    _check_export(out, encoder_path, beit_encoder(shared=True))
