"""MAE: masked autoencoders (He et al., 2021), beyond the paper: the best-known denoising autoencoder.

Per image, ``mask_ratio`` of the patches are masked at random (argsort of uniform noise, one
permutation per sample). The encoder (a timm VisionTransformer) sees the visible patches only,
plus its prefix (cls) tokens. A light decoder embeds the encoded tokens, appends a shared mask
token for every masked patch, unshuffles the sequence back to the patch order, adds its own fixed
2-D sine-cosine position embedding and runs a few transformer blocks; a linear layer predicts each
patch's pixels. The loss is the mean squared error on the masked patches only.

Pixel targets are the patches of the *normalised* image the encoder sees (ImageNet mean/std), not
of the raw [0, 1] image as in MAE. With ``norm_pix_loss`` (MAE's default, kept here) each target
patch is further standardised by its own mean and variance (over all its pixels and channels), so
what remains of that difference is only the per-channel affine map of the input normalisation.

Differences from the MAE release: the encoder keeps timm's learned position embedding (MAE
freezes a sine-cosine one), and the encoder's own initialisation is timm's.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

from benchmark.methods.base import DENOISING, PretrainMethod, gather_tokens, init_new_weights, register_method
from benchmark.methods.losses import masked_mse
from benchmark.methods.masking import RandomMask, random_mask
from benchmark.methods.tokenizers import pixel_patches
from benchmark.training.config import at_least, in_unit, positive


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (grid_h * grid_w, dim), row-major patch order,
    as MAE's ``get_2d_sincos_pos_embed`` (which builds its grid with ``np.meshgrid(w, h)``): the
    first half of the channels encodes the column, the second half the row; each half is
    [sin, cos] of the position times 1 / 10000^(k / (dim / 4))."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine embedding needs a dimension divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                                indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angle = pos.flatten()[:, None] * omega[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


@register_method
class MAE(PretrainMethod):
    name = "mae"
    family = DENOISING
    RULES = {
        "mask_ratio": in_unit(one=False), "decoder_dim": at_least(1), "decoder_depth": at_least(0),
        "decoder_heads": at_least(1), "decoder_mlp_ratio": positive(),
    }

    def __init__(
        self,
        encoder: nn.Module,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        norm_pix_loss: bool = True,
        decoder_mlp_ratio: float = 4.0,
    ) -> None:
        if not hasattr(encoder, "_pos_embed") or not hasattr(encoder, "norm_pre"):
            raise TypeError(
                f"MAE drops the masked patches before the encoder, which needs timm's VisionTransformer "
                f"(absolute position embeddings); got {type(encoder).__name__}"
            )
        super().__init__(encoder)
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        random_mask(1, self.num_patches, self.mask_ratio, torch.Generator())  # validates mask_ratio early
        dim = encoder.embed_dim
        n_prefix = encoder.num_prefix_tokens
        grid_h, grid_w = (int(s) for s in encoder.patch_embed.grid_size)
        in_chans = int(encoder.patch_embed.proj.in_channels)

        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # Fixed (not learned) as in MAE; zeros at the prefix (cls) positions. Rebuilt, not saved.
        pos = torch.cat([torch.zeros(n_prefix, decoder_dim), sincos_pos_embed_2d(decoder_dim, grid_h, grid_w)])
        self.register_buffer("decoder_pos_embed", pos.unsqueeze(0), persistent=False)
        self.decoder = nn.Sequential(*[
            Block(decoder_dim, decoder_heads, mlp_ratio=decoder_mlp_ratio, qkv_bias=True)  # timm LayerNorm, eps 1e-6
            for _ in range(decoder_depth)
        ])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, in_chans * self.patch_size**2)
        self._init_new_parts()

    def _init_new_parts(self) -> None:
        trunc_normal_(self.mask_token, std=0.02)  # MAE: normal(std=0.02)
        for module in [self.decoder_embed, self.decoder, self.decoder_norm, self.decoder_pred]:
            module.apply(partial(init_new_weights, linear="xavier"))  # as MAE's decoder

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"mask_token"}

    @torch.no_grad()
    def pixel_targets(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, p*p*C): the patches of the (normalised) input images, each
        standardised by its own mean and (unbiased) variance when ``norm_pix_loss``."""
        return pixel_patches(images, self.patch_size, normalize=self.norm_pix_loss)

    def encode_visible(self, images: torch.Tensor, masking: RandomMask) -> torch.Tensor:
        """The encoder on the prefix tokens and the visible patches: (B, prefix + K, D)."""
        tokens = self.embed_patches(images)
        n_prefix = self.encoder.num_prefix_tokens
        prefix, patches = tokens[:, :n_prefix], tokens[:, n_prefix:]
        return self.encode_tokens(torch.cat([prefix, gather_tokens(patches, masking.visible)], dim=1))

    def restore_sequence(self, visible: torch.Tensor, masking: RandomMask) -> torch.Tensor:
        """Visible tokens in shuffled order (B, K, Dd) -> the full sequence in patch order (B, N, Dd),
        with the mask token at every masked patch."""
        b, k, d = visible.shape
        filler = self.mask_token.to(visible.dtype).expand(b, masking.order.shape[1] - k, d)
        return gather_tokens(torch.cat([visible, filler], dim=1), masking.restore)

    def decode(self, encoded: torch.Tensor, masking: RandomMask) -> torch.Tensor:
        """Encoder output (B, prefix + K, D) -> pixel predictions for every patch (B, N, p*p*C)."""
        n_prefix = self.encoder.num_prefix_tokens
        x = self.decoder_embed(encoded)
        x = torch.cat([x[:, :n_prefix], self.restore_sequence(x[:, n_prefix:], masking)], dim=1)
        x = self.decoder_norm(self.decoder(x + self.decoder_pos_embed))
        return self.decoder_pred(x[:, n_prefix:])

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        masking = random_mask(images.shape[0], self.num_patches, self.mask_ratio, generator).to(images.device)
        pred = self.decode(self.encode_visible(images, masking), masking)
        target = self.pixel_targets(images)
        loss = masked_mse(pred, target, masking.mask)
        with torch.no_grad():  # reconstruction of the patches the encoder saw: a diagnostic only
            visible_mse = masked_mse(pred.detach(), target, ~masking.mask)
        return {"loss": loss, "visible_mse": visible_mse}

