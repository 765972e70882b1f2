"""Pre-training methods, one module each, all with the :class:`PretrainMethod` interface."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from benchmark.methods.base import PretrainMethod
from benchmark.methods.splitmask import SplitMask

METHODS: dict[str, type[PretrainMethod]] = {cls.name: cls for cls in (SplitMask,)}


def build_method(name: str, encoder: nn.Module, **kwargs: Any) -> PretrainMethod:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name](encoder, **kwargs)


__all__ = ["METHODS", "PretrainMethod", "build_method"]
