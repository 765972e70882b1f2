"""``ViTPyramid``: a timm ViT turned into a 4-level feature pyramid for MMDetection / MMSegmentation.

The ViT (``self.vit``) is built by :func:`benchmark.models.vit.create_vit` with
``dynamic_img_size=True``, so its position embeddings are interpolated to every input size.
Patch tokens after four blocks (``out_indices``) are reshaped to maps at the patch stride and
resampled as in BEiT / XCiT detection; with 16x16 patches: stride 4 = two 2x2 transposed convs
(norm + GELU between), stride 8 = one 2x2 transposed conv, stride 16 = identity, stride 32 = 2x2
max-pool. Other power-of-two patches (the miniature's 8x8) take as many transposed convs or as large
a max-pool as their stride needs (:func:`resampler`).

A beit-* arch becomes timm's ``Beit`` with one relative position bias table per block (BEiT's
detection / segmentation layout), whose window is the patch grid of ``input_size``: a checkpoint's
shared table is copied to every block and resized to that window when loading. An input whose grid
fits in the window reads the central part of each table (the same relative offsets, exactly); a
larger one resizes the tables on the fly (:func:`benchmark.models.checkpoints.geometry.resize_rel_pos_table`).

Weights come from ``checkpoint`` (an ``mm_backbone.pth`` or an ``encoder.safetensors``, see
:mod:`benchmark.models.checkpoints`) and are loaded in :meth:`ViTPyramid.init_weights` with exact key
accounting; the pyramid is never in a checkpoint and keeps its fresh initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import resample_abs_pos_embed

from benchmark.downstream.mm.processes import distributed, is_sync_bn
from benchmark.errors import CheckpointError
from benchmark.models.checkpoints.export import check_keys, read_checkpoint, read_spec
from benchmark.models.checkpoints.geometry import adapt_state_dict, resize_rel_pos_table
from benchmark.models.vit import ARCHS, PER_BLOCK_REL_POS, create_vit, is_beit, pool_kwargs


def checkpoint_spec(path: str | Path) -> dict[str, Any]:
    """The model spec (``{"arch", "img_size"}``) stored in a checkpoint of either format."""
    return read_spec(path)[0]


def vit_embed_dim(arch: str) -> int:
    """The token width of a named ViT, without allocating its weights."""
    with torch.device("meta"):
        return int(create_vit(arch, 224, num_classes=0).embed_dim)


def default_out_indices(depth: int) -> tuple[int, int, int, int]:
    """Four evenly spaced block indices ending at the last block (12 blocks -> 2, 5, 8, 11)."""
    return tuple(max(0, round(depth * (i + 1) / 4) - 1) for i in range(4))  # type: ignore[return-value]


def rel_pos_index(grid: tuple[int, int], window: tuple[int, int]) -> torch.Tensor:
    """``(gh*gw + 1, gh*gw + 1)`` rows of a BEiT relative position table of ``window`` for the tokens
    (cls first) of a ``grid`` that fits in it: timm's ``gen_relative_position_index`` when the two are
    equal, the central offsets of the table otherwise."""
    (gh, gw), (wh, ww) = grid, window
    if gh > wh or gw > ww:
        raise ValueError(f"grid {grid} does not fit in window {window}")
    coords = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    num = (2 * wh - 1) * (2 * ww - 1) + 3
    index = torch.empty(gh * gw + 1, gh * gw + 1, dtype=torch.long)
    index[1:, 1:] = (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)
    index[0, :] = num - 3
    index[:, 0] = num - 2
    index[0, 0] = num - 1
    return index


def pyramid_norm_cfg(norm_cfg: dict[str, Any] | None) -> dict[str, Any]:
    """``norm_cfg`` (BN by default), with SyncBN replaced by BN outside torch.distributed."""
    cfg = dict(norm_cfg) if norm_cfg else dict(type="BN", requires_grad=True)
    if is_sync_bn(cfg.get("type")) and not distributed():
        print_log(
            f"ViTPyramid: {cfg['type']} requested for the feature pyramid but torch.distributed is not "
            "initialised; using BN instead",
            logger="current",
            level=30,  # logging.WARNING
        )
        cfg["type"] = "BN"
    return cfg


STRIDES = (4, 8, 16, 32)         # the pyramid's levels, in input pixels
PATCH_SIZES = (4, 8, 16, 32)     # patch strides that reach every level by factors of two


def resampler(dim: int, patch: int, stride: int, norm_cfg: dict[str, Any]) -> nn.Module:
    """From the patch grid (stride ``patch``) to ``stride``: 2x2 transposed convs up (norm + GELU
    between them, as BEiT's stride 4 from 16), the identity, or a max-pool down. With 16x16
    patches these are BEiT's modules, so their state-dict keys are too."""
    if stride >= patch:
        return nn.Identity() if stride == patch else nn.MaxPool2d(kernel_size=stride // patch, stride=stride // patch)
    layers: list[nn.Module] = [nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)]
    for _ in range(int(math.log2(patch // stride)) - 1):
        layers += [build_norm_layer(norm_cfg, dim)[1], nn.GELU(), nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)]
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


class ViTPyramid(BaseModule):
    """A timm ViT with a BEiT/XCiT-style multi-scale pyramid: features at strides 4, 8, 16, 32.

    Args:
        arch: a name from :data:`benchmark.models.vit.ARCHS`; ``None`` takes it from ``checkpoint``.
        img_size: the pre-training image size (the size of the stored position embeddings);
            ``None`` takes it from ``checkpoint`` (224 without one).
        out_indices: the four blocks whose patch tokens feed the pyramid; default: evenly
            spaced, ending at the last block.
        drop_path_rate: stochastic depth of the ViT.
        norm_cfg: mmcv norm config between two transposed convs (stride 4 of 16x16 patches; BN by default;
            SyncBN becomes BN when torch.distributed is not initialised).
        checkpoint: an ``mm_backbone.pth``, an ``encoder.safetensors`` or ``None`` (random init),
            loaded by :meth:`init_weights`.
        init_cfg: mmengine init config of this module (the ViT ignores it; use ``checkpoint``).
        input_size: beit-* only: the input size (pixels, int or (h, w)) whose 16-px grid is the window
            of the per-block relative position tables (the training crop, e.g. 512 for ADE20k);
            default ``img_size``. vit-* ignore it (their position embedding follows every input).
    """

    def __init__(
        self,
        arch: str | None = "vit-smoke",
        img_size: int | None = None,
        out_indices: Sequence[int] | None = None,
        drop_path_rate: float = 0.0,
        norm_cfg: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        init_cfg: dict[str, Any] | list[dict[str, Any]] | None = None,
        input_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.checkpoint = str(checkpoint) if checkpoint else None
        spec = checkpoint_spec(self.checkpoint) if self.checkpoint else {}
        pooling = pool_kwargs(spec)  # a checkpoint's pooling (MAE's fine-tuned fc_norm): its keys, unused here
        if arch is None or img_size is None:
            if arch is None:
                if "arch" not in spec:
                    raise ValueError("ViTPyramid: arch=None needs a checkpoint that names its arch")
                arch = spec["arch"]
            if img_size is None:
                img_size = int(spec.get("img_size", 224))
        if arch not in ARCHS:
            raise ValueError(f"ViTPyramid: unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
        self.arch = arch
        self.img_size = int(img_size)
        self.is_beit = is_beit(arch)
        if self.is_beit:
            size = self.img_size if input_size is None else input_size
            size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(v) for v in size)
            if len(size) != 2 or min(size) < 16:
                raise ValueError(f"ViTPyramid: input_size must be a size or (h, w) of at least 16 px, got {input_size}")
            self.input_size: tuple[int, int] | None = size
            self.vit = create_vit(arch, size, num_classes=0, drop_path_rate=drop_path_rate, **PER_BLOCK_REL_POS, **pooling)
        else:
            self.input_size = None
            self.vit = create_vit(
                arch, self.img_size, num_classes=0, drop_path_rate=drop_path_rate, dynamic_img_size=True, **pooling
            )
        self._rel_pos_index: dict[tuple[Any, ...], torch.Tensor] = {}
        depth = len(self.vit.blocks)
        indices = tuple(int(i) for i in (out_indices if out_indices is not None else default_out_indices(depth)))
        if len(indices) != 4 or any(not 0 <= i < depth for i in indices) or list(indices) != sorted(set(indices)):
            raise ValueError(f"ViTPyramid: out_indices must be 4 increasing block indices in [0, {depth}), got {indices}")
        self.out_indices = indices
        self.embed_dim = int(self.vit.embed_dim)
        self.patch_size = int(self.vit.patch_embed.patch_size[0])
        if self.patch_size not in PATCH_SIZES:
            raise ValueError(f"ViTPyramid expects square patches of {', '.join(map(str, PATCH_SIZES))} px, "
                             f"{arch} has {self.patch_size}")
        self.num_prefix_tokens = int(getattr(self.vit, "num_prefix_tokens", 1))

        norm = pyramid_norm_cfg(norm_cfg)
        self.fpn1, self.fpn2, self.fpn3, self.fpn4 = (resampler(self.embed_dim, self.patch_size, stride, norm)
                                                      for stride in STRIDES)

    # ------------------------------------------------------------------ forward

    def forward_vit(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Patch tokens after each block in ``out_indices`` as ``(B, C, ceil(H/p), ceil(W/p))`` maps
        (``p`` the patch size).

        Inputs whose sides are not multiples of ``p`` are zero-padded on the right and bottom.
        """
        b, _, h, w = x.shape
        pad_h, pad_w = (-h) % self.patch_size, (-w) % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        vit = self.vit
        if self.is_beit:
            t = vit.patch_embed.proj(x)  # timm's PatchEmbed insists on its img_size; the conv does not
            gh, gw = t.shape[-2], t.shape[-1]
            t = vit.patch_embed.norm(t.flatten(2).transpose(1, 2))
            t = torch.cat([vit.cls_token.expand(b, -1, -1).to(t.dtype), t], dim=1)
            if vit.pos_embed is not None:
                t = t + resample_abs_pos_embed(vit.pos_embed, [gh, gw], num_prefix_tokens=1)
            t = vit.pos_drop(t)
        else:
            t = vit.patch_embed(x)  # (B, h, w, C): timm keeps the grid when dynamic_img_size=True
            gh, gw = t.shape[1], t.shape[2]
            t = vit._pos_embed(t)
            t = vit.patch_drop(t)
            t = vit.norm_pre(t)
        feats: list[torch.Tensor] = []
        for i, block in enumerate(vit.blocks):
            t = self._beit_block(block, t, self.rel_pos_bias(block.attn, gh, gw)) if self.is_beit else block(t)
            if i in self.out_indices:
                patches = t[:, self.num_prefix_tokens:]
                feats.append(patches.transpose(1, 2).reshape(b, self.embed_dim, gh, gw).contiguous())
                if i == self.out_indices[-1]:
                    break
        return feats

    def rel_pos_bias(self, attn: Any, gh: int, gw: int) -> torch.Tensor:
        """``(1, heads, N+1, N+1)`` relative position bias of a Beit attention for a ``gh`` x ``gw`` grid:
        the central offsets of its table, resized first when the grid exceeds the table's window."""
        table = attn.relative_position_bias_table
        window = (int(attn.window_size[0]), int(attn.window_size[1]))
        if gh > window[0] or gw > window[1]:
            grown = (max(gh, window[0]), max(gw, window[1]))
            table = resize_rel_pos_table(table, window, grown)
            window = grown
        key = (gh, gw, window, table.device)
        index = self._rel_pos_index.get(key)
        if index is None:
            index = self._rel_pos_index[key] = rel_pos_index((gh, gw), window).to(table.device)
        n = gh * gw + 1
        return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)

    @staticmethod
    def _beit_block(block: Any, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """timm's Beit ``Block.forward`` with the relative position bias given (any grid)."""
        attn = block.attn
        b, n, _ = x.shape
        h = block.norm1(x)
        qkv_bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias)) if attn.q_bias is not None else None
        qkv = F.linear(h, attn.qkv.weight, qkv_bias)
        q, k, v = qkv.reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=attn.attn_drop.p if attn.training else 0.0
        )
        y = attn.proj_drop(attn.proj(y.transpose(1, 2).reshape(b, n, -1)))
        x = x + block.drop_path1(y if block.gamma_1 is None else block.gamma_1 * y)
        y = block.mlp(block.norm2(x))
        return x + block.drop_path2(y if block.gamma_2 is None else block.gamma_2 * y)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Four maps with ``embed_dim`` channels at strides 4, 8, 16 and 32 of the input."""
        feats = self.forward_vit(x)
        ops = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return tuple(op(f) for op, f in zip(ops, feats))

    # ------------------------------------------------------------------ weights

    def init_weights(self) -> None:
        """Fresh pyramid weights, then the ViT from ``checkpoint`` (if any); never re-run afterwards.

        timm's ``VisionTransformer.init_weights`` is deliberately not called: mmengine's default
        ``BaseModule.init_weights`` would call it on ``self.vit`` and overwrite loaded weights.
        """
        if self._is_init:
            return
        if self.init_cfg:
            super().init_weights()  # user init_cfg for this module; ViT weights are loaded after it
        for module in (self.fpn1, self.fpn2):
            for m in module.modules() if isinstance(module, nn.Sequential) else [module]:
                if isinstance(m, nn.ConvTranspose2d):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.reset_parameters()
        if self.checkpoint:
            self.load_checkpoint(self.checkpoint)
        else:
            print_log(f"ViTPyramid: {self.arch} (img_size {self.img_size}) randomly initialised, no checkpoint",
                      logger="current")
        self._is_init = True

    def load_checkpoint(self, path: str | Path) -> None:
        """Loads ViT weights with exact key accounting; raises :class:`CheckpointError` on any mismatch.

        The checkpoint must match its own spec exactly (:func:`benchmark.models.checkpoints.export.check_keys`); it is then
        fitted to this backbone (:func:`benchmark.models.checkpoints.geometry.adapt_state_dict`: position embedding
        resampled, a shared BEiT table copied to every block, tables resized to the window) and must
        match it exactly too.
        """
        state, spec, fmt = read_checkpoint(path)
        if spec.get("arch") != self.arch:
            raise CheckpointError(f"{path}: checkpoint arch {spec.get('arch')!r} does not match backbone arch {self.arch!r}")
        check_keys(state, spec, str(path))
        state = dict(state)
        notes = adapt_state_dict(state, self.vit)
        note = "".join(f"; {n}" for n in notes)
        own = self.vit.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: ViT keys do not match {self.arch}: missing {missing or 'none'}, unexpected {unexpected or 'none'}"
            )
        bad = sorted(k for k in own if state[k].shape != own[k].shape)
        if bad:
            raise CheckpointError(
                f"{path}: shape mismatch for {', '.join(f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in bad)}"
            )
        result = self.vit.load_state_dict(state, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        print_log(
            f"ViTPyramid: loaded {len(state)} ViT tensors of {spec.get('arch')} (pre-trained at "
            f"{spec.get('img_size')}) from {fmt} {path}: 0 missing, 0 unexpected{note}",
            logger="current",
        )
