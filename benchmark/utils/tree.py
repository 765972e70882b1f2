"""The one walker over config trees (JSON-like values: dicts, lists and tuples, leaves): refs to
other runs, data-set markers, MMEngine pipelines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

KEEP = object()  # rebuild(): "not this node, descend into it"


def nodes(value: Any) -> Iterator[Any]:
    """Every node of ``value``, pre-order: the value itself, then its items in order."""
    yield value
    children = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for child in children:
        yield from nodes(child)


def rebuild(value: Any, replace: Callable[[Any], Any]) -> Any:
    """``value`` rebuilt, each node for which ``replace(node)`` is not :data:`KEEP` replaced by
    that (and not descended into); dicts and lists are copied, tuples come back as lists."""
    new = replace(value)
    if new is not KEEP:
        return new
    if isinstance(value, dict):
        return {k: rebuild(v, replace) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rebuild(v, replace) for v in value]
    return value


def first_value(value: Any, key: str) -> Any:
    """The first value (pre-order) of ``key`` in the dicts of ``value`` that is not None, or None."""
    return next((node[key] for node in nodes(value) if isinstance(node, dict) and node.get(key) is not None), None)
