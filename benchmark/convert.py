"""Checkpoint formats and the conversions between them.

- *encoder export* (``encoder.safetensors``): a timm VisionTransformer state dict without its
  classifier head, as safetensors, with the model spec in the file's metadata. timm's ViT of the
  same spec loads it with ``strict=True`` (``num_classes=0``).
- *mm backbone* (``mm_backbone.pth``): ``{"state_dict": {"backbone.vit.<timm key>": tensor},
  "meta": {"model": spec, "source": path}}``: tensors and plain values only, so that
  ``torch.load(weights_only=True)`` (torch >= 2.6's default, used by mmengine) reads it.
  The same file serves MMDetection and MMSegmentation: both use
  :class:`benchmark.mm.backbone.ViTPyramid`, whose ViT lives under ``backbone.vit``.

Usage: ``python -m benchmark.convert ENCODER.safetensors OUT.pth``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from benchmark.utils.io import atomic_path, torch_save

ENCODER_FORMAT = "sslbench.encoder/1"
MM_PREFIX = "backbone.vit."



class CheckpointError(ValueError):
    """A checkpoint that is not in the expected format or does not match the model."""


def encoder_state_dict(vit: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a timm ViT without its classifier head, contiguous and detached."""
    return {
        k: v.detach().contiguous().cpu()
        for k, v in vit.state_dict().items()
        if not k.startswith("head.")
    }


def save_encoder(vit: nn.Module, spec: dict[str, Any], path: str | Path) -> Path:
    """Writes the encoder export of ``vit`` (built from ``spec``) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(encoder_state_dict(vit), str(tmp), metadata={"format": ENCODER_FORMAT, "model": json.dumps(spec)})
    return path


def load_encoder(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads an encoder export: (state dict, model spec)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a safetensors file ({err})") from None
    if meta.get("format") != ENCODER_FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} is not {ENCODER_FORMAT!r}")
    return state, json.loads(meta["model"])


def to_mm(encoder_path: str | Path, out_path: str | Path) -> Path:
    """Converts an encoder export into the MMDetection/MMSegmentation backbone checkpoint."""
    state, spec = load_encoder(encoder_path)
    torch_save(
        {
            "state_dict": {MM_PREFIX + k: v for k, v in state.items()},
            "meta": {"model": spec, "source": str(encoder_path)},
        },
        out_path,
    )
    return Path(out_path)


def load_mm(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads an mm backbone checkpoint: (timm-keyed ViT state dict, model spec)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model" not in ckpt.get("meta", {}):
        raise CheckpointError(f"{path}: not an mm backbone checkpoint (expected 'state_dict' and 'meta.model')")
    state = {k[len(MM_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(MM_PREFIX)}
    return state, ckpt["meta"]["model"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.convert", description=__doc__.splitlines()[0])
    parser.add_argument("encoder", help="an encoder export (.safetensors)")
    parser.add_argument("out", help="where to write the mm backbone checkpoint (.pth)")
    args = parser.parse_args(argv)
    try:
        to_mm(args.encoder, args.out)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
