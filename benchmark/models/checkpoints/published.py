"""Published checkpoints (timm / DeiT, MAE pre-trained or fine-tuned, DINO, BEiT and mmpretrain
releases) as encoder exports: :func:`import_checkpoint` maps each format's keys onto timm's, drops
what the format carries beside the encoder (heads, decoders, mask tokens, ...) by an explicit list
of name patterns (:data:`DROPPED`), and holds the result to the arch exactly (no missing, no
unexpected key, no shape mismatch), else :class:`~benchmark.errors.CheckpointError` names the keys.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NamedTuple

import torch

from benchmark.errors import CheckpointError
from benchmark.models.checkpoints.export import check_keys
from benchmark.models.checkpoints.geometry import BLOCK_TABLE, SHARED_TABLE, rel_pos_window
from benchmark.models.vit import ARCHS, create_vit, is_beit, model_spec
from benchmark.utils.io import load_failure

SOURCES = ("timm", "deit", "mae", "dino", "beit", "mmpretrain")

# What each published format carries beside the encoder, dropped BY NAME (fnmatch patterns on the key
# after the format's wrapper prefix is stripped: DINO's "module."; mmpretrain keys keep "backbone.").
# Anything else that does not map onto the arch is an error, never silently dropped.
DROPPED: dict[str, tuple[str, ...]] = {
    "timm": ("head.*",),  # classifier
    "deit": ("head.*",),  # classifier (a distilled DeiT's dist_token / head_dist is refused, see below)
    # fine-tuned head; pre-training decoder and mask token. A fine-tuned release keeps its fc_norm and pools
    # as it did (model spec global_pool "avg").
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
        raise CheckpointError(
            f"{path}: not readable as a weights-only torch checkpoint ({load_failure(err)}); in a trusted session, "
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
        notes.append(
            "MAE's fine-tuned model (global_pool=True): its feature is fc_norm of the mean of the patch tokens, "
            "so the encoder pools that way too (timm's global_pool='avg', recorded in its model spec)"
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


@functools.cache
def _arch_geometry(arch: str) -> tuple[int, int, int, int]:
    """(embed_dim, depth, heads, patch) of an arch, from a meta-device model."""
    with torch.device("meta"):
        model = create_vit(arch, 224, num_classes=0)
    heads = int(model.blocks[0].attn.num_heads)
    return int(model.embed_dim), len(model.blocks), heads, int(model.patch_embed.patch_size[0])


def _state_tables(state: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    return [v for k, v in state.items() if k == SHARED_TABLE or BLOCK_TABLE.match(k)]


def infer_arch(state: Mapping[str, torch.Tensor], beit: bool) -> str:
    """The arch of :data:`benchmark.models.vit.ARCHS` (beit-* or vit-*) whose embed dim, depth, patch
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
    forced = source if source != "auto" else None
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
    if forced in ("mae", "dino") and _detected(ckpt) == "timm":
        # Backbone-only releases of MAE and DINO are plain timm state dicts: nothing in the file says which.
        notes.append(f"no {forced.upper()}-specific key in the file (a plain timm state dict): imported as "
                     f"{forced}'s backbone-only release, as --from asked")
    beit = source == "beit"
    if arch is None:
        arch = infer_arch(mapped, beit)
    elif arch not in ARCHS:
        raise CheckpointError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    elif is_beit(arch) != beit:
        want = "beit-*" if beit else "vit-*"
        raise CheckpointError(f"{what}: a {source} checkpoint maps onto a {want} arch, not {arch}")
    spec = model_spec(arch, infer_img_size(mapped, arch))
    if beit and any(BLOCK_TABLE.match(k) for k in mapped):
        spec["rel_pos_bias"] = "per-block"
    if source == "mae" and _is_global_pool_finetuned(mapped):
        spec["global_pool"] = "avg"
    check_keys(mapped, spec, f"{what} ({label})")
    return Imported(mapped, spec, label, dropped, notes)


def _detected(ckpt: Mapping[str, Any]) -> str | None:
    try:
        return detect_source(ckpt)
    except CheckpointError:
        return None


def dropped_summary(dropped: list[tuple[str, str]], n: int = 3) -> list[str]:
    """One line per DROPPED pattern that matched: the pattern, how many keys, the first few."""
    by: dict[str, list[str]] = {}
    for key, pattern in dropped:
        by.setdefault(pattern, []).append(key)
    return [f"{p}: {len(keys)} key(s) ({_short(keys, n)})" for p, keys in by.items()]
