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

Published checkpoints (timm / DeiT, MAE, DINO, BEiT and mmpretrain releases) become encoder
exports through :func:`import_checkpoint`: each format's keys are mapped onto timm's, what the
format carries beside the encoder (heads, decoders, mask tokens, ...) is dropped by an explicit list
of name patterns (:data:`DROPPED`), and the result must match the arch exactly (no missing, no
unexpected key, no shape mismatch), else :class:`CheckpointError` names the keys.

:func:`adapt_state_dict` fits one of our checkpoints to a timm model at another image size or with
BEiT's per-block relative position bias (position embedding resampled, the shared relative
position table copied to every block, tables resized to the new window, all in torch).

Usage::

    python -m benchmark.convert ENCODER.safetensors OUT.pth      # encoder export -> mm backbone
    python -m benchmark.convert mm ENCODER.safetensors OUT.pth   # the same, named
    python -m benchmark.convert import SRC OUT.safetensors [--from auto|timm|deit|mae|dino|beit|mmpretrain]
        [--arch ARCH] [--which teacher|student]                  # published checkpoint -> encoder export
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from benchmark.models import ARCHS, create_vit, is_beit, model_spec, spec_kwargs
from benchmark.utils.io import atomic_path, torch_save

ENCODER_FORMAT = "sslbench.encoder/1"
MM_PREFIX = "backbone.vit."
SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"
_BLOCK_TABLE = re.compile(r"^blocks\.(\d+)\.attn\.relative_position_bias_table$")


class CheckpointError(ValueError):
    """A checkpoint that is not in the expected format or does not match the model."""


def load_failure(err: BaseException, limit: int = 300) -> str:
    """Why ``torch.load`` failed, on one short line: for a ``weights_only`` refusal, the global it
    refused (torch's message puts it after several lines of advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    line = next((ln for ln in lines if "GLOBAL" in ln), lines[0])
    return " ".join(line.split())[:limit]


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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
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
    if old is None or getattr(vit, "pos_embed", None) is None or old.shape == vit.pos_embed.shape:
        return ""  # nothing to resample (a model without one reports the key as unexpected on loading)
    n_prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
    old_grid = int(round((old.shape[1] - n_prefix) ** 0.5))
    new_grid = list(vit.patch_embed.grid_size)
    state["pos_embed"] = resample_abs_pos_embed(old, new_grid, [old_grid, old_grid], num_prefix_tokens=n_prefix)
    return f"pos_embed resampled {old_grid}x{old_grid} -> {new_grid[0]}x{new_grid[1]}"


# ---------------------------------------------------------------------------- key accounting


@functools.lru_cache(maxsize=32)
def _reference_shapes(arch: str, img_size: int, layout: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the headless timm model of a spec, built on the meta device (no memory)."""
    spec = {"arch": arch, "img_size": img_size, "rel_pos_bias": layout}
    with torch.device("meta"):
        model = create_vit(arch, img_size, num_classes=0, **spec_kwargs(spec))
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("head.")}


def reference_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The keys and shapes a checkpoint of model ``spec`` must hold, exactly (head excluded)."""
    if spec.get("arch") not in ARCHS:
        raise CheckpointError(f"model spec {spec}: unknown arch {spec.get('arch')!r}; expected one of {sorted(ARCHS)}")
    try:
        return dict(_reference_shapes(spec["arch"], int(spec.get("img_size", 224)), spec.get("rel_pos_bias", "shared")))
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


# ---------------------------------------------------------------------------- relative position bias


def expand_shared_rel_pos(state: Mapping[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """A copy of ``state`` whose shared BEiT relative position table (``rel_pos_bias.…``) is copied
    into each of ``depth`` blocks (``blocks.N.attn.relative_position_bias_table``), as BEiT
    initialises fine-tuning, detection and segmentation; the shared key is removed."""
    if SHARED_TABLE not in state:
        raise CheckpointError(f"no shared relative position table ({SHARED_TABLE}) to expand")
    already = sorted(k for k in state if _BLOCK_TABLE.match(k))
    if already:
        raise CheckpointError(f"both a shared and per-block relative position tables: {already}")
    table = state[SHARED_TABLE]
    out = {k: v for k, v in state.items() if k != SHARED_TABLE}
    for i in range(depth):
        out[f"blocks.{i}.attn.relative_position_bias_table"] = table.clone()
    return out


def rel_pos_window(num_rows: int) -> int:
    """The (square) window side of a BEiT relative position table with ``num_rows`` rows,
    ``(2W - 1)^2 + 3`` (the 3: cls-to-token, token-to-cls, cls-to-cls)."""
    side = math.isqrt(max(num_rows - 3, 0))
    if side * side != num_rows - 3 or side % 2 == 0:
        raise CheckpointError(f"a relative position table of {num_rows} rows is not (2W-1)^2 + 3 for a square window")
    return (side + 1) // 2


def _offset_positions(src: int, dst: int) -> torch.Tensor:
    """Where the ``src`` (= 2W-1) offsets of a table side lie on the target side's offset axis
    (``dst`` offsets): unchanged when the side does not grow; when it grows, BEiT's geometric
    progression (near offsets keep their place, far ones spread out to cover the new range)."""
    half = src // 2
    if dst <= src or half == 0:
        return torch.arange(-half, half + 1, dtype=torch.float64)
    lo, hi = 1.01, 1.5
    while hi - lo > 1e-6:
        q = (lo + hi) / 2
        if (q**half - 1) / (q - 1) > dst // 2:
            hi = q
        else:
            lo = q
    dis, cur = [], 1.0
    for i in range(half):
        dis.append(cur)
        cur += q ** (i + 1)
    return torch.tensor([-d for d in reversed(dis)] + [0.0] + dis, dtype=torch.float64)


def _interp_matrix(src_pos: torch.Tensor, dst_pos: torch.Tensor) -> torch.Tensor:
    """(len(dst), len(src)) weights of piecewise-linear interpolation on a sorted, possibly uneven
    grid, constant beyond its ends; exact selection where a target point is a source point."""
    n = src_pos.numel()
    if n == 1:
        return torch.ones(dst_pos.numel(), 1, dtype=torch.float64)
    right = torch.searchsorted(src_pos, dst_pos).clamp(1, n - 1)
    left = right - 1
    w_right = ((dst_pos - src_pos[left]) / (src_pos[right] - src_pos[left])).clamp(0.0, 1.0)
    rows = torch.arange(dst_pos.numel())
    m = torch.zeros(dst_pos.numel(), n, dtype=torch.float64)
    m[rows, left] += 1.0 - w_right
    m[rows, right] += w_right
    return m


def resize_rel_pos_table(
    table: torch.Tensor, old_window: tuple[int, int] | int, new_window: tuple[int, int] | int
) -> torch.Tensor:
    """A BEiT relative position table ``((2Wh-1)(2Ww-1) + 3, heads)`` resized from ``old_window`` to
    ``new_window`` in torch (differentiable; no SciPy). The 3 cls rows are kept. Per side, a window
    that shrinks keeps the central offsets exactly (the same relative distance, the same bias); one
    that grows is interpolated as in BEiT's fine-tuning (offsets placed on a geometric progression,
    then linear interpolation, as timm's ``resize_rel_pos_bias_table`` without SciPy)."""
    old = (old_window, old_window) if isinstance(old_window, int) else tuple(old_window)
    new = (new_window, new_window) if isinstance(new_window, int) else tuple(new_window)
    src = (2 * old[0] - 1, 2 * old[1] - 1)
    dst = (2 * new[0] - 1, 2 * new[1] - 1)
    if table.ndim != 2 or table.shape[0] != src[0] * src[1] + 3:
        raise CheckpointError(
            f"a relative position table of shape {tuple(table.shape)} is not ((2Wh-1)(2Ww-1) + 3, heads) "
            f"for window {old[0]}x{old[1]}"
        )
    if old == new:
        return table
    heads = table.shape[1]
    grid = table[:-3].t().reshape(heads, src[0], src[1]).float()
    mats = [
        _interp_matrix(_offset_positions(s, d), torch.arange(-(d // 2), d // 2 + 1, dtype=torch.float64))
        for s, d in zip(src, dst)
    ]
    out = torch.einsum("ys,hst,xt->hyx", mats[0].to(grid), grid, mats[1].to(grid))
    return torch.cat([out.reshape(heads, -1).t().to(table.dtype), table[-3:]], dim=0)


def adapt_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Fits (in place) a timm-keyed state from one of our checkpoints to ``model`` (a timm ViT or
    Beit, perhaps at another image size, perhaps with per-block relative position bias): the
    absolute position embedding is resampled (:func:`fit_pos_embed`), a shared relative position
    table is copied to every block when the model has per-block tables and no shared one
    (:func:`expand_shared_rel_pos`), and every table is resized to its block's window
    (:func:`resize_rel_pos_table`). Keys are not checked here: load with ``strict=True``
    afterwards (the classifier head aside). Returns what was done, one note per change."""
    notes: list[str] = []
    note = fit_pos_embed(state, model)
    if note:
        notes.append(note)
    blocks = list(getattr(model, "blocks", []))
    per_block = bool(blocks) and all(
        getattr(getattr(b, "attn", None), "relative_position_bias_table", None) is not None for b in blocks
    )
    shared_in_model = getattr(model, "rel_pos_bias", None) is not None
    block_keys = [k for k in state if _BLOCK_TABLE.match(k)]
    if SHARED_TABLE in state and per_block and not shared_in_model:
        expanded = expand_shared_rel_pos(state, len(blocks))
        state.clear()
        state.update(expanded)
        notes.append(f"shared relative position table copied to each of {len(blocks)} blocks")
    elif block_keys and shared_in_model and not per_block:
        raise CheckpointError(
            "the checkpoint has per-block relative position tables, the model one shared table: build the model "
            "with benchmark.models.downstream_kwargs(arch) (per-block tables)"
        )
    resized: dict[tuple[int, tuple[int, int]], int] = {}
    for key in [k for k in state if k.endswith("relative_position_bias_table")]:
        try:
            module = model.get_submodule(key[: -len(".relative_position_bias_table")])
        except AttributeError:
            continue  # not the model's: reported as unexpected when loading
        target = getattr(module, "relative_position_bias_table", None)
        if target is None or state[key].shape == target.shape:
            continue
        old = rel_pos_window(state[key].shape[0])
        window = (int(module.window_size[0]), int(module.window_size[1]))
        state[key] = resize_rel_pos_table(state[key], (old, old), window)
        resized[(old, window)] = resized.get((old, window), 0) + 1
    for (old, window), n in resized.items():
        notes.append(f"{n} relative position table(s) resized {old}x{old} -> {window[0]}x{window[1]}")
    return notes


# ---------------------------------------------------------------------------- importing published checkpoints

SOURCES = ("timm", "deit", "mae", "dino", "beit", "mmpretrain")

# What each published format carries beside the encoder, dropped BY NAME (fnmatch patterns on the key
# after the format's wrapper prefix is stripped: DINO's "module."; mmpretrain keys keep "backbone.").
# Anything else that does not map onto the arch is an error, never silently dropped.
DROPPED: dict[str, tuple[str, ...]] = {
    "timm": ("head.*",),  # classifier
    "deit": ("head.*",),  # classifier (a distilled DeiT's dist_token / head_dist is refused, see below)
    # fine-tuned head; pre-training decoder and mask token. A fine-tuned release's fc_norm becomes norm (_map_state).
    "mae": ("head.*", "decoder_*", "mask_token"),
    "dino": ("head.*",),  # DINO projection head of a full training checkpoint
    # fine-tuned head; pre-training mask token and visual-token head; relative position indices (buffers
    # timm rebuilds). A final "norm.*" (pre-training / cls-pooling models) is dropped as well when the
    # checkpoint has no "fc_norm.*": see _map_beit.
    "beit": ("head.*", "lm_head.*", "mask_token", "*relative_position_index"),
    # classifier / self-supervised heads, necks (e.g. MAE's decoder), target generators, preprocessor
    "mmpretrain": ("head.*", "neck.*", "target_generator.*", "data_preprocessor.*", "backbone.mask_token"),
}

# mmpretrain VisionTransformer (after "backbone.") -> timm VisionTransformer.
_MMPRETRAIN_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(a), b)
    for a, b in (
        (r"^cls_token$", "cls_token"),
        (r"^pos_embed$", "pos_embed"),
        (r"^patch_embed\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
        (r"^layers\.(\d+)\.ln1\.(weight|bias)$", r"blocks.\1.norm1.\2"),
        (r"^layers\.(\d+)\.attn\.qkv\.(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
        (r"^layers\.(\d+)\.attn\.proj\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
        (r"^layers\.(\d+)\.ln2\.(weight|bias)$", r"blocks.\1.norm2.\2"),
        (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2"),
        (r"^layers\.(\d+)\.ffn\.layers\.1\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2"),
        (r"^ln1\.(weight|bias)$", r"norm.\1"),
    )
)

_WRAPPERS = ("model", "state_dict", "module")  # {"model": state} (DeiT, MAE, BEiT), mmengine, DDP


class Imported(NamedTuple):
    """What :func:`import_checkpoint` made of a published checkpoint."""

    state: dict[str, torch.Tensor]  # timm keys, no head: an encoder export's tensors
    spec: dict[str, Any]  # the model spec (arch, img_size[, rel_pos_bias])
    source: str  # the format read ("dino:teacher" for a DINO training checkpoint's teacher)
    dropped: list[tuple[str, str]]  # (source key, the DROPPED pattern that dropped it)
    notes: list[str]  # anything else done (e.g. BEiT's fc_norm filled)


def load_source(src: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    """A published checkpoint as a mapping: safetensors, or a torch file read with
    ``weights_only=True`` (``argparse.Namespace`` allowed, as DINO / MAE training checkpoints hold
    their arguments); never an unrestricted unpickling. A mapping is returned as it is."""
    if isinstance(src, Mapping):
        return src
    path = Path(src)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling / zip errors of many types
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not readable as a weights-only torch checkpoint ({first}); in a trusted session, "
            "torch.save just its state dict and import that"
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict or a dict of them")
    return obj


def _is_global_pool_finetuned(keys: Any) -> bool:
    """MAE's fine-tuned releases (``global_pool=True``): a final ``fc_norm`` after average pooling
    and no ``norm`` (MAE's fine-tuning deletes the pre-trained one)."""
    keys = set(keys)
    return "fc_norm.weight" in keys and "norm.weight" not in keys and "cls_token" in keys


def _is_dino_training(ckpt: Mapping[str, Any]) -> bool:
    return any(isinstance(ckpt.get(k), Mapping) for k in ("teacher", "student"))


def _unwrap(ckpt: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
    """The state dict inside ``{"model": …}`` / ``{"state_dict": …}`` / ``{"module": …}`` wrappers."""
    path: list[str] = []
    for key in _WRAPPERS:
        if isinstance(ckpt.get(key), Mapping):
            ckpt = ckpt[key]
            path.append(key)
    return ckpt, path


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def detect_source(ckpt: Mapping[str, Any]) -> str:
    """The published format of a loaded checkpoint, recognised by its keys (one of :data:`SOURCES`);
    :class:`CheckpointError` listing what it saw when none fits. An MAE or DINO backbone file
    without its decoder / head keys is plain timm-style and is reported as ``"timm"`` (same mapping)."""
    if _is_dino_training(ckpt):
        return "dino"
    state, _ = _unwrap(ckpt)
    keys = [k for k in state if isinstance(k, str)]

    def has(pred: Any) -> bool:
        return any(pred(k) for k in keys)

    if has(lambda k: re.match(r"^(backbone\.)?(layers\.\d+\.(ln1|ln2|ffn)\.|patch_embed\.projection\.)", k)):
        return "mmpretrain"
    if has(lambda k: k.startswith(("rel_pos_bias.", "lm_head.")) or k.endswith(
            (".relative_position_bias_table", ".attn.q_bias", ".gamma_1"))):
        return "beit"
    if has(lambda k: k.startswith("decoder_")) or _is_global_pool_finetuned(keys):
        return "mae"
    if "dist_token" in keys or has(lambda k: k.startswith("head_dist.")):
        return "deit"
    if has(lambda k: k.startswith(("backbone.", "module.backbone."))):
        return "dino"
    if "cls_token" in keys and has(lambda k: k.startswith("blocks.")):
        return "timm"
    raise CheckpointError(
        f"cannot tell the checkpoint's format: top-level keys [{_short(sorted(map(str, ckpt)))}], "
        f"state keys [{_short(sorted(keys))}]; pass --from one of {', '.join(SOURCES)}"
    )


Dropped = list[tuple[str, str]]  # (source key, the DROPPED pattern that matched it)


def _drop(state: Mapping[str, torch.Tensor], patterns: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], Dropped]:
    kept: dict[str, torch.Tensor] = {}
    dropped: Dropped = []
    for key, value in state.items():
        pattern = next((p for p in patterns if fnmatchcase(key, p)), None)
        if pattern is None:
            kept[key] = value
        else:
            dropped.append((key, pattern))
    return kept, dropped


def _rename(state: Mapping[str, torch.Tensor], rename: Any, what: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = rename(key)
        if new in out:
            raise CheckpointError(f"{what}: two keys map onto {new!r}")
        out[new] = value
    return out


def _mmpretrain_key(key: str) -> str:
    """An mmpretrain VisionTransformer key as timm names it; the key unchanged when no rule fits."""
    inner = key[len("backbone."):] if key.startswith("backbone.") else key
    for pattern, repl in _MMPRETRAIN_RULES:
        if pattern.match(inner):
            return pattern.sub(repl, inner)
    return key


def _map_state(
    state: Mapping[str, torch.Tensor], source: str, what: str
) -> tuple[dict[str, torch.Tensor], Dropped, list[str]]:
    """(timm-keyed state, dropped, notes) of a source state dict; no key check yet."""
    notes: list[str] = []
    patterns = DROPPED[source]
    if source == "dino":
        state = _rename(state, lambda k: k[len("module."):] if k.startswith("module.") else k, what)
    fill_fc_norm = source == "beit" and "norm.weight" in state and "fc_norm.weight" not in state
    if fill_fc_norm:
        patterns = patterns + ("norm.*",)
    kept, dropped = _drop(state, patterns)
    if source in ("timm", "deit", "mae", "dino") and ("dist_token" in kept or any(k.startswith("head_dist.") for k in kept)):
        raise CheckpointError(
            f"{what}: a distilled DeiT (dist_token / head_dist): its second prefix token has no counterpart in our "
            "archs; import the non-distilled DeiT instead"
        )
    if source == "dino":
        kept = _rename(kept, lambda k: k[len("backbone."):] if k.startswith("backbone.") else k, what)
    elif source == "mae" and _is_global_pool_finetuned(kept):
        kept = _rename(kept, lambda k: "norm." + k[len("fc_norm."):] if k.startswith("fc_norm.") else k, what)
        notes.append(
            "fc_norm (MAE's fine-tuning, global_pool=True) kept as the final norm (norm.*): it is the checkpoint's "
            "only final LayerNorm, trained on these blocks' outputs; our ViTs normalise every token with it and pool "
            "the class token, where MAE's fine-tuned model averaged the patch tokens before normalising"
        )
    elif source == "mmpretrain":
        kept = _rename(kept, _mmpretrain_key, what)
    if fill_fc_norm:
        ref = state["norm.weight"]
        kept["fc_norm.weight"] = torch.ones_like(ref)
        kept["fc_norm.bias"] = torch.zeros_like(ref)
        notes.append(
            "fc_norm filled with LayerNorm's initial values (1, 0): the checkpoint's final norm (norm.*) feeds "
            "its pre-training head, and BEiT fine-tuning starts fc_norm fresh, as our own BEiT exports do"
        )
    return kept, dropped, notes


@functools.lru_cache(maxsize=None)
def _arch_geometry(arch: str) -> tuple[int, int, int, int]:
    """(embed_dim, depth, heads, patch) of an arch, from a meta-device model."""
    with torch.device("meta"):
        model = create_vit(arch, 224, num_classes=0)
    heads = int(model.blocks[0].attn.num_heads)
    return int(model.embed_dim), len(model.blocks), heads, int(model.patch_embed.patch_size[0])


def _state_tables(state: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    return [v for k, v in state.items() if k == SHARED_TABLE or _BLOCK_TABLE.match(k)]


def infer_arch(state: Mapping[str, torch.Tensor], beit: bool) -> str:
    """The arch of :data:`benchmark.models.ARCHS` (beit-* or vit-*) whose embed dim, depth, patch
    size and (BEiT) heads the tensors of a timm-keyed state have; :class:`CheckpointError` if none
    or several do."""
    proj = state.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 4:
        raise CheckpointError("cannot infer the arch: no patch_embed.proj.weight (pass --arch)")
    dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    depths = [int(m.group(1)) for k in state if (m := re.match(r"^blocks\.(\d+)\.", k))]
    depth = max(depths) + 1 if depths else 0
    tables = _state_tables(state)
    heads = int(tables[0].shape[1]) if beit and tables else None
    family = [a for a in ARCHS if is_beit(a) == beit]
    found = [
        a for a in family
        if _arch_geometry(a)[:2] == (dim, depth) and _arch_geometry(a)[3] == patch
        and (heads is None or _arch_geometry(a)[2] == heads)
    ]
    if len(found) != 1:
        known = "; ".join(f"{a}: dim {g[0]}, depth {g[1]}, heads {g[2]}" for a in family for g in [_arch_geometry(a)])
        what = f"embed dim {dim}, depth {depth}, patch {patch}" + (f", heads {heads}" if heads else "")
        if not found:
            raise CheckpointError(f"no arch has {what} ({known})")
        raise CheckpointError(f"several archs have {what}: {found}; pass --arch")
    return found[0]


def infer_img_size(state: Mapping[str, torch.Tensor], arch: str) -> int:
    """The (square) pre-training image size of a timm-keyed state: from its position embedding, else
    from its relative position tables, else 224."""
    patch = _arch_geometry(arch)[3]
    pos = state.get("pos_embed")
    if pos is not None and pos.ndim == 3:
        n = int(pos.shape[1]) - 1  # one class token in every arch of ours
        side = math.isqrt(max(n, 0))
        if side * side != n:
            raise CheckpointError(f"pos_embed of shape {tuple(pos.shape)} is not 1 + a square grid")
        return side * patch
    tables = _state_tables(state)
    if tables:
        return rel_pos_window(int(tables[0].shape[0])) * patch
    return 224


def import_checkpoint(
    src: str | Path | Mapping[str, Any],
    source: str = "auto",
    arch: str | None = None,
    which: str = "teacher",
) -> Imported:
    """A published checkpoint (a path or a loaded mapping) as an encoder export's state and spec.

    ``source``: one of :data:`SOURCES` or ``"auto"`` (:func:`detect_source`); ``arch``: a name from
    ``ARCHS``, inferred from tensor shapes when ``None``; ``which``: the teacher or the student of a
    DINO training checkpoint. Keys of the format beside the encoder are dropped by name
    (:data:`DROPPED`); what remains must match the arch exactly (:func:`check_keys`).
    """
    what = str(src) if not isinstance(src, Mapping) else "checkpoint"
    ckpt = load_source(src)
    if source == "auto":
        source = detect_source(ckpt)
    if source not in SOURCES:
        raise CheckpointError(f"unknown source format {source!r}; expected auto or one of {', '.join(SOURCES)}")
    label = source
    if source == "dino" and _is_dino_training(ckpt):
        if which not in ("teacher", "student"):
            raise CheckpointError(f"--which must be teacher or student, got {which!r}")
        if not isinstance(ckpt.get(which), Mapping):
            raise CheckpointError(f"{what}: a DINO training checkpoint without a {which!r} entry")
        state: Mapping[str, Any] = ckpt[which]
        label = f"dino:{which}"
    else:
        state, _ = _unwrap(ckpt)
    bad = sorted(str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(
            f"{what}: not a state dict (non-tensor entries: {_short(bad)}); top-level keys: {_short(sorted(map(str, ckpt)))}"
        )
    mapped, dropped, notes = _map_state(state, source, what)
    beit = source == "beit"
    if arch is None:
        arch = infer_arch(mapped, beit)
    elif arch not in ARCHS:
        raise CheckpointError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    elif is_beit(arch) != beit:
        want = "beit-*" if beit else "vit-*"
        raise CheckpointError(f"{what}: a {source} checkpoint maps onto a {want} arch, not {arch}")
    spec = model_spec(arch, infer_img_size(mapped, arch))
    if beit and any(_BLOCK_TABLE.match(k) for k in mapped):
        spec["rel_pos_bias"] = "per-block"
    check_keys(mapped, spec, f"{what} ({label})")
    return Imported(mapped, spec, label, dropped, notes)


def dropped_summary(dropped: list[tuple[str, str]], n: int = 3) -> list[str]:
    """One line per DROPPED pattern that matched: the pattern, how many keys, the first few."""
    by: dict[str, list[str]] = {}
    for key, pattern in dropped:
        by.setdefault(pattern, []).append(key)
    return [f"{p}: {len(keys)} key(s) ({_short(keys, n)})" for p, keys in by.items()]


# ---------------------------------------------------------------------------- command line


def _main_import(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.convert import",
        description="Imports a published checkpoint (timm/DeiT, MAE, DINO, BEiT, mmpretrain) as an encoder export.",
    )
    parser.add_argument("src", help="the published checkpoint (.pth / .pt / .bin / .safetensors)")
    parser.add_argument("out", help="where to write the encoder export (.safetensors)")
    parser.add_argument(
        "--from", dest="source", default="auto", choices=("auto",) + SOURCES, help="its format (default: recognised by its keys)"
    )
    parser.add_argument("--arch", default=None, choices=sorted(ARCHS), help="default: inferred from tensor shapes")
    parser.add_argument("--which", default="teacher", choices=("teacher", "student"), help="of a DINO training checkpoint")
    args = parser.parse_args(argv)
    try:
        result = import_checkpoint(args.src, args.source, args.arch, args.which)
        save_encoder_state(result.state, result.spec, args.out, source=f"{result.source}:{args.src}")
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"source format: {result.source}; model: {json.dumps(result.spec)}; {len(result.state)} tensors")
    if result.dropped:
        print(f"dropped {len(result.dropped)} key(s) by name:")
        for line in dropped_summary(result.dropped):
            print(f"  {line}")
    else:
        print("dropped nothing")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {args.out}")
    return 0


def _main_mm(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.convert [mm]",
        description="Converts an encoder export into an MMDetection / MMSegmentation backbone checkpoint.",
        epilog="To import a published checkpoint: python -m benchmark.convert import --help",
    )
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


def main(argv: list[str] | None = None) -> int:
    """``import SRC OUT`` imports a published checkpoint; ``[mm] ENCODER OUT`` writes an mm backbone."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["import"]:
        return _main_import(argv[1:])
    if argv[:1] == ["mm"]:
        return _main_mm(argv[1:])
    return _main_mm(argv)


if __name__ == "__main__":
    sys.exit(main())
