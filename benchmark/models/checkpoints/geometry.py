"""Position-table geometry: fitting one of our checkpoints to a timm model at another image size
or with BEiT's per-block relative position bias (:func:`adapt_state_dict`: the position embedding
resampled, the shared relative position table copied to every block, tables resized to the new
window), all in torch (SciPy's ``interp2d``, which BEiT's code uses, is gone).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed

from benchmark.errors import CheckpointError

SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"
BLOCK_TABLE = re.compile(r"^blocks\.(\d+)\.attn\.relative_position_bias_table$")


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


# ---------------------------------------------------------------------------- relative position bias


def expand_shared_rel_pos(state: Mapping[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """A copy of ``state`` whose shared BEiT relative position table (``rel_pos_bias.…``) is copied
    into each of ``depth`` blocks (``blocks.N.attn.relative_position_bias_table``), as BEiT
    initialises fine-tuning, detection and segmentation; the shared key is removed."""
    if SHARED_TABLE not in state:
        raise CheckpointError(f"no shared relative position table ({SHARED_TABLE}) to expand")
    already = sorted(k for k in state if BLOCK_TABLE.match(k))
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
    block_keys = [k for k in state if BLOCK_TABLE.match(k)]
    if SHARED_TABLE in state and per_block and not shared_in_model:
        expanded = expand_shared_rel_pos(state, len(blocks))
        state.clear()
        state.update(expanded)
        notes.append(f"shared relative position table copied to each of {len(blocks)} blocks")
    elif block_keys and shared_in_model and not per_block:
        raise CheckpointError(
            "the checkpoint has per-block relative position tables, the model one shared table: build the model "
            "with benchmark.models.vit.downstream_kwargs(arch) (per-block tables)"
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
