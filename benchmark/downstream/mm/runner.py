"""Shared code of ``python -m benchmark.detect`` and ``python -m benchmark.segment``.

One run = check the data, resolve the checkpoint (an encoder export is converted to
``WORK_DIR/mm_backbone.pth`` first), load the mmengine config and fill in the run-time values
(data root, class names and counts, backbone arch / img_size / checkpoint, in_channels, seed,
work dir), train with mmengine's Runner, take the validation metrics of the end of training and
write ``WORK_DIR/result.json``. This module puts those steps in order; the data checks are in
:mod:`benchmark.downstream.mm.datasets`, the config surgery in :mod:`benchmark.downstream.mm.config`
and what depends on the launch in :mod:`benchmark.downstream.mm.processes`.

A run is a single process (``launcher='none'``), or, started by ``torchrun --nproc_per_node N``,
N processes with one GPU each (mmengine's ``pytorch`` launcher; rank 0 writes ``result.json``).
What a config asks for that one process cannot do is switched before the Runner is built, and
each switch is logged as one warning line in the run's log
(:func:`~benchmark.downstream.mm.processes.single_process_fallbacks`): SyncBN -> BN everywhere in
the config (backbone pyramid, neck, heads), and mixed precision (``AmpOptimWrapper``) -> fp32
``OptimWrapper`` without CUDA. A total batch smaller than the recipe's
``auto_scale_lr.base_batch_size`` is only logged.
On a GPU with an mmcv built without its CUDA ops, RoIAlign and NMS switch to torchvision's kernels
(:mod:`benchmark.downstream.mm.ops`), logged the same way.

Bad input (missing data, a COCO annotation file with missing fields or boxes outside their image,
ADE20k labels out of range, unknown checkpoint format, mismatching checkpoint, a mistyped
``--cfg-options`` key, a training of zero length) raises :class:`InputError` or :class:`benchmark.errors.CheckpointError`;
the CLIs print one line and exit 2 (:func:`benchmark.utils.cli_errors.cli_errors`).

An interrupted run started again on its work dir resumes from its latest whole checkpoint and ends
as the uninterrupted run would have; SIGTERM makes it write a checkpoint after the current
iteration and exit with code 75 (:mod:`benchmark.downstream.mm.faults`, docs/faults.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark import REPO
from benchmark.downstream.mm import ops
from benchmark.downstream.mm.config import (
    check_train_length,
    configure_backbone,
    configure_detect,
    configure_segment,
    json_values,
    load_config,
)
from benchmark.downstream.mm.datasets import ade_classes, coco_classes
from benchmark.downstream.mm.processes import has_accelerator, launched_by_torchrun, single_process_fallbacks
from benchmark.errors import CheckpointError, InputError
from benchmark.models.checkpoints.export import to_mm
from benchmark.utils.cli_errors import cli_errors
from benchmark.utils.lock import exclusive, main_process

if TYPE_CHECKING:  # heavy imports stay out of CLI start-up and bad-input exits
    from mmengine.config import Config
    from mmengine.runner import Runner

_RUN_COUNTER = itertools.count()


# ---------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """What differs between detection and segmentation."""

    kind: str  # result.json "kind"
    scope: str  # mmengine default scope
    classes: Callable[[Path], tuple[str, ...]]
    configure: Callable[[Config, Path, tuple[str, ...], int], None]
    metrics: dict[str, tuple[str, float]]  # our name -> (suffix of the mm metric key, scale to 0-100)


DETECT = Task(
    kind="detect",
    scope="mmdet",
    classes=coco_classes,
    configure=configure_detect,
    metrics={
        "bbox_mAP": ("bbox_mAP", 100.0),
        "bbox_mAP_50": ("bbox_mAP_50", 100.0),
        "segm_mAP": ("segm_mAP", 100.0),
        "segm_mAP_50": ("segm_mAP_50", 100.0),
    },
)
SEGMENT = Task(
    kind="segment",
    scope="mmseg",
    classes=ade_classes,
    configure=configure_segment,
    metrics={"mIoU": ("mIoU", 1.0), "aAcc": ("aAcc", 1.0)},
)


# ---------------------------------------------------------------------------- checkpoint


def resolve_checkpoint(ckpt: str | Path | None) -> tuple[Path | None, dict[str, Any] | None, str | None]:
    """``(path, model spec, format)`` of a checkpoint; ``(None, None, None)`` for ``None`` / ``"none"``.

    Raises :class:`CheckpointError` for a missing file or an unknown format.
    """
    if ckpt is None or str(ckpt).lower() == "none":
        return None, None, None
    from benchmark.models.checkpoints.export import read_spec

    path = Path(ckpt)
    spec, fmt = read_spec(path)
    return path, spec, fmt


def mm_checkpoint(path: Path | None, fmt: str | None, work_dir: Path) -> Path | None:
    """The mm backbone checkpoint to load: ``path`` itself, or an encoder export converted into ``work_dir``."""
    if path is None or fmt != "encoder.safetensors":
        return path
    work_dir.mkdir(parents=True, exist_ok=True)
    return to_mm(path, work_dir / "mm_backbone.pth")


# ---------------------------------------------------------------------------- running


def _metrics_hook() -> Any:
    """A hook that remembers the metrics of the latest validation and the iteration it ran at."""
    from mmengine.hooks import Hook

    class LastValMetrics(Hook):
        priority = "LOWEST"

        def __init__(self) -> None:
            self.metrics: dict[str, Any] | None = None
            self.at_iter = -1

        def after_val_epoch(self, runner: Any, metrics: dict[str, Any] | None = None) -> None:
            self.metrics = dict(metrics or {})
            self.at_iter = runner.iter

    return LastValMetrics()


def _pick_metrics(task: Task, raw: dict[str, Any], logger: logging.Logger) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, (suffix, scale) in task.metrics.items():
        keys = [k for k in raw if k == suffix or k.endswith("/" + suffix)]
        if not keys:
            # mmdet's CocoMetric reports nothing when a model makes no detection at all: AP is 0 then
            logger.warning(f"metric {suffix!r} missing from the evaluation ({sorted(raw)}); recording 0.0")
            out[name] = 0.0
            continue
        value = round(float(raw[keys[0]]) * scale, 4)  # mmdet rounds to 3 decimals of 0-1: no float noise
        if not math.isfinite(value):
            logger.warning(f"metric {suffix!r} is {value}; recording 0.0")
            value = 0.0
        out[name] = value
    return out


def _close_log_files(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)


@dataclass
class Prepared:
    """A run's resolved config, before any mmengine Runner exists."""

    task: Task
    cfg: Config
    work_dir: Path
    seed: int
    ckpt: str | Path | None
    started: float
    notes: list[str] = field(default_factory=list)  # logged as warnings once the Runner's logger exists


def prepare(
    task: Task,
    ckpt: str | Path | None,
    config: str | Path,
    data_root: str | Path,
    work_dir: str | Path,
    seed: int = 0,
    cfg_options: dict[str, Any] | None = None,
) -> Prepared:
    """Checks the input, converts the checkpoint and fills in / adapts the config for one process."""
    started = time.time()
    data_root, work_dir = Path(data_root).resolve(), Path(work_dir).resolve()
    classes = task.classes(data_root)  # data first: the cheapest check
    src, spec, fmt = resolve_checkpoint(ckpt)
    cfg = load_config(config, cfg_options)
    check_train_length(cfg, config, cfg_options)
    notes: list[str] = []
    config_arch = cfg.model.get("backbone", {}).get("arch")
    embed_dim = configure_backbone(cfg, src, spec, set(cfg_options or {}))  # checks arch before converting
    if config_arch and cfg.model.backbone["arch"] != config_arch:
        notes.append(f"backbone arch {cfg.model.backbone['arch']} taken from the checkpoint ({src}); "
                     f"the config names {config_arch}")
    mm_ckpt = mm_checkpoint(src, fmt, work_dir)
    cfg.model.backbone["checkpoint"] = str(mm_ckpt) if mm_ckpt else None
    if "embed_dim" in cfg:
        cfg.embed_dim = embed_dim
    task.configure(cfg, data_root, classes, embed_dim)
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg.work_dir = str(work_dir)
    if launched_by_torchrun() and not has_accelerator():
        raise InputError("several processes need one GPU each (mmengine's pytorch launcher); "
                         "run a single process on CPU")
    cfg.launcher = "pytorch" if launched_by_torchrun() else "none"
    cfg.randomness = {**dict(cfg.get("randomness") or {}), "seed": int(seed)}
    _fault_tolerant(cfg, notes)
    from benchmark.downstream.mm.faults import latest_checkpoint

    latest = latest_checkpoint(work_dir)
    if latest is not None:  # an interrupted run: resume from its latest whole checkpoint
        cfg.resume, cfg.load_from = True, str(latest)
        notes.append(f"resuming from the latest checkpoint in {work_dir}: {latest.name}")
    cfg.experiment_name = f"{task.kind}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{next(_RUN_COUNTER)}"
    notes += single_process_fallbacks(cfg)
    if ops.needed(has_accelerator()):  # an mmcv built without CUDA ops, on a GPU: torchvision's kernels
        notes += ops.torchvision_ops(cfg)
    return Prepared(task, cfg, work_dir, int(seed), ckpt, started, notes)


def _fault_tolerant(cfg: Config, notes: list[str]) -> None:
    """mmengine's train loops swapped for their resumable versions (:mod:`benchmark.downstream.mm.faults`),
    and checkpoints written atomically."""
    from benchmark.downstream.mm.faults import ATOMIC_BACKEND, RESUMABLE_LOOPS

    train_cfg = cfg.get("train_cfg") or {}
    loop = train_cfg.get("type")
    if loop in RESUMABLE_LOOPS:
        train_cfg["type"] = RESUMABLE_LOOPS[loop]
    elif loop not in RESUMABLE_LOOPS.values():
        notes.append(f"train loop {loop!r}: an interrupted run resumes, but not bit for bit")
    hook = (cfg.get("default_hooks") or {}).get("checkpoint")
    if isinstance(hook, dict) and not hook.get("backend_args"):
        hook["backend_args"] = dict(backend=ATOMIC_BACKEND)


def build_runner(prepared: Prepared) -> Runner:
    """The mmengine Runner of a prepared run (model built, nothing trained), with the
    :class:`~benchmark.downstream.mm.faults.FaultTolerance` hook; logs the run's notes."""
    # The Runner logs its environment with distutils, which Python 3.12 dropped; setuptools provides it
    # once imported (otherwise only by its .pth file, which a PYTHONPATH folder like the lease's kit never runs).
    import setuptools  # noqa: F401
    from mmengine.runner import Runner

    from benchmark.downstream.mm.faults import FaultTolerance

    runner = Runner.from_cfg(prepared.cfg)
    runner.register_hook(FaultTolerance("detection" if prepared.task.kind == "detect" else "segmentation"))
    for note in prepared.notes:
        runner.logger.warning(note)
    return runner


def run(
    task: Task,
    ckpt: str | Path | None,
    config: str | Path,
    data_root: str | Path,
    work_dir: str | Path,
    seed: int = 0,
    cfg_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Trains and evaluates one model; writes ``work_dir/result.json`` and returns its metrics."""
    import pickle

    from benchmark.downstream.mm.faults import FaultTolerance

    prepared = prepare(task, ckpt, config, data_root, work_dir, seed, cfg_options)
    runner = build_runner(prepared)
    try:
        recorder = _metrics_hook()
        runner.register_hook(recorder)
        try:
            runner.train()
        except pickle.UnpicklingError as err:  # a checkpoint holding objects, not only tensors and plain values
            from benchmark.utils.io import load_failure

            raise CheckpointError(f"{prepared.cfg.load_from}: cannot be resumed with weights_only loading "
                                  f"({load_failure(err)}); move it away to start over") from None
        raw = recorder.metrics if recorder.metrics is not None and recorder.at_iter == runner.iter else runner.val()
        metrics = _pick_metrics(task, raw or {}, runner.logger)
        runner.logger.info(f"{task.kind} metrics: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    finally:
        for hook in runner.hooks:
            if isinstance(hook, FaultTolerance):
                hook.stop.restore()
        _close_log_files(runner.logger)
    from mmengine.dist import get_rank

    if get_rank() == 0:  # the metrics are gathered from every process; one writes them
        write_result(prepared.work_dir, task, metrics, prepared.cfg, prepared.seed, prepared.started, ckpt)
    return metrics


def write_result(
    work_dir: Path, task: Task, metrics: dict[str, float], cfg: Config, seed: int, started: float,
    ckpt: str | Path | None,
) -> Path:
    """``work_dir/result.json`` with the resolved config as plain values."""
    from benchmark.utils.results import write_result as _write

    checkpoint = None if ckpt is None or str(ckpt).lower() == "none" else str(ckpt)
    return _write(work_dir, kind=task.kind, metrics=metrics, config=json_values(cfg.to_dict()), seed=seed,
                  started=started, checkpoint=checkpoint)


# ---------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cfg_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``k=v`` pairs parsed as mmengine's ``--cfg-options`` does (lists, tuples, numbers, bools)."""
    if not pairs:
        return {}
    from mmengine.config import DictAction

    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise InputError(f"--cfg-options expects KEY=VALUE pairs, got {bad[0]!r}")
    namespace = argparse.Namespace()
    DictAction(option_strings=["--cfg-options"], dest="cfg_options")(None, namespace, list(pairs))
    return dict(namespace.cfg_options)


def mm_args(config: dict[str, Any], run_dir: Path) -> list[str]:
    """The command line (:func:`main`) of a driver's detection or segmentation run: ``--ckpt
    --config --data-root --work-dir --seed`` and ``--cfg-options`` for its resolved ``config``."""
    args = ["--ckpt", str(config.get("ckpt") or "none"), "--config", str(config["config"]),
            "--data-root", str(config["data_root"]), "--work-dir", str(run_dir), "--seed", str(config.get("seed", 0))]
    options = config.get("cfg_options") or {}
    if options:
        args += ["--cfg-options", *(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in options.items())]
    return args


def absolute_config(config: dict[str, Any]) -> dict[str, Any]:
    """A driver's run config with its MMEngine config path made absolute (the registry writes it
    relative to the repository)."""
    path = Path(config["config"])
    return {**config, "config": str(path if path.is_absolute() else REPO / path)}


def main(task: Task, data_help: str, argv: Sequence[str] | None = None) -> int:
    """The CLI of one task; returns the exit code (2 on bad input)."""
    parser = _Parser(prog=f"python -m benchmark.{task.kind}",
                     description=f"Train and evaluate a ViT backbone ({task.kind}) with {task.scope}; "
                                 "writes WORK_DIR/result.json.")
    parser.add_argument("--ckpt", required=True, help="encoder .safetensors, mm_backbone .pth, or 'none' (random init)")
    parser.add_argument("--config", required=True, help="mmengine config file")
    parser.add_argument("--data-root", required=True, help=data_help)
    parser.add_argument("--work-dir", required=True, help="output directory (logs, result.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                        help="config overrides, e.g. train_cfg.max_epochs=1")
    args = parser.parse_args(argv)
    with cli_errors(task.kind, args.work_dir) as stopped:
        options = _cfg_options(args.cfg_options)
        with exclusive(args.work_dir, "work directory") if main_process() else nullcontext():
            metrics = run(task, args.ckpt, args.config, args.data_root, args.work_dir, args.seed, options)
    if stopped.code is not None:
        return stopped.code
    print(json.dumps({"result": str(Path(args.work_dir) / "result.json"), "metrics": metrics}))
    return 0
