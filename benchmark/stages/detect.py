"""COCO detection and instance segmentation: Mask R-CNN + FPN on a ViT pyramid, in MMDetection.

Usage::

    python -m benchmark.detect --ckpt CKPT --config configs_mm/mask_rcnn_vit_fpn_smoke.py \\
        --data-root COCO_DIR --work-dir DIR [--seed N] [--cfg-options k=v ...]

``CKPT`` is an encoder export (``.safetensors``, converted into ``DIR/mm_backbone.pth``), an mm
backbone checkpoint (``.pth``) or ``none``. Writes ``DIR/result.json`` with ``bbox_mAP``,
``bbox_mAP_50``, ``segm_mAP`` and ``segm_mAP_50`` on the 0-100 scale. Bad input exits 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.downstream.mm.runner import DETECT, absolute_config, mm_args, run
from benchmark.downstream.mm.runner import main as _main
from benchmark.stages.cost import estimate_dense
from benchmark.stages.kinds import RunKind, register_kind


def run_detection(
    ckpt: str | Path | None,
    config: str | Path,
    data_root: str | Path,
    work_dir: str | Path,
    seed: int = 0,
    cfg_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Trains and evaluates Mask R-CNN; writes ``work_dir/result.json``; returns its metrics."""
    return run(DETECT, ckpt, config, data_root, work_dir, seed, cfg_options)


def main(argv: Sequence[str] | None = None) -> int:
    return _main(DETECT, "COCO directory: {train2017,val2017}/ and annotations/instances_*2017.json", argv)


KIND = register_kind(RunKind(
    "detect", run=lambda config, run_dir: run_detection(config["ckpt"], config["config"], config["data_root"], run_dir,
                                              seed=config.get("seed", 0), cfg_options=config.get("cfg_options")),
    done_file=lambda config: "result.json", command="benchmark.detect", command_args=mm_args, multi_process=True,
    estimate=lambda config, dataset_sizes=None, world_size=None: estimate_dense("detect", config, dataset_sizes, world_size),
    metrics={"detect": ("bbox_mAP", "segm_mAP")}, prepare=lambda config, tags: absolute_config(config), timeout_min=48 * 60,
))
