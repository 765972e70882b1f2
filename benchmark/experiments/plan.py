"""A plan's runs on disk: the order they run in, each run's key and directory, and whether it is
done. The driver lays a plan out with these, and the report finds the plan's records with them.

Each run gets ``RUNS_DIR/<kind>/<name>-<key>/``, where ``key`` hashes the run's kind, its config
with its inputs' keys and, for the kinds whose config names a recipe file, that file's text: a
changed config is a new run, an unchanged one is found again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from benchmark.experiments.model import Run, is_ref
from benchmark.models.checkpoints.export import is_whole
from benchmark.stages.catalogue import run_kind, run_kinds
from benchmark.utils.tree import KEEP, rebuild


def order_runs(runs: list[Run]) -> list[Run]:
    """Runs sorted so that each comes after the runs it refers to (stable otherwise)."""
    by_name = {r.name: r for r in runs}
    ordered: list[Run] = []
    state: dict[str, str] = {}

    def visit(run: Run, chain: tuple[str, ...]) -> None:
        if state.get(run.name) == "done":
            return
        if run.name in chain:
            raise ValueError(f"dependency cycle: {' -> '.join(chain + (run.name,))}")
        for dep in run.refs():
            if dep not in by_name:
                raise ValueError(f"run {run.name!r} refers to unknown run {dep!r}")
            visit(by_name[dep], chain + (run.name,))
        state[run.name] = "done"
        ordered.append(run)

    for run in runs:
        visit(run, ())
    return ordered


def resolve_refs(value: Any, dirs: dict[str, Path], keys: dict[str, str] | None = None) -> Any:
    """Replaces refs by paths (``dirs``) or, for hashing, by the referred run's key (``keys``)."""
    def replace(node: Any) -> Any:
        if not is_ref(node):
            return KEEP
        if keys is not None:
            return f"<{keys[node['ref']]}>/{node['file']}"
        return str(dirs[node["ref"]] / node["file"]) if node["file"] else str(dirs[node["ref"]])

    return rebuild(value, replace)


def run_key(run: Run, keys: dict[str, str]) -> str:
    """The run's identity: its kind, its config with its inputs' keys and, for the kinds whose
    config names a recipe file (an MMEngine config), that file's text."""
    payload: dict[str, Any] = {"kind": run.kind, "config": resolve_refs(run.config, {}, keys)}
    kind = run_kinds().get(run.kind)
    if kind is not None and kind.recipe is not None:
        payload["recipe"] = hashlib.sha256(kind.recipe(run.config)).hexdigest()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def locate(runs: list[Run], runs_dir: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """Keys and run directories of ``runs`` (which must be in dependency order)."""
    keys: dict[str, str] = {}
    dirs: dict[str, Path] = {}
    for run in runs:
        keys[run.name] = run_key(run, keys)
        dirs[run.name] = runs_dir / run.kind / f"{run.name}-{keys[run.name]}"
    return keys, dirs


def is_done(run: Run, run_dir: Path) -> bool:
    """Whether the run's done file is there, and whole where it is an encoder export (one cut short,
    by a full disk or a copy, runs again, and the stage exports it anew)."""
    done = run_dir / run_kind(run.kind).done_file(run.config)
    return done.is_file() and (done.suffix != ".safetensors" or is_whole(done))
