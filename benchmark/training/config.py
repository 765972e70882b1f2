"""Stage configs: dataclasses built from JSON with every key, type, range and relation checked in
one place (:func:`config_from_dict`, :func:`validate`) before anything is written, and written back.

A config class lists its ranges as ``RULES`` (field -> :class:`Rule`), the pairs of keys a file may
not give together as ``EXCLUSIVE``, and the relations between fields in a ``relations()`` method
returning what is wrong. Each refusal is one :class:`ConfigError` line naming the field, the value
and what is allowed (and the file, where the config came from one: :func:`read_config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from benchmark.errors import ConfigError
from benchmark.utils.io import write_json

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field may hold: ``test(value)`` is true for an allowed value, ``allowed`` says so in words."""

    test: Callable[[Any], bool]
    allowed: str


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f"at least {low:g}")


def positive() -> Rule:
    return Rule(lambda v: v > 0, "positive")


def in_unit(zero: bool = False, one: bool = True) -> Rule:
    """A number in (0, 1] (``zero``: from 0; ``one``: up to 1 included)."""
    low, high = ("[" if zero else "("), ("]" if one else ")")
    return Rule(lambda v: (v >= 0 if zero else v > 0) and (v <= 1 if one else v < 1), f"in {low}0, 1{high}")


def one_of(choices: Any) -> Rule:
    listed = sorted(choices)
    return Rule(lambda v: v in listed, f"one of {listed}")


def device_name() -> Rule:
    return Rule(lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()),
                "auto, cpu, cuda or cuda:N")


def workers() -> Rule:
    """A loader's ``num_workers``: -1 means :func:`benchmark.data.loader.default_workers`."""
    return Rule(lambda v: v >= -1, "-1 (default_workers() for this machine) or at least 0")


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.test(v), f"null or {rule.allowed}")


def validate(config: Any) -> None:
    """Raises :class:`ConfigError` for the first field outside its range (the config class's
    ``RULES``) or relation (its ``relations()``)."""
    name = type(config).__name__
    for field, rule in getattr(config, "RULES", {}).items():
        value = getattr(config, field)
        if not rule.test(value):
            raise ConfigError(f"{name}.{field} = {value!r}: should be {rule.allowed}")
    relations = getattr(config, "relations", None)
    problems = relations() if relations else []
    if problems:
        raise ConfigError(f"{name}: {problems[0]}")


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Builds dataclass ``cls`` from ``values``, rejecting unknown keys (with the nearest valid
    key suggested), values of the wrong type, pairs of keys that may not come together (the
    class's ``EXCLUSIVE``) and values outside their range or relations (:func:`validate`)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{cls.__name__}: expected a JSON object of fields, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    missing = [name for name, f in fields.items() if name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{cls.__name__}: missing required key {missing[0]!r}")
    for key, value in values.items():
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{cls.__name__}: unknown key {key!r}{hint}")
        expected = fields[key].type if isinstance(fields[key].type, str) else fields[key].type.__name__
        if not _type_ok(value, expected):
            raise ConfigError(f"{cls.__name__}: {key}={value!r} should be of type {expected}")
    for a, b in getattr(cls, "EXCLUSIVE", ()):
        if values.get(a) is not None and values.get(b) is not None:
            raise ConfigError(f"{cls.__name__}: {a} and {b} given together; give one of them (the other is derived)")
    config = cls(**values)
    validate(config)
    return config


def check_kwargs(fn: Any, values: dict[str, Any], where: str, skip: tuple[str, ...] = ()) -> None:
    """Rejects keys of ``values`` that ``fn`` (a class: its ``__init__``) takes no argument of,
    suggesting the nearest one, before anything is built."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n in params if n not in skip and n != "self"]
    for key in values:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; expected one of {names}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def _type_ok(value: Any, annotation: str) -> bool:
    allowed = {
        "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,),
    }
    options = [a.strip() for a in annotation.replace("Optional[", "").rstrip("]").split("|")]
    for option in options:
        base = option.split("[")[0]
        if base == "None" and value is None:
            return True
        if base in allowed and isinstance(value, allowed[base]) and not (base != "bool" and isinstance(value, bool)):
            return True
        if base not in allowed and base != "None":
            return True  # complex annotations are not checked
    return False


def write_config(path: Path, config: Any) -> None:
    write_json(path, dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config)


def read_config(cls: type[C], path: str | Path) -> C:
    """The config dataclass ``cls`` from a JSON file; every refusal one line naming the file."""
    try:
        return config_from_dict(cls, read_json(path))
    except ConfigError as err:
        if str(err).startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {err}") from None


def read_json(path: str | Path) -> Any:
    """A JSON config file's contents; one-line :class:`ConfigError` naming the file otherwise."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
