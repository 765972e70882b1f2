"""Pre-training methods, one module each, all with the :class:`PretrainMethod` interface.

The registry names each method's module and class; a module is imported only when its method
is built, so a method's own dependencies never slow down the others.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch.nn as nn

from benchmark.methods.base import PretrainMethod

# name -> "module:Class" below benchmark.methods
METHODS: dict[str, str] = {
    "splitmask": "splitmask:SplitMask",
    "beit": "beit:BEiT",
    "mae": "mae:MAE",
    "dino": "dino:DINO",
    "byol": "byol:BYOL",
    "supervised": "supervised:Supervised",
}


def method_class(name: str) -> type[PretrainMethod]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(f"benchmark.methods.{module}"), cls)


def build_method(name: str, encoder: nn.Module, **kwargs: Any) -> PretrainMethod:
    return method_class(name)(encoder, **kwargs)


__all__ = ["METHODS", "PretrainMethod", "build_method", "method_class"]
