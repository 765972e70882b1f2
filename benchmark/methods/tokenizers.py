"""Patch tokenizers: map each 16x16 image patch to a discrete visual token.

The paper (and PROTOCOL.md) reports that simple patch-level codebooks cost no significant
accuracy against BEiT's DALL-E dVAE. Implemented here:

- ``random-patches``: a codebook of patches sampled at random from the pre-training images;
- ``kmeans``: a codebook fitted by k-means on patches of the pre-training images;
- ``dall-e``: BEiT's tokenizer, the encoder of OpenAI's DALL-E dVAE (:class:`DalleTokenizer`);
- ``pixels``: no tokens; the baseline regresses each patch's normalised pixels (:func:`pixel_patches`).

With a codebook, a patch's token is the index of its nearest entry (squared L2 distance),
computed on the same normalised pixels the encoder sees. Tokenizers carry no gradient.

DALL-E weights are never downloaded: convert the released ``encoder.pkl`` once with
``python -m benchmark.tokenizers convert-dalle encoder.pkl dalle_encoder.safetensors``, then pass
the safetensors file as the method's ``tokenizer_weights``. The release is a pickled module; it
is read with torch's ``weights_only`` unpickler, allowed to build the dVAE encoder's own classes
(:data:`DALLE_CLASSES`) and nothing else, so a file holding anything more is refused, never run.
(``--trust-pickle``, which older instructions pass, is accepted and changes nothing.)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.errors import EXIT_BAD_INPUT, CheckpointError, SuiteError, error_line


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), patches in row-major order (the ViT's token order), each
    patch's values in MAE's order (``patchify``: 'nchpwq->nhwpqc', pixel row, pixel column, then
    channel), so that MAE's pixel predictions and decoder weights mean the same here."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def pixel_patches(images: torch.Tensor, patch_size: int, normalize: bool = True) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C): each patch's pixels, standardised by the patch's own mean
    and (unbiased) variance when ``normalize`` (MAE's ``norm_pix_loss`` targets)."""
    target = patchify(images.float(), patch_size)
    if normalize:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return target


class PatchCodebookTokenizer(nn.Module):
    """Nearest-entry assignment against a fixed codebook of flattened patches."""

    def __init__(self, codebook: torch.Tensor, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.register_buffer("codebook", codebook.float().contiguous())

    @property
    def vocab_size(self) -> int:
        return self.codebook.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N) token ids."""
        return self.assign(images, self.codebook, self.patch_size)

    @staticmethod
    @torch.no_grad()
    def assign(images: torch.Tensor, codebook: torch.Tensor, patch_size: int) -> torch.Tensor:
        """The index of the nearest codebook entry of each patch: (B, C, H, W) -> (B, N)."""
        return nearest(patchify(images.float(), patch_size), codebook)


def nearest(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (squared L2) of each point: (..., D), (K, D) -> (...)."""
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, and ||x||^2 does not change the argmin.
    return (points @ centres.t() * -2 + (centres**2).sum(-1)).argmin(dim=-1)


def _patch_pool(images: Iterable[torch.Tensor], patch_size: int, count: int) -> torch.Tensor:
    """All patches of ``images`` (batches of (B, C, H, W)) as rows; at least ``count`` of them."""
    pool = torch.cat([patchify(batch.float(), patch_size).flatten(0, 1) for batch in images])
    if pool.shape[0] < count:
        raise ValueError(f"a codebook of {count} entries needs at least as many patches; the images give {pool.shape[0]}")
    return pool


def random_patch_codebook(
    images: Iterable[torch.Tensor], vocab_size: int, patch_size: int, seed: int = 0
) -> PatchCodebookTokenizer:
    """A codebook of ``vocab_size`` patches drawn at random from ``images`` (batches of (B,C,H,W))."""
    gen = torch.Generator().manual_seed(seed)
    pool = _patch_pool(images, patch_size, vocab_size)
    return PatchCodebookTokenizer(pool[torch.randperm(pool.shape[0], generator=gen)[:vocab_size]], patch_size)


def kmeans_codebook(
    images: Iterable[torch.Tensor], vocab_size: int, patch_size: int, seed: int = 0, iters: int = 10
) -> PatchCodebookTokenizer:
    """A codebook fitted by Lloyd's k-means (k-means++ seeding) on the patches of ``images``, on
    the CPU whatever their device (its generator is the CPU's: the same codebook on every device)."""
    gen = torch.Generator().manual_seed(seed)
    pool = _patch_pool(images, patch_size, vocab_size).cpu()
    centres = kmeans_plus_plus(pool, vocab_size, gen)
    for _ in range(iters):
        assign = nearest(pool, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, pool)
        counts = torch.bincount(assign, minlength=vocab_size).unsqueeze(1)
        # An empty cluster keeps its previous centre.
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return PatchCodebookTokenizer(centres, patch_size)


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new centre drawn with probability proportional to the squared
    distance to the nearest centre so far (avoids two seeds in one cluster)."""
    first = int(torch.randint(points.shape[0], (1,), generator=generator))
    centres = [points[first]]
    dist = ((points - points[first]) ** 2).sum(-1)
    for _ in range(1, k):
        weights = dist if dist.sum() > 0 else torch.ones_like(dist)
        pick = int(torch.multinomial(weights, 1, generator=generator))
        centres.append(points[pick])
        dist = torch.minimum(dist, ((points - points[pick]) ** 2).sum(-1))
    return torch.stack(centres).clone()


TOKENIZERS = {"random-patches": random_patch_codebook, "kmeans": kmeans_codebook}
LEARNED_TOKENIZERS = ("dall-e",)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DalleTokenizer(nn.Module):
    """The DALL-E dVAE encoder as a patch tokenizer: one token per ``patch_size`` patch.

    Images arrive normalised with ImageNet statistics (as the ViT sees them); they are mapped
    back to [0, 1], resized so that the dVAE's 8x down-sampling gives the ViT's patch grid, put
    through DALL-E's logit-Laplace pixel map, and each cell's most likely code is its token.
    Without ``weights`` the encoder keeps its random initialisation (tests; a warning says so).
    """

    def __init__(self, weights: str | Path | None = None, vocab_size: int = 8192, patch_size: int = 16) -> None:
        super().__init__()
        from dall_e import Encoder

        self.patch_size = patch_size
        self.encoder = Encoder(vocab_size=vocab_size, requires_grad=False, use_mixed_precision=False)
        if weights is None:
            warnings.warn("DalleTokenizer without weights: the dVAE encoder is randomly initialised", stacklevel=2)
        else:
            self.encoder.load_state_dict(load_tensors(weights), strict=True)
        self.encoder.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, H/p * W/p) token ids."""
        from dall_e import map_pixels

        pixels = (images.float() * self.std + self.mean).clamp(0, 1)
        pixels = F.interpolate(pixels, scale_factor=8 / self.patch_size, mode="bilinear", antialias=True, align_corners=False)
        return self.encoder(map_pixels(pixels)).argmax(dim=1).flatten(1)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a tensors-only torch file (never a full unpickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def dalle_classes() -> list[type]:
    """The classes DALL-E's pickled encoder is built of: all ``weights_only`` loading may create."""
    from dall_e.encoder import Encoder, EncoderBlock
    from dall_e.utils import Conv2d

    return [Encoder, EncoderBlock, Conv2d, nn.Sequential, nn.ReLU, nn.MaxPool2d, nn.Identity]


def convert_dalle(pickled: str | Path, out: str | Path) -> Path:
    """Reads DALL-E's released ``encoder.pkl`` (a pickled module) with ``weights_only=True``,
    allowing only the dVAE encoder's classes (:func:`dalle_classes`), and writes its weights as
    safetensors (atomically). A :class:`~benchmark.errors.CheckpointError` names anything else."""
    from safetensors.torch import save

    from benchmark.utils.io import load_failure, write_bytes

    path = Path(pickled)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(dalle_classes()):
            module = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler's refusal, or not a torch file at all
        raise CheckpointError(f"{path}: not DALL-E's encoder.pkl, refused without running it "
                              f"({load_failure(err)})") from None
    if not isinstance(module, dalle_classes()[0]):
        raise CheckpointError(f"{path}: holds a {type(module).__name__}, not DALL-E's dVAE Encoder")
    write_bytes(out, save({k: v.contiguous() for k, v in module.state_dict().items()}))
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.tokenizers")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert-dalle", help="convert DALL-E's encoder.pkl into safetensors weights")
    conv.add_argument("pickled")
    conv.add_argument("out")
    conv.add_argument("--trust-pickle", action="store_true",
                      help="accepted for older instructions; the file is read without running any of its code")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {convert_dalle(args.pickled, args.out)}")
    except SuiteError as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def build_tokenizer(name: str, images: Iterable[torch.Tensor], vocab_size: int, patch_size: int,
                    seed: int) -> PatchCodebookTokenizer:
    if name not in TOKENIZERS:
        raise ValueError(f"unknown codebook tokenizer {name!r}; expected one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[name](images, vocab_size, patch_size, seed=seed)
