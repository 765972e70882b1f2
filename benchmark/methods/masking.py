"""Masks and targets for masked image modelling, shared by BEiT, MAE (and SplitMask's targets).

- :func:`blockwise_mask`: BEiT's blockwise masking (Bao et al. 2021, Algorithm 1): random
  rectangles of at least ``min_patches`` patches, aspect ratio in [0.3, 1/0.3], added until about
  ``ratio`` of the patches are masked. Vectorised over the batch and over BEiT's 10 attempts
  per rectangle: a Python loop over rectangles only (a handful of rounds per batch).
- :func:`random_mask`: MAE's per-sample uniform masking (argsort of uniform noise): exactly
  ``int(N * (1 - ratio))`` visible patches per sample, with the permutation that undoes it.
- :class:`VisualTokenTargets`: a mixin for methods whose targets are the discrete visual tokens
  of a patch codebook (BEiT, SplitMask): the codebook buffer, ``prepare()`` and ``tokenize()``.

All randomness comes from the ``generator`` argument (a CPU generator, as the pre-training stage passes);
masks are returned on the CPU and the caller moves them to its device with
:func:`benchmark.utils.device.to_device`,
which does not make the host wait for the GPU. Anything derived from a mask that has a
data-dependent size (the indices of the masked patches) is computed on the CPU too, before the
copy: ``mask.nonzero()`` on a GPU tensor would stall the host until the GPU caught up.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from benchmark.methods.tokenizers import (
    LEARNED_TOKENIZERS,
    TOKENIZERS,
    DalleTokenizer,
    PatchCodebookTokenizer,
    build_tokenizer,
    nearest,
    patchify,
    pixel_patches,
)
from benchmark.utils.device import to_device
from benchmark.utils.io import save_safetensors


def blockwise_mask(
    batch: int,
    grid_h: int,
    grid_w: int,
    ratio: float,
    generator: torch.Generator,
    min_patches: int = 16,
    max_patches: int | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    max_attempts: int = 10,
) -> torch.Tensor:
    """BEiT's blockwise masks: (B, grid_h * grid_w) bool, True = masked, row-major patch order.

    The budget is ``round(ratio * N)`` patches. Per sample, as in BEiT's ``MaskingGenerator``:
    a proposal draws an area uniformly between ``min_patches`` and the remaining budget (capped
    by ``max_patches``), a log-uniform aspect ratio in [min_aspect, max_aspect] (default
    1/min_aspect), a rectangle of that shape strictly smaller than the grid in both directions
    and a uniform position; it is accepted if it masks at least one new patch and no more than
    the remaining budget; the first acceptable of ``max_attempts`` proposals is added. A sample
    stops at its budget or when all ``max_attempts`` proposals of a round are rejected, so a mask
    never exceeds the budget and usually ends a little short of it.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    if min_aspect <= 0 or max_attempts < 1:
        raise ValueError(f"min_aspect must be positive and max_attempts at least 1, got {min_aspect}, {max_attempts}")
    n = grid_h * grid_w
    budget_total = int(round(ratio * n))
    mask = torch.zeros(batch, grid_h, grid_w, dtype=torch.bool)
    if budget_total == 0 or batch == 0:
        return mask.flatten(1)
    log_lo = math.log(min_aspect)
    log_hi = math.log(max_aspect if max_aspect is not None else 1.0 / min_aspect)
    rows = torch.arange(grid_h).view(1, grid_h, 1)
    cols = torch.arange(grid_w).view(1, 1, grid_w)
    count = torch.zeros(batch, dtype=torch.long)
    active = torch.ones(batch, dtype=torch.bool)
    # One round = one call of BEiT's ``_mask`` for every unfinished sample: its ``max_attempts``
    # proposals are drawn and checked at once, and the first acceptable one is added. A sample
    # whose proposals all fail, or that reached its budget, is done. Each round masks at least one
    # new patch per active sample, so there are at most budget_total + 1 rounds.
    while bool(active.any()):
        u = torch.rand(batch, max_attempts, 4, generator=generator, dtype=torch.float64)
        budget = budget_total - count
        if max_patches is not None:
            budget = budget.clamp(max=max_patches)
        budget = budget.view(-1, 1)
        # random.uniform(a, b) = a + (b - a) * U, also when b < a (a small remaining budget).
        area = min_patches + (budget.double() - min_patches) * u[..., 0]
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
        h = torch.round(torch.sqrt(area * aspect)).long()
        w = torch.round(torch.sqrt(area / aspect)).long()
        fits = (h < grid_h) & (w < grid_w)  # strictly smaller than the grid, as in BEiT
        top = (u[..., 2] * (grid_h - h + 1).clamp(min=1)).floor().long()
        left = (u[..., 3] * (grid_w - w + 1).clamp(min=1)).floor().long()
        # Patches already masked inside each proposal, from the mask's integral image (no (B, A, H, W) tensor).
        integral = F.pad(mask.long().cumsum(1).cumsum(2), (1, 0, 1, 0)).flatten(1)  # (B, (H+1)*(W+1))
        bottom, right = (top + h).clamp(max=grid_h), (left + w).clamp(max=grid_w)
        overlap = sum(sign * torch.gather(integral, 1, r * (grid_w + 1) + c)
                      for sign, r, c in ((1, bottom, right), (-1, top, right), (-1, bottom, left), (1, top, left)))
        new = h * w - overlap  # (B, A)
        ok = fits & (new > 0) & (new <= budget) & active.view(-1, 1)
        found = ok.any(1)
        first = ok.to(torch.uint8).argmax(1, keepdim=True)  # the first acceptable proposal
        t, lft, b, r = (x.gather(1, first).view(-1, 1, 1) for x in (top, left, bottom, right))
        block = (rows >= t) & (rows < b) & (cols >= lft) & (cols < r)  # (B, H, W)
        mask |= block & found.view(-1, 1, 1)
        count += torch.where(found, new.gather(1, first).squeeze(1), 0)
        active &= found & (count < budget_total)
    return mask.flatten(1)


class RandomMask(NamedTuple):
    """A per-sample random permutation of the patches; its first ``num_visible`` are visible."""

    order: torch.Tensor    # (B, N) patch indices in shuffled order
    restore: torch.Tensor  # (B, N) inverse permutation: gather(x[order], restore) == x
    mask: torch.Tensor     # (B, N) bool in the original order, True = masked
    num_visible: int

    @property
    def visible(self) -> torch.Tensor:
        """(B, num_visible) indices of the visible patches (in shuffled order)."""
        return self.order[:, : self.num_visible]

    def to(self, device: torch.device | str) -> RandomMask:
        device = torch.device(device)
        return RandomMask(to_device(self.order, device), to_device(self.restore, device), to_device(self.mask, device),
                          self.num_visible)


def random_mask(batch: int, num_patches: int, ratio: float, generator: torch.Generator) -> RandomMask:
    """MAE's masking: keeps ``int(num_patches * (1 - ratio))`` patches per sample, chosen by the
    argsort of uniform noise (one permutation per sample, no Python loop)."""
    keep = int(num_patches * (1 - ratio))
    if not 0 < keep < num_patches:
        raise ValueError(f"mask ratio {ratio} keeps {keep} of {num_patches} patches; at least one must be kept and one masked")
    order = torch.rand(batch, num_patches, generator=generator).argsort(dim=1)
    restore = order.argsort(dim=1)
    mask = torch.ones(batch, num_patches, dtype=torch.bool)
    mask[:, :keep] = False
    mask = torch.gather(mask, 1, restore)  # back to the original patch order
    return RandomMask(order, restore, mask, keep)


VISUAL_TARGETS = (*sorted(TOKENIZERS), *LEARNED_TOKENIZERS, "pixels")  # a method's ``tokenizer`` argument


class VisualTokenTargets:
    """Mixin for a :class:`~benchmark.methods.base.PretrainMethod` that predicts the masked
    patches' visual tokens (BEiT, SplitMask): from a patch codebook, from the DALL-E dVAE, or,
    as a baseline, the patches' normalised pixels (``tokenizer="pixels"``: regression).

    Call ``self.init_visual_tokens(...)`` in ``__init__`` after ``super().__init__(encoder)``;
    size the prediction head with ``self.target_dim``; compute targets with ``tokenize()`` and
    the loss with ``target_loss()``. A codebook is a buffer (``codebook``) so that it is saved
    with the method's state and a resumed run does not refit it; ``prepare()`` fits it with
    :func:`benchmark.methods.tokenizers.build_tokenizer`. The DALL-E tokenizer is held outside the module
    tree: its frozen weights come from ``tokenizer_weights``, never from (or into) the method's
    checkpoints or optimiser. List this mixin before ``PretrainMethod`` in the bases.
    """

    codebook: torch.Tensor
    uses_tokenizer = True

    def init_visual_tokens(self, vocab_size: int, tokenizer: str, tokenizer_seed: int,
                           tokenizer_weights: str | None = None) -> None:
        if tokenizer not in VISUAL_TARGETS:
            raise ValueError(f"unknown tokenizer {tokenizer!r}; expected one of {list(VISUAL_TARGETS)}")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
        self.vocab_size = int(vocab_size)
        self.tokenizer_name = tokenizer
        self.tokenizer_seed = int(tokenizer_seed)
        in_chans = int(self.encoder.patch_embed.proj.in_channels)
        # Width of the prediction head: one logit per token, or one value per pixel of a patch.
        self.target_dim = in_chans * self.patch_size**2 if tokenizer == "pixels" else self.vocab_size
        if tokenizer == "dall-e":
            object.__setattr__(self, "_dalle", DalleTokenizer(tokenizer_weights, self.vocab_size, self.patch_size))
        elif tokenizer in TOKENIZERS:
            self.register_buffer("codebook", torch.zeros(self.vocab_size, in_chans * self.patch_size**2))

    def prepare(self, batches: Iterable[torch.Tensor], cache: Path | None = None) -> None:
        """Fits the codebook on ``batches``. A k-means codebook (minutes at the paper's vocabulary)
        is kept at ``<cache>-kmeans-pqc-v<vocab>-p<patch>-s<seed>.safetensors`` (pqc: the order of a
        patch's values, :func:`~benchmark.methods.tokenizers.patchify`) and loaded from there by the next run
        on the same images; ``batches`` is then never read."""
        if self.tokenizer_name not in TOKENIZERS:
            return
        path = None
        if cache is not None and self.tokenizer_name == "kmeans":
            key = f"kmeans-pqc-v{self.vocab_size}-p{self.patch_size}-s{self.tokenizer_seed}"
            path = cache.with_name(f"{cache.name}-{key}.safetensors")
            if path.is_file():
                codebook = load_file(str(path))["codebook"]
                if codebook.shape != self.codebook.shape:
                    raise ValueError(f"{path}: a codebook of shape {tuple(codebook.shape)}, expected "
                                     f"{tuple(self.codebook.shape)}; delete the file to refit it")
                self.codebook.copy_(codebook)
                print(f"[tokenizer] k-means codebook loaded from {path}", file=sys.stderr)
                return
        tokenizer = build_tokenizer(self.tokenizer_name, batches, self.vocab_size, self.patch_size, self.tokenizer_seed)
        self.codebook.copy_(tokenizer.codebook)
        if path is not None:
            try:
                save_safetensors({"codebook": tokenizer.codebook.detach().cpu().contiguous()}, path)
                print(f"[tokenizer] k-means codebook saved to {path}", file=sys.stderr)
            except OSError as err:  # a read-only data set: the run goes on without the cache
                print(f"[tokenizer] could not cache the codebook at {path}: {err}", file=sys.stderr)

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, N) visual token ids, or (B, N, p*p*C) pixel targets. With ``index``
        (M,) into the B*N patches (sample-major), the targets of those patches alone: (M,) or
        (M, p*p*C); a codebook then looks up only those patches."""
        if self.tokenizer_name in TOKENIZERS and index is not None:
            patches = patchify(images.float(), self.patch_size).flatten(0, 1).index_select(0, index)
            return nearest(patches, self.codebook)
        if self.tokenizer_name == "pixels":
            targets = pixel_patches(images, self.patch_size)
        elif self.tokenizer_name == "dall-e":
            targets = self._dalle.to(images.device)(images)
        else:
            targets = PatchCodebookTokenizer.assign(images, self.codebook, self.patch_size)
        return targets if index is None else targets.flatten(0, 1).index_select(0, index)

    def target_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(M, target_dim) predictions of M patches against their targets: the loss (cross-entropy
        on tokens, mean squared error on pixels) and the metrics to log (token accuracy)."""
        if self.tokenizer_name == "pixels":
            return F.mse_loss(prediction.float(), target), {}
        loss = F.cross_entropy(prediction.float(), target)
        with torch.no_grad():
            accuracy = (prediction.argmax(-1) == target).float().mean()
        return loss, {"token_acc": accuracy}
