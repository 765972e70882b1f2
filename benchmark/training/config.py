"""Stage configs: dataclasses built from JSON with every key and type checked, and written back."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
from pathlib import Path
from typing import Any, TypeVar

from benchmark.errors import ConfigError
from benchmark.utils.io import write_json

C = TypeVar("C")


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Builds dataclass ``cls`` from ``values``, rejecting unknown keys (with the nearest valid
    key suggested) and values of the wrong type."""
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
    return cls(**values)


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


def read_json(path: str | Path) -> Any:
    """A JSON config file's contents; one-line :class:`ConfigError` naming the file otherwise."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
