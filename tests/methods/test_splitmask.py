"""SplitMask: the split, the losses, and that pre-training learns and exports."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from benchmark.methods import build_method
from benchmark.methods.losses import info_nce
from benchmark.methods.splitmask import split_patches
from benchmark.models.vit import create_vit
from benchmark.stages.pretrain import pretrain
from benchmark.utils.io import read_log
from benchmark.utils.schedule import cosine_schedule


@pytest.mark.parametrize("num_patches,keep", [(16, 8), (196, 98), (196, 49)])
def test_split_is_disjoint_and_sized(num_patches: int, keep: int) -> None:
    a, b = split_patches(64, num_patches, keep, torch.Generator().manual_seed(0))
    assert a.shape == b.shape == (64, keep)
    for row_a, row_b in zip(a.tolist(), b.tolist()):
        assert len(set(row_a)) == keep and len(set(row_b)) == keep
        assert not set(row_a) & set(row_b)
        if 2 * keep == num_patches:  # half and half: together they cover every patch
            assert set(row_a) | set(row_b) == set(range(num_patches))


def test_split_differs_between_samples_and_repeats_with_seed() -> None:
    a1, _ = split_patches(8, 16, 8, torch.Generator().manual_seed(3))
    a2, _ = split_patches(8, 16, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a1, a2)
    assert len({tuple(sorted(r)) for r in a1.tolist()}) > 1


def test_split_rejects_overlapping_sizes() -> None:
    with pytest.raises(ValueError, match="between 1 and 8"):
        split_patches(2, 16, 9, torch.Generator())


def test_info_nce_matches_hand_computation() -> None:
    # Orthonormal descriptors, temperature 1: each row's logits are (1, 0) with the positive first,
    # so each cross-entropy term is -log(e / (e + 1)) = log(1 + e^-1).
    a = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # norms differ: info_nce normalises
    assert info_nce(a, a.clone(), temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # Temperature 0.2 divides the logits by 0.2: log(1 + e^-5).
    assert info_nce(a, a.clone(), temperature=0.2).item() == pytest.approx(math.log(1 + math.exp(-5)), abs=1e-6)
    # Swapped pairs: the positive has logit 0 and the negative 1/0.2.
    assert info_nce(a, a.flip(0), temperature=0.2).item() == pytest.approx(math.log(1 + math.exp(5)), abs=1e-5)


def test_forward_backward_reaches_encoder_and_decoder() -> None:
    method = build_method("splitmask", create_vit("vit-smoke", 64), vocab_size=32)
    method.prepare([torch.randn(8, 3, 64, 64)])
    out = method(torch.randn(4, 3, 64, 64), torch.Generator().manual_seed(0))
    assert set(out) >= {"loss", "mim", "nce"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert method.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert method.token_head.weight.grad.abs().sum() > 0


def test_each_branch_is_scored_on_the_other_subsets_tokens() -> None:
    """With a quarter of the patches per branch, half of the patches are in neither subset:
    changing their tokens leaves the loss alone; changing the tokens of subset B changes it."""
    torch.manual_seed(0)  # the model and images: not whatever earlier tests left the global RNG at
    method = build_method("splitmask", create_vit("vit-smoke", 64), vocab_size=32, keep_ratio=0.25)
    method.prepare([torch.randn(8, 3, 64, 64)])
    method.eval()  # no drop-path noise between the calls
    images, b, n = torch.randn(4, 3, 64, 64), 4, method.num_patches
    idx_a, idx_b = split_patches(b, n, method.keep, torch.Generator().manual_seed(3))
    clean = method.tokenize(images)
    other = (clean + 1) % method.vocab_size

    def loss_with(tokens: torch.Tensor) -> float:
        # An instance attribute shadows the method: the (B, N) tokens, at the asked-for patches.
        method.tokenize = lambda _images, index: tokens.flatten()[index]
        try:
            return method(images, torch.Generator().manual_seed(3))["mim"].item()
        finally:
            del method.tokenize

    def changed_at(index: torch.Tensor) -> torch.Tensor:
        tokens = clean.clone()
        tokens.scatter_(1, index, other.gather(1, index))
        return tokens

    in_neither = torch.ones(b, n, dtype=torch.bool)
    in_neither.scatter_(1, torch.cat([idx_a, idx_b], 1), False)
    base = loss_with(clean)
    assert loss_with(torch.where(in_neither, other, clean)) == pytest.approx(base, rel=1e-6)
    assert abs(loss_with(changed_at(idx_b)) - base) > 1e-3
    assert abs(loss_with(changed_at(idx_a)) - base) > 1e-3


# The shared smoke pre-training (tests/methods/conftest.py) also passes the contract test
# (test_contract.py): its loss falls, its export is its encoder and loads strictly, it resumes.


def test_learning_rate_follows_beits_schedule(pretrained) -> None:
    """Pre-training trains step s with BEiT's cosine_scheduler value s (pinned to the official
    code in test_parity.py): 0 at step 0, the peak at the last warm-up step, min_lr after the
    last step. The log's record of step k holds the lr set for step k (0-based)."""
    cfg, out, _ = pretrained("splitmask")
    logged = [r["lr"] for r in read_log(out)]
    expected = [cosine_schedule(k, cfg.lr, cfg.min_lr, cfg.steps, cfg.warmup_steps) for k in range(1, cfg.steps + 1)]
    assert logged == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert logged[cfg.warmup_steps - 2] == pytest.approx(cfg.lr) and logged[-1] == pytest.approx(cfg.min_lr)


def test_export_holds_no_decoder_head_or_mask_token(pretrained) -> None:
    _, _, encoder_path = pretrained("splitmask")
    assert not any(k.startswith(("decoder", "token_head", "mask_token")) for k in load_file(str(encoder_path)))


def test_finished_run_is_not_repeated(pretrained) -> None:
    cfg, out, encoder_path = pretrained("splitmask")
    before = encoder_path.stat().st_mtime_ns
    assert pretrain(cfg, out) == encoder_path
    assert encoder_path.stat().st_mtime_ns == before
