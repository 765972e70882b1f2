"""Moving batches to the device."""

from __future__ import annotations

from typing import Any

import torch


def to_device(value: Any, device: torch.device) -> Any:
    """A tensor, or a (nested) list or tuple of tensors as a list, on ``device``. To a GPU through
    pinned memory and a non-blocking copy (a tensor the loader already pinned is not copied
    again), so that the host goes on queueing work instead of waiting for the GPU to drain."""
    if isinstance(value, (list, tuple)):
        return [to_device(v, device) for v in value]
    if device.type != "cuda":
        return value.to(device)
    return value.pin_memory().to(device, non_blocking=True)
