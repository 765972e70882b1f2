"""``ViTPyramid``: a timm ViT turned into a 4-level feature pyramid for MMDetection / MMSegmentation.

The ViT (``self.vit``) is built by :func:`benchmark.models.create_vit` with
``dynamic_img_size=True``, so its position embeddings are interpolated to every input size.
Patch tokens after four blocks (``out_indices``) are reshaped to stride-16 maps and resampled as
in BEiT / XCiT detection: stride 4 = two 2x2 transposed convs (norm + GELU between), stride 8 =
one 2x2 transposed conv, stride 16 = identity, stride 32 = 2x2 max-pool.

Weights come from ``checkpoint`` (an ``mm_backbone.pth`` or an ``encoder.safetensors``, see
:mod:`benchmark.convert`) and are loaded in :meth:`ViTPyramid.init_weights` with exact key
accounting; the pyramid is never in a checkpoint and keeps its fresh initialisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule

from benchmark.convert import CheckpointError, fit_pos_embed, read_checkpoint, read_spec
from benchmark.models import ARCHS, create_vit

_SYNC_BN = ("SyncBN", "MMSyncBN", "SyncBatchNorm")


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


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def pyramid_norm_cfg(norm_cfg: dict[str, Any] | None) -> dict[str, Any]:
    """``norm_cfg`` (BN by default), with SyncBN replaced by BN outside torch.distributed."""
    cfg = dict(norm_cfg) if norm_cfg else dict(type="BN", requires_grad=True)
    if cfg.get("type") in _SYNC_BN and not _distributed():
        print_log(
            f"ViTPyramid: {cfg['type']} requested for the feature pyramid but torch.distributed is not "
            "initialised; using BN instead",
            logger="current",
            level=30,  # logging.WARNING
        )
        cfg["type"] = "BN"
    return cfg


class ViTPyramid(BaseModule):
    """A timm ViT with a BEiT/XCiT-style multi-scale pyramid: features at strides 4, 8, 16, 32.

    Args:
        arch: a name from :data:`benchmark.models.ARCHS`; ``None`` takes it from ``checkpoint``.
        img_size: the pre-training image size (the size of the stored position embeddings);
            ``None`` takes it from ``checkpoint`` (224 without one).
        out_indices: the four blocks whose patch tokens feed the pyramid; default: evenly
            spaced, ending at the last block.
        drop_path_rate: stochastic depth of the ViT.
        norm_cfg: mmcv norm config between the two stride-4 transposed convs (BN by default;
            SyncBN becomes BN when torch.distributed is not initialised).
        checkpoint: an ``mm_backbone.pth``, an ``encoder.safetensors`` or ``None`` (random init),
            loaded by :meth:`init_weights`.
        init_cfg: mmengine init config of this module (the ViT ignores it; use ``checkpoint``).
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
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.checkpoint = str(checkpoint) if checkpoint else None
        if arch is None or img_size is None:
            spec = checkpoint_spec(self.checkpoint) if self.checkpoint else {}
            if arch is None:
                if "arch" not in spec:
                    raise ValueError("ViTPyramid: arch=None needs a checkpoint that names its arch")
                arch = spec["arch"]
            if img_size is None:
                img_size = int(spec.get("img_size", 224))
        if arch not in ARCHS:
            raise ValueError(f"ViTPyramid: unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
        if not arch.startswith("vit-"):
            raise ValueError(f"ViTPyramid: {arch} (timm's Beit, with relative position bias) is not supported "
                             "yet; use a vit-* size")
        self.arch = arch
        self.img_size = int(img_size)
        self.vit = create_vit(
            arch, self.img_size, num_classes=0, drop_path_rate=drop_path_rate, dynamic_img_size=True
        )
        depth = len(self.vit.blocks)
        indices = tuple(int(i) for i in (out_indices if out_indices is not None else default_out_indices(depth)))
        if len(indices) != 4 or any(not 0 <= i < depth for i in indices) or list(indices) != sorted(set(indices)):
            raise ValueError(f"ViTPyramid: out_indices must be 4 increasing block indices in [0, {depth}), got {indices}")
        self.out_indices = indices
        self.embed_dim = int(self.vit.embed_dim)
        self.patch_size = int(self.vit.patch_embed.patch_size[0])
        if self.patch_size != 16:
            raise ValueError(f"ViTPyramid expects 16x16 patches, {arch} has {self.patch_size}")
        self.num_prefix_tokens = int(getattr(self.vit, "num_prefix_tokens", 1))

        dim = self.embed_dim
        norm = pyramid_norm_cfg(norm_cfg)
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2),
            build_norm_layer(norm, dim)[1],
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2),
        )
        self.fpn2 = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

    # ------------------------------------------------------------------ forward

    def forward_vit(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Patch tokens after each block in ``out_indices`` as ``(B, C, ceil(H/16), ceil(W/16))`` maps.

        Inputs whose sides are not multiples of 16 are zero-padded on the right and bottom.
        """
        b, _, h, w = x.shape
        pad_h, pad_w = (-h) % self.patch_size, (-w) % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        vit = self.vit
        t = vit.patch_embed(x)  # (B, h, w, C): timm keeps the grid when dynamic_img_size=True
        gh, gw = t.shape[1], t.shape[2]
        t = vit._pos_embed(t)
        t = vit.patch_drop(t)
        t = vit.norm_pre(t)
        feats: list[torch.Tensor] = []
        for i, block in enumerate(vit.blocks):
            t = block(t)
            if i in self.out_indices:
                patches = t[:, self.num_prefix_tokens:]
                feats.append(patches.transpose(1, 2).reshape(b, self.embed_dim, gh, gw).contiguous())
                if i == self.out_indices[-1]:
                    break
        return feats

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
        """Loads ViT weights with exact key accounting; raises :class:`CheckpointError` on any mismatch."""
        state, spec, fmt = read_checkpoint(path)
        if spec.get("arch") != self.arch:
            raise CheckpointError(f"{path}: checkpoint arch {spec.get('arch')!r} does not match backbone arch {self.arch!r}")
        own = self.vit.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: ViT keys do not match {self.arch}: missing {missing or 'none'}, unexpected {unexpected or 'none'}"
            )
        state = dict(state)
        note = fit_pos_embed(state, self.vit)
        note = f"; {note}" if note else ""
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
