"""What a run kind is: everything the driver, the launchers, the dry run and the report need to
know about one kind of run, registered by the module that defines the stage
(:func:`register_kind`), as timm registers its models. A leaf every stage imports; the table of
all kinds is :mod:`benchmark.stages.catalogue`, which imports the stages.

A :class:`RunKind` says what runs a config in this process (``run``), the command a launcher
starts for it under torchrun or on SLURM (``command`` and ``command_args``), which file marks a
finished run (``done_file``), what the run costs (``estimate``, for the dry run; a data run's
``sizes`` price the runs that read it), which files beside its config are part of its key
(``recipe``) and which metrics of its ``result.json`` the report's tables show (``metrics``, by
result kind).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.utils.io import write_text

LAUNCH_CONFIG = "launch_config.json"  # the resolved config a launched command reads (--config)


def config_file_args(config: dict[str, Any], run_dir: Path) -> list[str]:
    """``--config RUN/launch_config.json --out RUN``: the arguments of the stages whose command
    line takes a config file (:mod:`benchmark.stages.cli`). The file is written atomically: a
    requeued SLURM job may read it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LAUNCH_CONFIG
    write_text(path, json.dumps(config, indent=1, sort_keys=True))
    return ["--config", str(path), "--out", str(run_dir)]


@dataclass(frozen=True)
class RunKind:
    name: str                                              # the driver's kind: pretrain, finetune, ...
    run: Callable[[dict[str, Any], Path], Any]             # runs a resolved config in this process
    done_file: Callable[[dict[str, Any]], str]             # the file (in the run dir) that marks it finished
    command: str | None = None                             # its command line (python -m ...); None: in-process only
    command_args: Callable[[dict[str, Any], Path], list[str]] = config_file_args
    multi_process: bool = False                            # runs under torchrun (one process per GPU)
    estimate: Callable[..., Any] | None = None             # (config, dataset_sizes, world_size) -> cost.Estimate
    # (config) -> {"train": n, "val": m}: the image counts of what a data run writes, so that the dry
    # run can price the runs that read it before it exists; None where it does not know them
    sizes: Callable[[dict[str, Any]], dict[str, int] | None] | None = None
    # (config) -> the bytes of the files the config names that decide what the run does (a dense
    # run's MMEngine config and its bases), hashed into the run's key; None: the config is all
    recipe: Callable[[dict[str, Any]], bytes] | None = None
    metrics: dict[str, tuple[str, ...]] = field(default_factory=dict)  # result kind -> the metrics tables show
    prepare: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] = lambda config, tags: config
    # prepare(config, tags): the config the stage takes, from the run's resolved config and tags
    timeout_min: int = 60                                  # SLURM time limit of one job, unless the user sets one


KINDS: dict[str, RunKind] = {}


def register_kind(kind: RunKind) -> RunKind:
    if kind.name in KINDS:
        raise ValueError(f"run kind {kind.name!r} is registered twice")
    KINDS[kind.name] = kind
    return kind
