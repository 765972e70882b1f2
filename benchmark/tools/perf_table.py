"""The table of :mod:`benchmark.tools.perf`: its columns, the machine it was measured on, and
how a run's rows are written (:func:`write_table`) and merged into the table already there
(:func:`row_key`, :func:`merge`, :func:`earlier_rows`).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmark.errors import ConfigError, error_line
from benchmark.report.perf_section import PARTS
from benchmark.utils.io import atomic_path, write_json

COLUMNS = [
    "part", "method", "arch", "variant", "img_size", "batch_size", "tokens", "workers", "ms", "iqr_ms", "ms_per_img",
    "img_per_s", "iqr_img_per_s", "img_per_s_per_worker", "blocks_ms", "blocks_iqr_ms", "overhead", "block_calls",
    "block_tokens", "flop_overhead", "gflop_per_img", "tflop_per_s", "mfu", "peak_mem_gib", "mem_mib_per_img", "model_arch",
    "model_img_per_s", "pipeline_vs_model", "measured",
]
INTEGER_COLUMNS = {"img_size", "batch_size", "tokens", "workers", "block_calls", "block_tokens"}
KEY = ("part", "method", "arch", "variant", "img_size", "batch_size", "workers")  # what a row measures
SAME_MACHINE = ("device", "cpu", "cpu_cores", "scale")  # a table's rows all share these
RUN_FIELDS = ("command", "date", "torch", "timm", "batch_size", "steps", "warmup")  # a run's entry in meta["runs"]


def machine(device: torch.device) -> dict[str, Any]:
    import timm

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(), "cpu_cores": cores, "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
        "bf16_autocast": device.type == "cuda" and torch.cuda.is_bf16_supported(),
    }


def write_table(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> pd.DataFrame:
    """The table and its json beside it, so that a run stopped in a later part keeps what it measured."""
    table = pd.DataFrame(rows)
    table = table.reindex(columns=[c for c in COLUMNS if c in table.columns] + [c for c in table.columns if c not in COLUMNS])
    # Counts stay integers where other parts' rows leave them empty (float_format would write 302592 as 3.026e+05).
    for column in INTEGER_COLUMNS & set(table.columns):
        table[column] = table[column].astype("Int64")
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    write_json(out.with_suffix(".json"), meta)
    return table


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    """What ``row`` measures (:data:`KEY`), alike whether it was just measured or read back from a
    table (where a count reads as 224.0 and an empty cell as NaN)."""
    def plain(value: Any) -> str:
        if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
            return ""
        if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value)

    return tuple(plain(row.get(column)) for column in KEY)


def merge(earlier: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``earlier`` with every row that ``rows`` measures again replaced by the new one(s) in its
    place, then the rows new to the table; grouped by part (steps, pipeline, scaling), each in its order."""
    fresh: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        fresh.setdefault(row_key(row), []).append(row)
    merged, replaced = [], set()
    for row in earlier:
        key = row_key(row)
        if key in fresh:
            merged += fresh.pop(key)
            replaced.add(key)
        elif key not in replaced:
            merged.append(row)
    merged += [row for row in rows if row_key(row) in fresh]
    parts = [str(row["part"]).split("-")[0] for row in merged]  # scaling-batch, scaling-tokens: scaling
    order = [PARTS.index(part) if part in PARTS else len(PARTS) for part in parts]
    return [row for _, row in sorted(zip(order, merged), key=lambda pair: pair[0])]


def earlier_rows(out: Path, meta: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of the table at ``out`` and the runs that measured them (``meta["runs"]``), to be
    merged with this run's; ``([], [])`` where there is none. :class:`ConfigError` where ``out`` is
    not a table of this benchmark with its JSON, or one of another machine or scale (merging would
    mix their numbers)."""
    meta_path = out.with_suffix(".json")
    if not out.exists():
        return [], []
    try:
        table, old = pd.read_csv(out), json.loads(meta_path.read_text())
        if not isinstance(old, dict) or "part" not in table.columns:
            raise ValueError("no 'part' column, or a json that is not an object")
    except (OSError, ValueError) as err:
        raise ConfigError(f"{out}: not a table of python -m benchmark.perf with its {meta_path.name} ({error_line(err)}); "
                          "pass --replace to replace it, or give another --out") from None
    old.setdefault("scale", "paper")  # tables written before the scale was recorded: the paper's sizes
    differ = [f"{field} {old.get(field)!r}, this run {meta[field]!r}" for field in SAME_MACHINE
              if old.get(field) != meta[field]]
    if differ:
        raise ConfigError(f"{out}: its rows were measured on another machine or scale ({'; '.join(differ)}), and "
                          "merging would mix them: pass --replace to replace the table with this run's rows, or give "
                          "another --out")
    runs = old.get("runs") or [{field: old.get(field) for field in RUN_FIELDS}]
    rows = [{k: v for k, v in record.items() if not pd.isna(v)} for record in table.to_dict("records")]
    for row in rows:
        row.setdefault("measured", runs[-1]["date"])
    return rows, runs
