"""Patch tokenizers: patch order, nearest-centre assignment, k-means fitting."""

from __future__ import annotations

import pytest
import torch

from benchmark.methods.tokenizers import kmeans_codebook, patchify, random_patch_codebook


def test_patchify_row_major_order() -> None:
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    patches = patchify(images, 16)
    assert patches.shape == (2, 4, 3 * 16 * 16)
    # Patch 1 is the top-right 16x16 block; its first value is channel 0, row 0, column 16.
    assert patches[0, 1, 0] == images[0, 0, 0, 16]
    assert patches[1, 2, 0] == images[1, 0, 16, 0]


def test_kmeans_assigns_each_patch_to_its_nearest_centre() -> None:
    gen = torch.Generator().manual_seed(0)
    images = [torch.randn(4, 3, 32, 32, generator=gen) for _ in range(3)]
    tokenizer = kmeans_codebook(images, vocab_size=10, patch_size=16, seed=0, iters=5)
    test = torch.randn(5, 3, 32, 32, generator=gen)
    tokens = tokenizer(test)
    brute = torch.cdist(patchify(test, 16), tokenizer.codebook.unsqueeze(0).expand(5, -1, -1)).argmin(-1)
    assert torch.equal(tokens, brute)


def test_kmeans_lowers_the_quantisation_error_of_random_patches() -> None:
    gen = torch.Generator().manual_seed(1)
    # Patches drawn around 4 well separated centres: k-means with k=4 should find them.
    centres = torch.randn(4, 3 * 16 * 16, generator=gen) * 5
    patches = centres[torch.randint(0, 4, (256,), generator=gen)] + 0.1 * torch.randn(256, 3 * 16 * 16, generator=gen)
    images = [p.reshape(1, 3, 16, 16) for p in patches]

    def error(tok) -> float:
        flat = torch.cat([patchify(i, 16) for i in images]).squeeze(1)
        return float(((flat - tok.codebook[tok(torch.cat(images)).squeeze(1)]) ** 2).sum(-1).mean())

    fitted = kmeans_codebook(images, vocab_size=4, patch_size=16, seed=0, iters=10)
    random = random_patch_codebook(images, vocab_size=4, patch_size=16, seed=0)
    assert error(fitted) <= error(random)
    assert error(fitted) < 0.1**2 * 3 * 16 * 16 * 1.5  # about the noise level: every centre found


def test_pixel_targets_regress_normalised_patches() -> None:
    """tokenizer="pixels": the head predicts each patch's standardised pixels (MSE). With a zero
    head the loss is the targets' mean square, (D-1)/D for D = 3*16*16 (unbiased variance)."""
    import pytest

    from benchmark.methods import build_method
    from benchmark.models.vit import create_vit

    d = 3 * 16 * 16
    for name, args in [("beit", {"min_mask_patches": 4}), ("splitmask", {})]:
        method = build_method(name, create_vit("vit-smoke", 64), tokenizer="pixels", **args)
        assert method.target_dim == d and method.token_head.out_features == d
        assert "codebook" not in method.state_dict()
        method.prepare([torch.randn(2, 3, 64, 64)])  # nothing to fit
        torch.nn.init.zeros_(method.token_head.weight)
        torch.nn.init.zeros_(method.token_head.bias)
        out = method(torch.randn(4, 3, 64, 64), torch.Generator().manual_seed(0))
        mim = out["mim"] if name == "splitmask" else out["loss"]
        assert float(mim.detach()) == pytest.approx((d - 1) / d, rel=1e-4), name
        assert "token_acc" not in out


@pytest.mark.parametrize("tokenizer", ["random-patches", "kmeans", "pixels"])
def test_targets_of_chosen_patches_equal_those_of_all_patches(tokenizer: str) -> None:
    """BEiT and SplitMask tokenise only the patches they predict; the result must be what
    tokenising every patch and picking those would give."""
    from benchmark.methods import build_method
    from benchmark.models.vit import create_vit

    method = build_method("beit", create_vit("vit-smoke", 64), vocab_size=16, tokenizer=tokenizer, min_mask_patches=4)
    method.prepare([torch.randn(8, 3, 64, 64)])
    images = torch.randn(3, 3, 64, 64)
    index = torch.tensor([0, 5, 17, 18, 40, 47])  # of the 3 x 16 patches, sample-major
    assert torch.equal(method.tokenize(images, index), method.tokenize(images).flatten(0, 1)[index])


def test_kmeans_codebook_is_cached_beside_the_images_and_refitted_when_they_change(tmp_path) -> None:
    import os

    from PIL import Image

    from benchmark.data.folders import ImageFiles, image_folder
    from benchmark.methods import build_method
    from benchmark.models.vit import create_vit
    from benchmark.stages.pretrain import PretrainConfig, fit_cache

    root = tmp_path / "data" / "train"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), (40 * i, 80, 120)).save(root / cls / f"{i}.png")
    cfg = PretrainConfig(data_root=str(root), img_size=64)
    images = ImageFiles(root)
    cache = fit_cache(cfg, images, list(range(6)), tmp_path / "run")
    assert cache.parent == tmp_path / "data" / ".sslbench-cache"  # beside the data set, not in it
    assert fit_cache(cfg, images, list(range(6)), tmp_path / "run") == cache  # a stable key
    (root / ".ipynb_checkpoints").mkdir()  # a hidden folder is no class
    assert image_folder(root).classes == ["a", "b"]

    def kmeans_beit():
        return build_method("beit", create_vit("vit-smoke", 64), vocab_size=16, tokenizer="kmeans", min_mask_patches=4)

    fitted = kmeans_beit()
    fitted.prepare(iter([torch.randn(8, 3, 64, 64)]), cache=cache)

    def never_read():
        raise AssertionError("the cached codebook should have been used")
        yield

    loaded = kmeans_beit()
    loaded.prepare(never_read(), cache=cache)
    assert torch.equal(loaded.codebook, fitted.codebook) and fitted.codebook.abs().sum() > 0

    # Another image (same name, new content) is another key, so the codebook is fitted again.
    Image.new("RGB", (64, 64), (255, 0, 0)).save(root / "a" / "0.png")
    os.utime(root / "a" / "0.png", ns=(1, 1))
    assert fit_cache(cfg, images, list(range(6)), tmp_path / "run") != cache
