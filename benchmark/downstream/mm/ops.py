"""Mask R-CNN's two compiled ops, RoIAlign and NMS: mmcv's where mmcv was built with them for the
device, torchvision's (which ship compiled for CPU and CUDA inside torch's wheels) where it was not.

``scripts/bootstrap.sh`` compiles mmcv's CUDA ops only where a GPU and a CUDA compiler are present;
an mmcv built elsewhere has CPU ops alone, and its ``RoIAlign`` and ``nms`` then fail on CUDA
tensors. :func:`torchvision_ops` switches a config to torchvision's kernels: every ``RoIAlign``
layer gets ``use_torchvision=True`` (mmcv's own switch: the same sampling, the same output), and
every ``nms`` becomes :data:`TORCHVISION_NMS`, :func:`torchvision_nms` with ``mmcv.ops.nms``'s
contract, which mmcv's ``batched_nms`` finds by name (it evaluates a config's ``type`` in its own
module, where :func:`register` puts it). One call is in no config: mmdet's mask targets crop each
ground-truth mask with ``mmcv.ops.roi_align`` itself, on the proposals' device, so
:func:`register` points that module's ``roi_align`` at :func:`torchvision_roi_align`. On CPU
tensors the two agree exactly, and a dense run switched so calls no compiled mmcv op
(tests/downstream/test_ops.py). ``SSLBENCH_MM_OPS=torchvision`` forces the switch on any device.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from benchmark.utils.tree import nodes

TORCHVISION_NMS = "torchvision_nms"
FORCE_ENV = "SSLBENCH_MM_OPS"  # "torchvision": use torchvision's ops even where mmcv's would run


def mmcv_cuda_ops() -> bool:
    """Whether this mmcv was compiled with its CUDA ops (a CPU-only build says "not available")."""
    from mmcv.ops import get_compiling_cuda_version

    return get_compiling_cuda_version() not in ("", "not available")


def torchvision_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0,
                    score_threshold: float = 0.0, max_num: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """``mmcv.ops.nms`` on torchvision's kernel: the kept ``(x1, y1, x2, y2, score)`` rows by
    decreasing score and their indices into ``boxes``. Boxes at or under ``score_threshold`` are
    dropped first; ``max_num`` > 0 keeps that many."""
    if offset != 0:
        raise ValueError("torchvision's nms has no offset (mmcv's legacy +1 box width); the configs use 0")
    indices = torch.arange(boxes.shape[0], device=boxes.device)
    if score_threshold > 0:
        valid = scores > score_threshold
        boxes, scores, indices = boxes[valid], scores[valid], indices[valid]
    from torchvision.ops import nms

    keep = nms(boxes.float(), scores.float(), float(iou_threshold))
    if max_num > 0:
        keep = keep[:max_num]
    return torch.cat([boxes[keep], scores[keep, None]], dim=1), indices[keep]


def torchvision_roi_align(input: torch.Tensor, rois: torch.Tensor, output_size: Any, spatial_scale: float = 1.0,
                          sampling_ratio: int = 0, pool_mode: str = "avg", aligned: bool = True) -> torch.Tensor:
    """``mmcv.ops.roi_align`` (the function) on torchvision's kernel, as mmcv's own ``RoIAlign``
    layer does with ``use_torchvision=True``; average pooling only, as torchvision has no other."""
    if pool_mode != "avg":
        raise ValueError(f"torchvision's roi_align averages; pool_mode {pool_mode!r} needs mmcv's CUDA ops")
    from torchvision.ops import roi_align

    return roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)


def register() -> None:
    """Makes :data:`TORCHVISION_NMS` a name mmcv's ``batched_nms`` resolves, and mmdet's mask
    targets crop with :func:`torchvision_roi_align` (idempotent; for the whole process, where the
    two kernels agree on CPU tensors and mmcv's have none on the GPU)."""
    import importlib

    # the module, not the function of the same name that mmcv.ops exports
    setattr(importlib.import_module("mmcv.ops.nms"), TORCHVISION_NMS, torchvision_nms)
    # mmdet imported mmcv's function by name into this module (BitmapMasks.crop_and_resize)
    importlib.import_module("mmdet.structures.mask.structures").roi_align = torchvision_roi_align


def forced() -> bool:
    return os.environ.get(FORCE_ENV, "").lower() == "torchvision"


def mmcv_compiled_ops() -> bool:
    """Whether this mmcv has compiled ops at all (not scripts/mmcv_ext_stub.py, whose every op
    raises: what the GPU lease installs in seconds)."""
    import importlib

    return getattr(importlib.import_module("mmcv._ext"), "COMPILED_OPS", True)


def needed(on_accelerator: bool) -> bool:
    """Whether a run must use torchvision's kernels: forced, on a GPU that this mmcv has no ops for,
    or on any device where this mmcv has none."""
    return forced() or (on_accelerator and not mmcv_cuda_ops()) or not mmcv_compiled_ops()


def torchvision_ops(cfg: Any) -> list[str]:
    """Switches the RoIAlign layers and NMS settings of ``cfg`` (an MMEngine config, or any tree of
    dicts and lists) to torchvision's kernels, in place; returns one note naming what was switched
    (none where the config has neither)."""
    roi, nms = 0, 0
    tree = [cfg[key] for key in cfg.keys()] if hasattr(cfg, "keys") and not isinstance(cfg, dict) else cfg
    for node in nodes(tree):
        if isinstance(node, dict) and node.get("type") == "RoIAlign":
            node["use_torchvision"] = True
            roi += 1
        elif isinstance(node, dict) and node.get("type") == "nms":
            node["type"] = TORCHVISION_NMS
            nms += 1
    if not roi and not nms:
        return []
    register()
    why = ("forced by SSLBENCH_MM_OPS=torchvision" if forced() else
           "this mmcv has no CUDA ops" if mmcv_compiled_ops() else "this mmcv has no compiled ops")
    return [f"{why}: {roi} RoIAlign layers and {nms} NMS settings use torchvision's kernels "
            "(rebuild mmcv with its CUDA ops to use its own: README, GPU)"]
