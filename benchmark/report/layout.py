"""An artifact's table as the paper lays it out: rows and columns from its
:class:`~benchmark.experiments.model.Layout`, one readable table per scale and arch, each cell
ours as mean ± std (n) with the paper's number beside it, floors and the ceiling as rows.

:func:`entries` turns the artifact's CSV (every column, one row per comparison and metric) into
labelled entries, which both the Markdown tables here and the figures
(:mod:`benchmark.report.figures`) read, so that a table and its figure always agree.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from benchmark.experiments.model import Layout
from benchmark.report import names

MISSING = "—"
BLOCK_KEYS = ("scale", "arch")
# tags that tell two rows apart where the layout's own do not (in this order)
DISTINGUISHING = ("pretrain_data", "tokenizer", "epochs", "hparams", "arch", "downstream", "metric")
BELOW_MARK = "↓"
LEGEND = (f"Each cell: ours, mean ± std over seeds (runs); \"{MISSING}\": planned, not run yet; a blank: not planned. "
          f"{BELOW_MARK}: under the best trivial floor of its table (not a finding). \"paper\": the paper's value.")


def value_rank(key: str, value: str) -> tuple:
    """Rows and columns in a reader's order: methods as :data:`names.METHODS`, numbers by size."""
    if key == "method":
        return (names.method_rank(value), value)
    if key == "metric":
        return (list(names.METRICS).index(value) if value in names.METRICS else len(names.METRICS), value)
    if key == "downstream":
        evaluation = [i for i, s in enumerate(names.EVALUATIONS) if value.endswith(f"-{s}")]
        return (value.rsplit("-", 1)[0] if evaluation else value, evaluation[-1] if evaluation else 0, value)
    if value in ("", "none"):
        return (-1.0, "", value)
    number = re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", value)
    return (float(number[-1]) if number else math.inf, re.sub(r"[\d.%]+", "", value), value)


def label(row: pd.Series, keys: tuple[str, ...], target: bool, short: bool = False) -> str:
    """The display names of ``row``'s ``keys`` (``short``: a column's or a figure's group's)."""
    parts = []
    for key in keys:
        value = str(row[key])
        if key == "pretrain_data" and value == "none" and not short:
            continue  # "random init" says it
        if key == "pretrain_data" and target and str(row["downstream"]).startswith(f"{value}-"):
            parts.append("pre-trained on the target data")
        else:
            parts.append(names.value_name(key, value, short))
    return ", ".join(p for p in parts if p and p != MISSING) or MISSING


def _row_keys(block: pd.DataFrame, layout: Layout, fixed: tuple[str, ...]) -> tuple[str, ...]:
    """The layout's row tags, plus the fewest others that give each cell of ``block`` one row."""
    keys = tuple(layout.rows)
    scored = block[block.role == ""]
    for extra in DISTINGUISHING:
        if not scored.duplicated([*keys, *layout.columns]).any():
            break
        if extra not in keys and extra not in layout.columns and extra not in fixed and scored[extra].nunique() > 1:
            keys += (extra,)
    return keys


def entries(table: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """The artifact's rows with what a reader sees: ``block`` (scale, arch), ``row`` and ``col``
    labels, their order, ``role`` (floor, ceiling or ""), numbers ``mean``/``std``/``n``/``paper``
    and ``below`` (under the table's best floor)."""
    out = table.astype(str).copy()
    out["mean"] = pd.to_numeric(table["ours_mean"], errors="coerce")
    out["std"] = pd.to_numeric(table["ours_std"], errors="coerce")
    out["n"] = pd.to_numeric(table["n_runs"], errors="coerce").fillna(0).astype(int)
    out["paper_value"] = pd.to_numeric(table["paper"], errors="coerce")
    out["role"] = out["method"].map(names.ROLES).fillna("")
    out["below"] = table["vs_floor"].astype(str).str.startswith("BELOW") if "vs_floor" in table else False
    fixed = tuple(k for k in BLOCK_KEYS if k not in layout.rows and k not in layout.columns)
    out["block"] = [" · ".join(names.value_name(k, row[k]) for k in fixed) for _, row in out.iterrows()]
    out["block_rank"] = [tuple(value_rank(k, row[k]) for k in fixed) for _, row in out.iterrows()]
    out["row"], out["row_rank"], out["row_keys"] = "", None, None
    for _, index in out.groupby("block").groups.items():
        keys = _row_keys(out.loc[index], layout, fixed)
        for i in index:
            row = out.loc[i]
            text = label(row, keys, layout.target)
            out.at[i, "row"] = f"{text} ({row.role})" if row.role else text
            out.at[i, "row_keys"] = keys
            out.at[i, "row_rank"] = (row.role != "", row.role, *(value_rank(k, row[k]) for k in keys))
    out["col"] = [label(row, tuple(layout.columns), layout.target, short=True) for _, row in out.iterrows()]
    out["col_rank"] = [tuple(value_rank(k, row[k]) for k in layout.columns) for _, row in out.iterrows()]
    return out


def cell(mean: float, std: float, n: int, paper: float, below: bool) -> str:
    """"81.8 ± 0.4 (3) ↓; paper 83.2": ours, marked under its floor, and the paper's beside it."""
    if n == 0:
        ours = MISSING
    elif math.isnan(mean):
        ours = f"nan ({n})"
    else:
        ours = f"{mean:.1f} ± {std:.1f} ({n})" if n > 1 and not math.isnan(std) else f"{mean:.1f} ({n})"
    ours += f" {BELOW_MARK}" if below else ""
    return ours + (f"; paper {paper:.1f}" if not math.isnan(paper) else "")


def ordered(frame: pd.DataFrame, column: str, rank: str) -> list[str]:
    """The distinct values of ``column`` in the order of ``rank``."""
    firsts = frame.drop_duplicates(column)
    return [row[column] for _, row in sorted(firsts.iterrows(), key=lambda item: item[1][rank])]


def block_table(block: pd.DataFrame) -> pd.DataFrame:
    """One block as rows x columns of cells; a floor's or the ceiling's value stands in every column."""
    scored = block[block.role == ""]
    columns = ordered(scored if len(scored) else block, "col", "col_rank")
    grid = pd.DataFrame("", index=ordered(block, "row", "row_rank"), columns=columns)
    for _, entry in block.iterrows():
        text = cell(entry["mean"], entry["std"], entry["n"], entry["paper_value"], bool(entry["below"]))
        for column in (columns if entry.role else [entry.col]):
            grid.at[entry.row, column] = text
    return grid


def has_numbers(block: pd.DataFrame) -> bool:
    """Whether a block has a number of ours or the paper's beyond its floors and ceiling."""
    scored = block[block.role == ""]
    return bool((scored.n > 0).any() or scored.paper_value.notna().any())


def markdown(table: pd.DataFrame, layout: Layout) -> list[str]:
    """The artifact's readable tables: one per block that has a number of ours or the paper's, and one
    line for the blocks that have neither."""
    found = entries(table, layout)
    lines, empty = [], []
    for name in ordered(found, "block", "block_rank"):
        block = found[found.block == name]
        if not has_numbers(block):
            empty.append(name or "all")
            continue
        grid = block_table(block)
        lines += [f"**{name}**" if name else "", "", grid.rename_axis("").reset_index()
                  .to_markdown(index=False, disable_numparse=True), ""]
    if empty:
        lines += [f"Not run yet, no paper value known: {'; '.join(empty)}.", ""]
    return lines
