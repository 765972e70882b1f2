"""ADE20k semantic segmentation: UperNet on a ViT pyramid, in MMSegmentation.

Usage::

    python -m benchmark.segment --ckpt CKPT --config configs_mm/upernet_vit_smoke.py \\
        --data-root ADE20K_DIR --work-dir DIR [--seed N] [--cfg-options k=v ...]

``CKPT`` is an encoder export (``.safetensors``, converted into ``DIR/mm_backbone.pth``), an mm
backbone checkpoint (``.pth``) or ``none``. Writes ``DIR/result.json`` with ``mIoU`` and ``aAcc``
(percent). Bad input exits 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from benchmark.mm.runner import SEGMENT, run
from benchmark.mm.runner import main as _main


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


if __name__ == "__main__":
    sys.exit(main())
