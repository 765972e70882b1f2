"""Our checkpoint formats and the conversions between them.

- *encoder export* (``encoder.safetensors``): a timm VisionTransformer state dict without its
  classifier head, as safetensors, with the model spec in the file's metadata. timm's ViT of the
  same spec loads it with ``strict=True`` (``num_classes=0``).
- *mm backbone* (``mm_backbone.pth``): ``{"state_dict": {"backbone.vit.<timm key>": tensor},
  "meta": {"model": spec, "source": path}}``: tensors and plain values only, so that
  ``torch.load(weights_only=True)`` (torch >= 2.6's default, used by mmengine) reads it.
  The same file serves MMDetection and MMSegmentation: both use
  :class:`benchmark.downstream.mm.backbone.ViTPyramid`, whose ViT lives under ``backbone.vit``.

:func:`read_checkpoint` reads either format, recognised by content; :func:`read_spec` reads
only a checkpoint's model spec and format, without its tensors. :func:`check_keys` holds a state
to the exact keys and shapes of its spec's model; :func:`check_export` holds an export to the
encoder it was written from.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open

from benchmark.errors import CheckpointError
from benchmark.models.checkpoints.geometry import adapt_state_dict
from benchmark.models.vit import ARCHS, create_vit, pool_kwargs, spec_kwargs
from benchmark.utils.io import load_failure, save_safetensors, torch_save

ENCODER_FORMAT = "sslbench.encoder/1"
MM_PREFIX = "backbone.vit."


def encoder_state_dict(vit: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a timm ViT without its classifier head, contiguous and detached."""
    return {
        k: v.detach().contiguous().cpu()
        for k, v in vit.state_dict().items()
        if not k.startswith("head.")
    }


def save_encoder(vit: nn.Module, spec: dict[str, Any], path: str | Path) -> Path:
    """Writes the encoder export of ``vit`` (built from ``spec``) atomically."""
    return save_encoder_state(encoder_state_dict(vit), spec, path)


def save_encoder_state(
    state: dict[str, torch.Tensor], spec: dict[str, Any], path: str | Path, source: str | None = None
) -> Path:
    """Writes a timm-keyed encoder state (no head) as an encoder export, atomically; ``source``
    (provenance, e.g. ``"dino:teacher:/ckpt/checkpoint.pth"``) goes into the file's metadata."""
    path = Path(path)
    meta = {"format": ENCODER_FORMAT, "model": json.dumps(spec)}
    if source:
        meta["source"] = source
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}  # no shared storage
    save_safetensors(tensors, path, metadata=meta)
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


def check_export(path: str | Path, encoder: Mapping[str, torch.Tensor] | None = None) -> None:
    """:class:`CheckpointError` unless ``path`` is a whole encoder export: it loads (a truncated
    file does not), holds the keys and shapes of its model spec and, given ``encoder`` (the state
    it was exported from), exactly those tensors."""
    state, spec = load_encoder(path)
    check_keys(state, spec, str(path))
    if encoder is not None:
        differ = sorted(k for k in state.keys() | encoder.keys()
                        if k not in state or k not in encoder or not torch.equal(state[k], encoder[k]))
        if differ:
            raise CheckpointError(f"{path}: {len(differ)} tensors differ from the encoder it was exported from "
                                  f"(first {differ[0]})")


def is_whole(path: str | Path) -> bool:
    """Whether a safetensors file is as long as its header says: a cheap test (no tensor is read) that
    tells a finished export from one cut short, for the driver's done test; :func:`check_export`
    checks the tensors themselves."""
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        return Path(path).stat().st_size == 8 + size + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


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
        raise CheckpointError(f"{path}: not a weights-only mm backbone checkpoint ({load_failure(err)})") from None
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


def checkpoint_pool_kwargs(path: str | Path | None) -> dict[str, Any]:
    """The :func:`create_vit` pooling arguments of the model a checkpoint belongs to (none for random init)."""
    return pool_kwargs(read_spec(path)[0]) if path else {}


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


# ---------------------------------------------------------------------------- key accounting


@functools.lru_cache(maxsize=32)
def _reference_shapes(arch: str, img_size: int, layout: str, pool: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the headless timm model of a spec, built on the meta device (no memory)."""
    spec = {"arch": arch, "img_size": img_size, "rel_pos_bias": layout, "global_pool": pool}
    with torch.device("meta"):
        model = create_vit(arch, img_size, num_classes=0, **spec_kwargs(spec))
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("head.")}


def reference_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The keys and shapes a checkpoint of model ``spec`` must hold, exactly (head excluded)."""
    if spec.get("arch") not in ARCHS:
        raise CheckpointError(f"model spec {spec}: unknown arch {spec.get('arch')!r}; expected one of {sorted(ARCHS)}")
    try:
        return dict(_reference_shapes(spec["arch"], int(spec.get("img_size", 224)), spec.get("rel_pos_bias", "shared"),
                                      spec.get("global_pool", "token")))
    except ValueError as err:
        raise CheckpointError(str(err)) from None


def check_keys(state: Mapping[str, torch.Tensor], spec: dict[str, Any], what: str) -> None:
    """:class:`CheckpointError` naming every missing key, unexpected key and shape mismatch of
    ``state`` against the timm model of ``spec``; ``what`` (a path, a source) starts the message."""
    ref = reference_shapes(spec)
    missing = sorted(set(ref) - set(state))
    unexpected = sorted(set(state) - set(ref))
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: keys do not match {spec['arch']}: missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )
    bad = [f"{k} {tuple(state[k].shape)} vs {ref[k]}" for k in sorted(ref) if tuple(state[k].shape) != ref[k]]
    if bad:
        raise CheckpointError(f"{what}: shape mismatch against {spec['arch']} at {spec.get('img_size')} px: {', '.join(bad)}")


def load_pretrained(model: nn.Module, checkpoint: str | Path, arch: str) -> None:
    """Loads an encoder export (or mm backbone checkpoint) into a classifier ViT; only the
    classifier head may be missing, and nothing may be left over."""
    state, spec, _ = read_checkpoint(checkpoint)
    if spec["arch"] != arch:
        raise CheckpointError(f"{checkpoint}: holds a {spec['arch']} encoder, the config asks for {arch}")
    for note in adapt_state_dict(state, model):  # position embedding / BEiT tables to this model
        print(f"[checkpoint] {note}", file=sys.stderr)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint}: missing keys {missing}, unexpected keys {unexpected}")
