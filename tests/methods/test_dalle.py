"""The DALL-E dVAE tokenizer (random weights: the released ones are never downloaded)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from benchmark.methods import build_method
from benchmark.methods.tokenizers import DalleTokenizer, main
from benchmark.models.vit import create_vit

pytestmark = pytest.mark.filterwarnings("ignore:DalleTokenizer without weights")


@pytest.fixture(scope="module")
def tokenizer() -> DalleTokenizer:
    torch.manual_seed(0)
    return DalleTokenizer(vocab_size=8192, patch_size=16)


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_one_token_per_vit_patch(tokenizer: DalleTokenizer, size: tuple[int, int]) -> None:
    images = torch.randn(2, 3, *size)
    tokens = tokenizer(images)
    assert tokens.shape == (2, (size[0] // 16) * (size[1] // 16))
    assert tokens.dtype == torch.int64 and 0 <= int(tokens.min()) and int(tokens.max()) < 8192
    assert torch.equal(tokens, tokenizer(images))  # deterministic
    assert tokens.unique().numel() > 1  # not one constant code


def test_weights_round_trip_through_safetensors(tokenizer: DalleTokenizer, tmp_path) -> None:
    path = tmp_path / "dalle_encoder.safetensors"
    save_file({k: v.contiguous() for k, v in tokenizer.encoder.state_dict().items()}, str(path))
    torch.manual_seed(123)  # a different random initialisation, replaced by the loaded weights
    loaded = DalleTokenizer(weights=path, vocab_size=8192)
    images = torch.randn(3, 3, 64, 64)
    assert torch.equal(loaded(images), tokenizer(images))


def test_beit_trains_on_dalle_tokens_without_storing_them() -> None:
    method = build_method("beit", create_vit("vit-smoke", 64), tokenizer="dall-e", vocab_size=8192, min_mask_patches=4)
    assert not any(k.startswith("_dalle") or "dalle" in k for k in method.state_dict())
    assert all(p.requires_grad for p in method.parameters())  # the frozen dVAE is not among them
    out = method(torch.randn(2, 3, 64, 64), torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and method.encoder.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0


def test_convert_reads_the_pickled_encoder_without_a_full_unpickle(tokenizer: DalleTokenizer, tmp_path, capsys) -> None:
    """The release is a pickled module: it is read with ``weights_only=True`` allowing only the
    dVAE's classes; a pickle that would run code is refused, one line, exit 2, nothing written."""
    import os

    torch.save(tokenizer.encoder, tmp_path / "encoder.pkl")  # as OpenAI pickled it
    assert main(["convert-dalle", str(tmp_path / "encoder.pkl"), str(tmp_path / "dalle.safetensors")]) == 0
    loaded = DalleTokenizer(weights=tmp_path / "dalle.safetensors", vocab_size=8192)
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(loaded(images), tokenizer(images))

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"encoder": Payload()}, tmp_path / "evil.pkl")
    capsys.readouterr()
    assert main(["convert-dalle", str(tmp_path / "evil.pkl"), str(tmp_path / "out.safetensors"), "--trust-pickle"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "refused without running it" in err and "system" in err and "\n" not in err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
