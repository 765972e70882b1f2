"""COCO detection and instance segmentation: Mask R-CNN + FPN on a ViT pyramid, in MMDetection.

Usage::

    python -m benchmark.detect --ckpt CKPT --config configs_mm/mask_rcnn_vit_fpn_smoke.py \\
        --data-root COCO_DIR --work-dir DIR [--seed N] [--cfg-options k=v ...]

``CKPT`` is an encoder export (``.safetensors``, converted into ``DIR/mm_backbone.pth``), an mm
backbone checkpoint (``.pth``) or ``none``. Writes ``DIR/result.json`` with ``bbox_mAP``,
``bbox_mAP_50``, ``segm_mAP`` and ``segm_mAP_50`` on the 0-100 scale. Bad input exits 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from benchmark.mm.runner import DETECT, run
from benchmark.mm.runner import main as _main


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


if __name__ == "__main__":
    sys.exit(main())
