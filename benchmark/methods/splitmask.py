"""SplitMask: split, inpaint, match (El-Nouby et al., 2021).

Per image, the patches are split at random into two disjoint subsets A and B (each holding
``keep_ratio`` of the patches: 0.5 by default, 0.25 for small data sets). The shared ViT encoder
sees each subset alone, without mask tokens; both subsets go through it in one batched pass.
A shallow decoder takes one subset's encoded patches plus mask tokens at the other subset's
positions and predicts the other subset's visual tokens (cross-entropy, as in BEiT). The decoder
outputs of each branch are average-pooled into a global descriptor, and the two descriptors of
an image are matched with InfoNCE against the other images of the batch.

    loss = CE(A -> tokens of B) / 2 + CE(B -> tokens of A) / 2 + contrastive_weight * InfoNCE
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

from benchmark.methods.base import DENOISING, PretrainMethod, gather_tokens, init_new_weights, register_method
from benchmark.methods.losses import info_nce
from benchmark.methods.masking import VISUAL_TARGETS, VisualTokenTargets
from benchmark.training.config import Rule, at_least, one_of, optional, positive
from benchmark.utils.device import to_device


def split_patches(batch: int, num_patches: int, keep: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random subsets of ``keep`` patch indices each, per sample: (B, keep) twice."""
    if not 0 < keep <= num_patches // 2:
        raise ValueError(f"each subset must hold between 1 and {num_patches // 2} of {num_patches} patches, got {keep}")
    order = torch.rand(batch, num_patches, generator=generator).argsort(dim=1)
    return order[:, :keep], order[:, keep : 2 * keep]


@register_method
class SplitMask(VisualTokenTargets, PretrainMethod):
    name = "splitmask"
    family = DENOISING
    small_set_args = {"keep_ratio": 0.25}  # 75% masking on the small sets (known)
    RULES = {
        "vocab_size": at_least(2), "tokenizer": one_of(VISUAL_TARGETS),
        "keep_ratio": Rule(lambda v: 0 < v <= 0.5, "in (0, 0.5] (each of the two disjoint subsets holds that share)"),
        "decoder_depth": at_least(0), "decoder_dim": optional(at_least(1)), "decoder_heads": optional(at_least(1)),
        "temperature": positive(), "contrastive_weight": at_least(0), "tokenizer_seed": at_least(0),
    }

    def __init__(
        self,
        encoder: nn.Module,
        vocab_size: int = 8192,
        tokenizer: str = "random-patches",
        keep_ratio: float = 0.5,
        decoder_depth: int = 2,
        decoder_dim: int | None = None,
        decoder_heads: int | None = None,
        temperature: float = 0.2,
        contrastive_weight: float = 1.0,
        tokenizer_seed: int = 0,
        tokenizer_weights: str | None = None,  # the DALL-E dVAE encoder, as safetensors
    ) -> None:
        super().__init__(encoder)
        dim = encoder.embed_dim
        decoder_dim = decoder_dim or dim
        decoder_heads = decoder_heads or encoder.blocks[0].attn.num_heads
        self.keep = max(1, int(round(self.num_patches * keep_ratio)))
        self.init_visual_tokens(vocab_size, tokenizer, tokenizer_seed, tokenizer_weights)
        self.temperature = temperature
        self.contrastive_weight = contrastive_weight
        split_patches(1, self.num_patches, self.keep, torch.Generator())  # validates keep_ratio early

        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, decoder_dim))
        self.decoder = nn.Sequential(*[Block(decoder_dim, decoder_heads, qkv_bias=True) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.token_head = nn.Linear(decoder_dim, self.target_dim)
        self._init_new_parts()

    def _init_new_parts(self) -> None:
        trunc_normal_(self.mask_token, std=0.02)
        trunc_normal_(self.decoder_pos_embed, std=0.02)
        for module in [self.decoder_embed, self.decoder, self.decoder_norm, self.token_head]:
            module.apply(init_new_weights)

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"mask_token", "decoder_pos_embed"}

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        b = images.shape[0]
        cpu_a, cpu_b = split_patches(b, self.num_patches, self.keep, generator)
        idx_a, idx_b = to_device(cpu_a, images.device), to_device(cpu_b, images.device)
        # Branch A predicts B's patches and branch B A's: their positions among all B*N patches,
        # in the order of the predictions, so that only those patches are tokenised.
        rows = torch.arange(b).unsqueeze(1) * self.num_patches
        target_index = to_device(torch.cat([rows + cpu_b, rows + cpu_a]).flatten(), images.device)
        target = self.tokenize(images, target_index)  # (2B*keep,) token ids or (2B*keep, p*p*C) pixels

        tokens = self.embed_patches(images)
        n_prefix = self.encoder.num_prefix_tokens
        prefix, patches = tokens[:, :n_prefix], tokens[:, n_prefix:]
        # One batched encoder pass over both subsets: rows [0, B) are A, rows [B, 2B) are B.
        visible = torch.cat([idx_a, idx_b])
        hidden = torch.cat([prefix, prefix]) if n_prefix else prefix.new_zeros(2 * b, 0, prefix.shape[-1])
        encoded = self.encode_tokens(torch.cat([hidden, gather_tokens(torch.cat([patches, patches]), visible)], dim=1))
        encoded = encoded[:, n_prefix:]

        # Each branch decodes its own encoded patches plus mask tokens at the other's positions.
        hidden_idx = torch.cat([idx_b, idx_a])
        dec_pos = self.decoder_pos_embed.expand(2 * b, -1, -1)
        seen = self.decoder_embed(encoded) + gather_tokens(dec_pos, visible)
        masked = self.mask_token + gather_tokens(dec_pos, hidden_idx)
        decoded = self.decoder_norm(self.decoder(torch.cat([seen, masked], dim=1)))

        prediction = self.token_head(decoded[:, self.keep :])  # predictions for the other subset
        mim, metrics = self.target_loss(prediction.flatten(0, 1), target)
        descriptor = decoded.mean(dim=1)
        nce = info_nce(descriptor[:b], descriptor[b:], self.temperature)
        return {"loss": mim + self.contrastive_weight * nce, "mim": mim.detach(), "nce": nce.detach(), **metrics}

