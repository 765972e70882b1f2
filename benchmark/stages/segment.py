"""ADE20k semantic segmentation: UperNet on a ViT pyramid, in MMSegmentation.

Usage::

    python -m benchmark.segment --ckpt CKPT --config configs_mm/upernet_vit_smoke.py \\
        --data-root ADE20K_DIR --work-dir DIR [--seed N] [--cfg-options k=v ...]

``CKPT`` is an encoder export (``.safetensors``, converted into ``DIR/mm_backbone.pth``), an mm
backbone checkpoint (``.pth``) or ``none``. Writes ``DIR/result.json`` with ``mIoU`` and ``aAcc``
(percent). Bad input exits 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.downstream.mm.runner import SEGMENT, absolute_config, mm_args, run
from benchmark.downstream.mm.runner import main as _main
from benchmark.stages.cost import estimate_dense
from benchmark.stages.kinds import RunKind, register_kind


def run_segmentation(
    ckpt: str | Path | None,
    config: str | Path,
    data_root: str | Path,
    work_dir: str | Path,
    seed: int = 0,
    cfg_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Trains and evaluates UperNet; writes ``work_dir/result.json``; returns its metrics."""
    return run(SEGMENT, ckpt, config, data_root, work_dir, seed, cfg_options)


def main(argv: Sequence[str] | None = None) -> int:
    return _main(SEGMENT, "ADE20k directory: {images,annotations}/{training,validation}/", argv)


KIND = register_kind(RunKind(
    "segment", run=lambda config, run_dir: run_segmentation(config["ckpt"], config["config"], config["data_root"], run_dir,
                                              seed=config.get("seed", 0), cfg_options=config.get("cfg_options")),
    done_file=lambda config: "result.json", command="benchmark.segment", command_args=mm_args, multi_process=True,
    estimate=lambda config, dataset_sizes=None, world_size=None: estimate_dense("segment", config, dataset_sizes, world_size),
    metrics={"segment": ("mIoU",)}, prepare=lambda config, tags: absolute_config(config), timeout_min=48 * 60,
))
