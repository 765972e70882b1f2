"""BEiT: BERT pre-training of image transformers (Bao et al., 2021), the paper's denoising baseline.

Per image, about ``mask_ratio`` of the patches are masked in blocks (BEiT's blockwise masking,
:func:`benchmark.methods.masking.blockwise_mask`), at most ``round(mask_ratio * N)`` of the N patches. The
default is BEiT's release: ``num_mask_patches=75`` of the 196 patches at 224 px with 16 px patches
(:data:`BEIT_MASK_RATIO` = 75/196, not 0.4, which would mask up to 78); on another grid the same
share of its patches. A learned mask token replaces the patch embedding of
every masked patch *before* the position embedding is added; the encoder runs on the full
sequence; a linear head on the final (normed) patch tokens predicts the visual token of each
masked patch (cross-entropy over the masked patches only). The visual tokens come from a patch
codebook (random patches or k-means, fitted in ``prepare()``; :class:`VisualTokenTargets`), which
PROTOCOL.md reports to cost nothing significant against BEiT's DALL-E tokenizer.

The method takes either encoder the pre-training stage can build:

- timm's ``VisionTransformer`` (absolute position embedding; layer-scale with ``init_values``);
- timm's ``Beit`` (relative position bias, per layer or shared, and layer-scale: BEiT's own
  pre-training architecture is ``Beit`` with ``use_abs_pos_emb=False``,
  ``use_shared_rel_pos_bias=True``, ``init_values=0.1``).

If the encoder has no final norm over the tokens (``Beit`` or ViT with average pooling use a
``fc_norm`` after pooling instead), the method owns one (``token_norm``), which, like BEiT's
pre-training norm, is not exported with the encoder; the encoder's unused ``fc_norm`` is frozen
at its initial value during pre-training (BEiT's fine-tuning starts it fresh too).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models.beit import Beit

from benchmark.methods.base import DENOISING, PretrainMethod, register_method
from benchmark.methods.masking import VISUAL_TARGETS, VisualTokenTargets, blockwise_mask
from benchmark.training.config import at_least, in_unit, one_of, optional, positive
from benchmark.utils.device import to_device

# BEiT's run_beit_pretraining.py: --num_mask_patches 75 on the 14x14 grid of 224 px images.
BEIT_MASK_RATIO = 75 / 196


@register_method
class BEiT(VisualTokenTargets, PretrainMethod):
    name = "beit"
    family = DENOISING
    small_set_args = {"mask_ratio": 0.75}  # 75% masking on the small sets, as SplitMask's
    RULES = {
        "mask_ratio": in_unit(one=False), "vocab_size": at_least(2), "tokenizer": one_of(VISUAL_TARGETS),
        "tokenizer_seed": at_least(0), "min_mask_patches": at_least(1), "max_mask_patches": optional(at_least(1)),
        "mask_min_aspect": positive(),
    }

    def __init__(
        self,
        encoder: nn.Module,
        mask_ratio: float = BEIT_MASK_RATIO,
        vocab_size: int = 8192,
        tokenizer: str = "random-patches",
        tokenizer_seed: int = 0,
        tokenizer_weights: str | None = None,  # the DALL-E dVAE encoder, as safetensors
        min_mask_patches: int = 16,
        max_mask_patches: int | None = None,
        mask_min_aspect: float = 0.3,
    ) -> None:
        is_beit = isinstance(encoder, Beit)
        if not is_beit and not hasattr(encoder, "_pos_embed"):
            raise TypeError(f"BEiT needs timm's VisionTransformer or Beit as encoder; got {type(encoder).__name__}")
        super().__init__(encoder)
        self._is_beit = is_beit
        self.init_visual_tokens(vocab_size, tokenizer, tokenizer_seed, tokenizer_weights)
        self.mask_ratio = float(mask_ratio)
        self.mask_args = dict(min_patches=int(min_mask_patches), max_patches=max_mask_patches, min_aspect=float(mask_min_aspect))
        self.grid = tuple(int(s) for s in encoder.patch_embed.grid_size)
        # Validates the arguments early, and warns where the grid is too small for the blocks (e.g.
        # 64 px images: a 4x4 grid, on which blocks of >= 16 patches cannot be placed).
        achieved = float(self.make_mask(64, torch.Generator().manual_seed(0)).float().mean())
        if achieved < 0.75 * self.mask_ratio:
            warnings.warn(
                f"blockwise masking reaches {achieved:.2f} of the patches on a {self.grid[0]}x{self.grid[1]} grid, "
                f"short of mask_ratio {self.mask_ratio}; lower min_mask_patches (now {min_mask_patches})",
                stacklevel=2,
            )

        dim = encoder.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.token_norm = None
        if isinstance(encoder.norm, nn.Identity):
            self.token_norm = nn.LayerNorm(dim, eps=1e-6)
            # The encoder's norm after pooling (fc_norm) takes no part in pre-training: frozen at its
            # initial value, as fine-tuning would initialise it, and so that DDP (which expects every
            # trainable parameter to get a gradient) needs no find_unused_parameters.
            for param in getattr(encoder, "fc_norm", nn.Identity()).parameters():
                param.requires_grad_(False)
        self.token_head = nn.Linear(dim, self.target_dim)
        trunc_normal_(self.mask_token, std=0.02)
        trunc_normal_(self.token_head.weight, std=0.02)
        nn.init.zeros_(self.token_head.bias)

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"mask_token"}

    def make_mask(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B, N) bool blockwise mask, True = masked (on the CPU)."""
        return blockwise_mask(batch, *self.grid, self.mask_ratio, generator, **self.mask_args)

    def embed_masked(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Patch embeddings with the mask token at the masked patches, then prefix (cls) tokens
        and position embedding: (B, prefix + N, D), the encoder's input."""
        enc = self.encoder
        x = enc.patch_embed(images)
        x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        if not self._is_beit:
            return enc._pos_embed(x)
        x = torch.cat([enc.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        return enc.pos_drop(x)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The encoder's blocks and final norm (plus ``token_norm`` where it has none)."""
        if self._is_beit:
            enc = self.encoder
            shared = enc.rel_pos_bias() if enc.rel_pos_bias is not None else None
            for block in enc.blocks:
                tokens = block(tokens, shared_rel_pos_bias=shared)
            tokens = enc.norm(tokens)
        else:
            tokens = super().encode_tokens(tokens)
        return self.token_norm(tokens) if self.token_norm is not None else tokens

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cpu_mask = self.make_mask(images.shape[0], generator)
        # The masked patches' positions among all B*N, found on the CPU (no GPU sync).
        masked = to_device(cpu_mask.flatten().nonzero().squeeze(1), images.device)
        mask = to_device(cpu_mask, images.device)
        targets = self.tokenize(images, masked)  # (M,) token ids or (M, p*p*C) pixels
        encoded = self.encode_tokens(self.embed_masked(images, mask))[:, self.encoder.num_prefix_tokens :]
        prediction = self.token_head(encoded.flatten(0, 1).index_select(0, masked))  # masked patches only
        loss, metrics = self.target_loss(prediction, targets)
        return {"loss": loss, **metrics, "mask_ratio": torch.tensor(float(cpu_mask.float().mean()))}
