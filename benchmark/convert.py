"""Checkpoint formats and the conversions between them.

- *encoder export* (``encoder.safetensors``): a timm VisionTransformer state dict without its
  classifier head, as safetensors, with the model spec in the file's metadata. timm's ViT of the
  same spec loads it with ``strict=True`` (``num_classes=0``).
- *mm backbone* (``mm_backbone.pth``): ``{"state_dict": {"backbone.vit.<timm key>": tensor},
  "meta": {"model": spec, "source": path}}``: tensors and plain values only, so that
  ``torch.load(weights_only=True)`` (torch >= 2.6's default, used by mmengine) reads it.
  The same file serves MMDetection and MMSegmentation: both use
  :class:`benchmark.mm.backbone.ViTPyramid`, whose ViT lives under ``backbone.vit``.

:func:`read_checkpoint` reads either format, recognised by content; :func:`read_spec` reads
only a checkpoint's model spec and format, without its tensors.

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
from timm.layers import resample_abs_pos_embed

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


def load_encoder(path: str | Path, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads an encoder export: (state dict, model spec). ``tensors=False`` reads the header only
    (the state dict comes back empty)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()} if tensors else {}
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


def checkpoint_format(path: str | Path) -> str:
    """``"encoder.safetensors"`` or ``"mm_backbone.pth"``, recognised from the file's first bytes
    (not its name); :class:`CheckpointError` for a missing file or anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:2] == b"PK":  # torch.save writes a zip archive
        return "mm_backbone.pth"
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        return "encoder.safetensors"
    raise CheckpointError(
        f"{path}: unknown checkpoint format (expected an encoder export .safetensors "
        "or an mm backbone checkpoint .pth)"
    )


def _load_mm(path: Path, mmap: bool) -> dict[str, Any]:
    """An mm backbone checkpoint, checked for ``state_dict`` and ``meta.model``; with ``mmap``
    the tensors stay on disk until touched."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # unpickling / zip errors of many types
        raise CheckpointError(f"{path}: not a weights-only mm backbone checkpoint ({err})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not an mm backbone checkpoint (expected a 'state_dict')")
    meta = ckpt.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{path}: not an mm backbone checkpoint (expected 'meta.model', the model spec)")
    return ckpt


def read_spec(path: str | Path) -> tuple[dict[str, Any], str]:
    """(model spec, format) of a checkpoint of either format, without reading its tensors."""
    fmt = checkpoint_format(path)
    if fmt == "encoder.safetensors":
        return load_encoder(path, tensors=False)[1], fmt
    return _load_mm(Path(path), mmap=True)["meta"]["model"], fmt


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Reads an mm backbone checkpoint or an encoder export: (timm-keyed state, model spec, format).

    The format is recognised from the file's content, not its name. Keys of an mm backbone
    checkpoint that lie outside ``backbone.vit.`` are kept under their full name, so that the
    caller reports them as unexpected instead of silently dropping them.
    """
    fmt = checkpoint_format(path)
    if fmt == "encoder.safetensors":
        state, spec = load_encoder(path)
        return state, spec, fmt
    ckpt = _load_mm(Path(path), mmap=False)
    state = {(k[len(MM_PREFIX):] if k.startswith(MM_PREFIX) else k): v for k, v in ckpt["state_dict"].items()}
    return state, ckpt["meta"]["model"], fmt


def fit_pos_embed(state: dict[str, torch.Tensor], vit: nn.Module) -> str:
    """Resamples ``state["pos_embed"]`` (in place, in torch) to ``vit``'s patch grid when the two
    differ; returns a note saying what was done ("" when nothing was)."""
    old = state.get("pos_embed")
    if old is None or old.shape == vit.pos_embed.shape:
        return ""
    n_prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
    old_grid = int(round((old.shape[1] - n_prefix) ** 0.5))
    new_grid = list(vit.patch_embed.grid_size)
    state["pos_embed"] = resample_abs_pos_embed(old, new_grid, [old_grid, old_grid], num_prefix_tokens=n_prefix)
    return f"pos_embed resampled {old_grid}x{old_grid} -> {new_grid[0]}x{new_grid[1]}"


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
