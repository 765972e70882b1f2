"""How a dense run fits the processes it runs in: one process (mmengine's ``none`` launcher), or one
per GPU under ``torchrun`` (its ``pytorch`` launcher, :func:`launched_by_torchrun`). What a config
asks for that one process cannot do is switched in the config before the Runner is built, one log
line per switch (:func:`single_process_fallbacks`): SyncBN -> BN anywhere outside torch.distributed,
mixed precision -> fp32 without an accelerator; a total batch below the recipe's is only noted.
Kept apart from the config surgery of :mod:`benchmark.downstream.mm.config` because it depends on
the machine and the launch, not on the data or the checkpoint.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmengine.config import Config

SYNC_BN_TYPES = ("SyncBN", "MMSyncBN", "SyncBatchNorm", "TorchSyncBN")
_AMP_ONLY_KEYS = ("loss_scale", "dtype", "use_fsdp")


def launched_by_torchrun() -> bool:
    """Several processes started by torchrun (one per GPU): mmengine's ``pytorch`` launcher."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def distributed() -> bool:
    """Running as one of several processes: torch.distributed is up, or torchrun started us."""
    import torch.distributed as dist

    return (dist.is_available() and dist.is_initialized()) or launched_by_torchrun()


def is_sync_bn(norm_type: Any) -> bool:
    """A norm type (a name or a class) that synchronises across processes."""
    if isinstance(norm_type, str):
        return norm_type in SYNC_BN_TYPES
    import torch.nn as nn

    return isinstance(norm_type, type) and issubclass(norm_type, nn.SyncBatchNorm)


def switch_sync_bn(node: Any, path: str = "") -> list[str]:
    """Turns every ``dict(type=SyncBN...)`` below ``node`` into ``type='BN'`` in place; returns their dotted paths."""
    found: list[str] = []
    if isinstance(node, dict):
        if "type" in node and is_sync_bn(node["type"]):
            node["type"] = "BN"
            found.append(path or "<root>")
        for key, value in node.items():
            found += switch_sync_bn(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += switch_sync_bn(value, f"{path}.{i}")
    return found


def has_accelerator() -> bool:
    from mmengine.device import get_device

    return get_device() != "cpu"


def single_process_fallbacks(cfg: Config) -> list[str]:
    """Switches, in ``cfg``, what a single (non-distributed) process cannot run; returns one log line per switch.

    * SyncBN (any ``dict(type='SyncBN' | 'MMSyncBN' | 'SyncBatchNorm')``, anywhere: backbone
      pyramid, neck, heads, top-level helper variables) becomes BN outside torch.distributed;
    * ``AmpOptimWrapper`` becomes ``OptimWrapper`` (fp32) without CUDA (or another accelerator);
    * a recipe whose ``auto_scale_lr.base_batch_size`` exceeds this process's batch is noted
      (not changed: the learning rates stay those of the config).
    """
    notes: list[str] = []
    several = distributed()
    if not several:
        paths = [p for key in list(cfg.keys()) for p in switch_sync_bn(cfg[key], str(key))]
        if paths:
            notes.append(f"single process without torch.distributed: SyncBN switched to BN in {', '.join(paths)}")
    wrapper = cfg.get("optim_wrapper")
    if isinstance(wrapper, dict) and wrapper.get("type") == "AmpOptimWrapper" and not has_accelerator():
        wrapper["type"] = "OptimWrapper"
        dropped = [k for k in _AMP_ONLY_KEYS if wrapper.pop(k, None) is not None]
        extra = f" (dropped {', '.join(dropped)})" if dropped else ""
        notes.append(f"no CUDA device: mixed precision AmpOptimWrapper switched to fp32 OptimWrapper{extra}")
    scale = cfg.get("auto_scale_lr") or {}
    loader = cfg.get("train_dataloader") or {}
    base, per_proc = scale.get("base_batch_size"), loader.get("batch_size")
    if not several and base and per_proc and int(per_proc) < int(base) and not scale.get("enable"):
        notes.append(f"single process: {per_proc} images per step where the recipe assumes {base} "
                     f"(auto_scale_lr.base_batch_size); learning rates are left as configured")
    return notes
