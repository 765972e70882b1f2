"""The dense downstream tasks, two run kinds over one runner (:mod:`benchmark.downstream.mm.runner`)
on a ViT feature pyramid:

- ``detect``: COCO detection and instance segmentation, Mask R-CNN + FPN in MMDetection; writes
  ``bbox_mAP``, ``bbox_mAP_50``, ``segm_mAP`` and ``segm_mAP_50`` (0-100);
- ``segment``: ADE20k semantic segmentation, UperNet in MMSegmentation; writes ``mIoU`` and
  ``aAcc`` (percent).

Usage::

    python -m benchmark.detect --ckpt CKPT --config configs_mm/mask_rcnn_vit_fpn_smoke.py \\
        --data-root COCO_DIR --work-dir DIR [--seed N] [--cfg-options k=v ...]
    python -m benchmark.segment --ckpt CKPT --config configs_mm/upernet_vit_smoke.py \\
        --data-root ADE20K_DIR --work-dir DIR [--seed N] [--cfg-options k=v ...]

``CKPT`` is an encoder export (``.safetensors``, converted into ``DIR/mm_backbone.pth``), an mm
backbone checkpoint (``.pth``) or ``none``. Each writes ``DIR/result.json``. Bad input exits 2.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.downstream.mm.runner import DETECT, SEGMENT, Task, absolute_config, main, mm_args, run
from benchmark.stages.cost import estimate_dense
from benchmark.stages.kinds import RunKind, register_kind

DATA_HELP = {"detect": "COCO directory: {train2017,val2017}/ and annotations/instances_*2017.json",
             "segment": "ADE20k directory: {images,annotations}/{training,validation}/"}
TABLE_METRICS = {"detect": ("bbox_mAP", "segm_mAP"), "segment": ("mIoU",)}


def run_detection(ckpt: str | Path | None, config: str | Path, data_root: str | Path, work_dir: str | Path,
                  seed: int = 0, cfg_options: dict[str, Any] | None = None) -> dict[str, float]:
    """Trains and evaluates Mask R-CNN; writes ``work_dir/result.json``; returns its metrics."""
    return run(DETECT, ckpt, config, data_root, work_dir, seed, cfg_options)


def run_segmentation(ckpt: str | Path | None, config: str | Path, data_root: str | Path, work_dir: str | Path,
                     seed: int = 0, cfg_options: dict[str, Any] | None = None) -> dict[str, float]:
    """Trains and evaluates UperNet; writes ``work_dir/result.json``; returns its metrics."""
    return run(SEGMENT, ckpt, config, data_root, work_dir, seed, cfg_options)


def detect_main(argv: Sequence[str] | None = None) -> int:
    return main(DETECT, DATA_HELP["detect"], argv)


def segment_main(argv: Sequence[str] | None = None) -> int:
    return main(SEGMENT, DATA_HELP["segment"], argv)


def config_files(path: Path) -> list[Path]:
    """An MMEngine config file and, depth first, the ``_base_`` files it inherits from. A file that
    cannot be read is left out: the run says so."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    bases: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
            value = ast.literal_eval(node.value)
            bases = [value] if isinstance(value, str) else list(value)
    return [path] + [f for base in bases for f in config_files(path.parent / base)]


def recipe(config: dict[str, Any]) -> bytes:
    """The text of the MMEngine config a dense run names and of its bases: part of the run's key, so
    that a run of an edited config is a new run, not the old one found done."""
    return b"".join(f.read_bytes() for f in config_files(Path(absolute_config(config)["config"])))


def _kind(task: Task) -> RunKind:
    def run_config(config: dict[str, Any], run_dir: Path) -> dict[str, float]:
        return run(task, config["ckpt"], config["config"], config["data_root"], run_dir, config.get("seed", 0),
                   config.get("cfg_options"))

    def estimate(config: dict[str, Any], dataset_sizes: dict[str, int] | None = None, world_size: int | None = None):
        return estimate_dense(task.kind, config, dataset_sizes, world_size)

    return RunKind(task.kind, run=run_config, done_file=lambda config: "result.json", command=f"benchmark.{task.kind}",
                   command_args=mm_args, multi_process=True, estimate=estimate, recipe=recipe,
                   metrics={task.kind: TABLE_METRICS[task.kind]}, prepare=lambda config, tags: absolute_config(config),
                   timeout_min=48 * 60)


KINDS = [register_kind(_kind(task)) for task in (DETECT, SEGMENT)]
