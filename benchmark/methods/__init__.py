"""Pre-training methods, one module each, all with the :class:`~benchmark.methods.base.PretrainMethod`
interface, each registered where it is defined (``@register_method``, as timm registers its
models): :data:`METHODS` maps a name to its class."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from benchmark.methods.base import METHODS, PretrainMethod, register_method

# isort: off
# Imported in the order lists of methods show them (the paper's method first); each registers its method.
from benchmark.methods import splitmask, beit, mae, dino, byol, supervised  # noqa: F401
# isort: on


def method_class(name: str) -> type[PretrainMethod]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]


def build_method(name: str, encoder: nn.Module, **kwargs: Any) -> PretrainMethod:
    return method_class(name)(encoder, **kwargs)


__all__ = ["METHODS", "PretrainMethod", "build_method", "method_class", "register_method"]
