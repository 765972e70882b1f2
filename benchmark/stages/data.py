"""The ``data`` runs of a plan: data sets the suite writes itself, by generator name. Each writes
its manifest last, so a finished run is one whose manifest exists."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.data import digits, scenes, synthetic
from benchmark.stages.cost import no_compute
from benchmark.stages.kinds import RunKind, register_kind

# generator -> (what writes it: (out, config), its manifest)
GENERATORS: dict[str, tuple[Callable[[Path, dict[str, Any]], Any], str]] = {
    "synthetic": (lambda out, config: synthetic.make_all(out, seed=config["seed"], scale=config["scale"]),
                  synthetic.MANIFEST),
    "digits": (lambda out, config: digits.write_digits(out, seed=config["seed"]), digits.MANIFEST),
    # Fashion-MNIST scenes; config: seed, data_root (Fashion-MNIST's), train_scenes, val_scenes, size
    "scenes": (lambda out, config: scenes.make_scenes(
        out, seed=config["seed"], data_root=config["data_root"], train_scenes=config["train_scenes"],
        val_scenes=config["val_scenes"], options=scenes.Options(size=config.get("size", scenes.Options.size)),
        progress=lambda line: print(line, file=sys.stderr, flush=True)),  # minutes at the mini scale
        scenes.MANIFEST),
}


def generate(config: dict[str, Any], run_dir: Path) -> None:
    GENERATORS[config["generator"]][0](run_dir, config)


def written_sizes(config: dict[str, Any]) -> dict[str, int] | None:
    """The image counts of a data run's splits, from its config where the generator takes them."""
    if config.get("generator") == "scenes":
        return {"train": int(config["train_scenes"]), "val": int(config["val_scenes"])}
    return None


KIND = register_kind(RunKind(
    "data", run=generate, done_file=lambda config: GENERATORS[config["generator"]][1], sizes=written_sizes,
    estimate=no_compute("data", "CPU only"),
))
