"""Choosing settings on a validation split: a sweep's results in, one choice out.

    python -m benchmark.select --config CONFIG.json --out RUN_DIR

The config lists candidate runs, each a ``result.json`` (an evaluation on the *validation*
split) and the setting it was run with (``values``, e.g. ``{"blr": 1e-3}``). Candidates with the
same values are averaged (several initialisations or seeds share one setting: the choice is
then the same for all of them), and the values with the best mean ``metric`` are written to
``RUN_DIR/choice.json``. A fine-tuning run takes them with ``hparams_from``
(:func:`benchmark.training.config.apply_choice`); its own
``config.json`` then holds the chosen values. Ties go to the candidate listed first.

Candidates whose result is on the test split are refused: a setting chosen on the test split
would make the tables report a best case, not a held-out estimate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmark.errors import ConfigError
from benchmark.stages.cost import no_compute
from benchmark.stages.kinds import RunKind, register_kind
from benchmark.training.config import read_json
from benchmark.utils.cli_errors import cli_errors
from benchmark.utils.io import write_json
from benchmark.utils.results import load_result

CHOICE = "choice.json"


def choose(candidates: list[dict[str, Any]], metric: str = "top1") -> dict[str, Any]:
    """The choice record: ``chosen`` (the winning values) and ``scores`` (per setting: mean, runs)."""
    if not candidates:
        raise ConfigError("select: no candidates")
    scores: dict[str, dict[str, Any]] = {}
    for candidate in candidates:
        result = load_result(candidate["result"])
        split = result["config"].get("eval_split", "val")
        if split != "val":
            raise ConfigError(f"{candidate['result']}: evaluated on the {split!r} split; settings are chosen on 'val' only")
        if metric not in result["metrics"]:
            raise ConfigError(f"{candidate['result']}: no metric {metric!r} (it has {sorted(result['metrics'])})")
        key = json.dumps(candidate["values"], sort_keys=True)
        entry = scores.setdefault(key, {"values": candidate["values"], "results": []})
        entry["results"].append(float(result["metrics"][metric]))
    rows = [{"values": e["values"], "mean": sum(e["results"]) / len(e["results"]), "runs": len(e["results"]),
             "results": e["results"]} for e in scores.values()]
    best = max(rows, key=lambda row: row["mean"])  # max keeps the first of equals
    return {"metric": metric, "split": "val", "chosen": best["values"], "scores": rows}


def select(config: dict[str, Any], out_dir: str | Path) -> Path:
    """Writes ``out_dir/choice.json`` for ``config`` ({"candidates": [...], "metric": ...})."""
    unknown = set(config) - {"candidates", "metric"}
    if unknown:
        raise ConfigError(f"select: unknown keys {sorted(unknown)} (expected 'candidates', 'metric')")
    record = choose(config["candidates"], config.get("metric", "top1"))
    path = Path(out_dir) / CHOICE
    write_json(path, record)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.select", description="Choose settings from a validation sweep.")
    parser.add_argument("--config", required=True,
                        help="a JSON file: {\"candidates\": [{\"result\": ..., \"values\": {...}}], \"metric\": \"top1\"}")
    parser.add_argument("--out", required=True, help="the run directory (gets choice.json)")
    args = parser.parse_args(argv)
    with cli_errors("select", args.out) as stopped:  # bad input: one line, 2, no empty folder left behind
        path = select(read_json(args.config), args.out)
    if stopped.code is not None:
        return stopped.code
    print(json.loads(path.read_text())["chosen"])
    return 0


KIND = register_kind(RunKind("select", run=select, done_file=lambda config: CHOICE, command="benchmark.select",
                             estimate=no_compute("select", "reads its sweep's results")))
