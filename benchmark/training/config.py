"""Stage configs: dataclasses built from JSON with every key, type, range and relation checked in
one place (:func:`config_from_dict`, :func:`validate`) before anything is written, and written back.

A config class lists its ranges as ``RULES`` (field -> :class:`Rule`), the pairs of keys a file may
not give together as ``EXCLUSIVE``, and the relations between fields in a ``relations()`` method
returning what is wrong. Each refusal is one :class:`ConfigError` line naming the field, the value
and what is allowed (and the file, where the config came from one: :func:`read_config`).

Beside a class's own rules: every number anywhere in a config is finite and fits in 64 bits (JSON's
``Infinity`` and a seed of 2**70 are refused, not met later as an overflow), and a field that means
the same in every stage config has one rule for all of them (:data:`FIELD_RULES`). A method's
arguments (``method_args``) are checked the same way against the method's own ``RULES``, declared
where the method is defined (:func:`check_kwargs`).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from benchmark.errors import ConfigError
from benchmark.utils.io import write_json

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field may hold: ``test(value)`` is true for an allowed value, ``allowed`` says so in
    words (a function giving the words where they depend on the machine: :func:`device_name`)."""

    test: Callable[[Any], bool]
    allowed: str | Callable[[], str]

    def says(self) -> str:
        return self.allowed() if callable(self.allowed) else self.allowed


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
    """auto, cpu, or a GPU this machine has (cuda, cuda:N): a run never starts on a device it cannot use."""
    def usable(v: str) -> bool:
        if v in ("auto", "cpu"):
            return True
        index = 0 if v == "cuda" else int(v[5:]) if v.startswith("cuda:") and v[5:].isdigit() else None
        return index is not None and index < _gpus()

    def allowed() -> str:
        gpus = _gpus()
        have = "it has none" if not gpus else f"cuda:0 to cuda:{gpus - 1}" if gpus > 1 else "cuda:0"
        return f"auto, cpu, cuda or cuda:N for a GPU this machine has ({have})"

    return Rule(usable, allowed)


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def augment_policy() -> Rule:
    """An augmentation policy string that timm's ``create_transform(auto_augment=...)`` parses:
    RandAugment (``rand-m9-mstd0.5-inc1``), AugMix (``augmix-...``) or an AutoAugment policy."""
    def parses(v: str) -> bool:
        from timm.data import create_transform

        try:
            create_transform(input_size=32, is_training=True, auto_augment=v)
        except (AssertionError, ValueError, KeyError, IndexError, TypeError):
            return False
        return True

    return Rule(parses, "a policy timm parses, e.g. rand-m9-mstd0.5-inc1 (RandAugment: rand, then -m<magnitude>, "
                        "-n<operations>, -mstd<magnitude noise>, -inc<0|1>, ...), augmix-m5 or original")


def workers() -> Rule:
    """A loader's ``num_workers``: -1 means :func:`benchmark.data.loader.default_workers`."""
    return Rule(lambda v: v >= -1, "-1 (default_workers() for this machine) or at least 0")


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.test(v), lambda: f"null or {rule.says()}")


# Fields that mean the same in every stage config: checked wherever a config has one, after the
# class's own RULES (which may narrow them).
FIELD_RULES: dict[str, Rule] = {
    "epochs": Rule(lambda v: v is None or v > 0, "positive (a run of zero length is not a result)"),
    "rand_augment": optional(augment_policy()),
}

INT_LIMIT = 2**63  # what torch, numpy and the checkpoints hold: a signed 64-bit integer


def number_problem(value: Any) -> str | None:
    """What is wrong with a number no run can use (NaN, an infinity, an integer beyond 64 bits);
    None for any other value."""
    if isinstance(value, float) and not math.isfinite(value):
        return "should be a finite number"
    if isinstance(value, int) and not isinstance(value, bool) and not -INT_LIMIT <= value < INT_LIMIT:
        return "should be a 64-bit integer (below 2**63 in size)"
    return None


def check_numbers(value: Any, where: str) -> None:
    """Raises :class:`ConfigError` for the first number in ``value`` (nested lists and objects
    included) that :func:`number_problem` refuses, naming its place below ``where``."""
    problem = number_problem(value)
    if problem:
        raise ConfigError(f"{where} = {value!r}: {problem}")
    if isinstance(value, dict):
        for key, item in value.items():
            check_numbers(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_numbers(item, f"{where}[{i}]")


def check_rules(rules: dict[str, Rule], values: dict[str, Any], where: str) -> None:
    """Raises :class:`ConfigError` for the first of ``values`` whose rule refuses it."""
    for field, rule in rules.items():
        if field in values and not rule.test(values[field]):
            raise ConfigError(f"{where}{field} = {values[field]!r}: should be {rule.says()}")


def validate(config: Any) -> None:
    """Raises :class:`ConfigError` for the first field that is not a usable number
    (:func:`number_problem`), is outside its range (the config class's ``RULES``, then
    :data:`FIELD_RULES`) or relation (its ``relations()``), or names what its registry refuses (its
    ``check_named()``: a method and that method's arguments)."""
    name = type(config).__name__
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for field, value in values.items():
        check_numbers(value, f"{name}.{field}")
    check_rules(getattr(config, "RULES", {}), values, f"{name}.")
    check_rules(FIELD_RULES, values, f"{name}.")
    relations = getattr(config, "relations", None)
    problems = relations() if relations else []
    if problems:
        raise ConfigError(f"{name}: {problems[0]}")
    check_named = getattr(config, "check_named", None)
    if check_named:
        check_named()


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


def with_values(config: C, changes: dict[str, Any]) -> C:
    """``config`` with the fields ``changes`` replaced, checked as a config file is
    (:func:`config_from_dict`: types, ranges, relations, the ``EXCLUSIVE`` pairs among the fields
    that differ from their defaults)."""
    given = {}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING or value != default:
            given[f.name] = value
    return config_from_dict(type(config), {**given, **changes})


def apply_choice(cfg: C, choice_path: str | Path) -> C:
    """``cfg`` (a config dataclass) with the fields of a choice.json replaced, every chosen value
    checked as the config file's own are (:func:`with_values`);
    any refusal is one ConfigError naming the choice file."""
    where = f"hparams_from {choice_path}"
    try:
        record = json.loads(Path(choice_path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where}: not a choice file ({err})") from None
    chosen = record.get("chosen") if isinstance(record, dict) else None
    if not isinstance(chosen, dict):
        raise ConfigError(f"{where}: not a choice file (expected a JSON object whose 'chosen' is an object of "
                          f"config fields, as benchmark.select writes; got {json.dumps(record)[:80]})")
    try:
        return with_values(cfg, chosen)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def check_kwargs(fn: Any, values: dict[str, Any], where: str, skip: tuple[str, ...] = ()) -> None:
    """Checks the keyword arguments ``values`` of ``fn`` (a class: its ``__init__``) before anything
    is built, as :func:`config_from_dict` checks a config: a key ``fn`` takes no argument of (the
    nearest one suggested), a value of another type than the argument's annotation, a number no
    run can use, and a value that ``fn.RULES`` (argument -> :class:`Rule`, declared beside ``fn``)
    refuses."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        names = [n for n in params if n not in skip and n != "self"]
        for key in values:
            if key not in names:
                near = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else f"; expected one of {names}"
                raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    for key, value in values.items():
        annotation = params[key].annotation if key in params else inspect.Parameter.empty
        if isinstance(annotation, str) and not _type_ok(value, annotation):
            raise ConfigError(f"{where}: {key}={value!r} should be of type {annotation}")
        check_numbers(value, f"{where}: {key}")
    check_rules(getattr(fn, "RULES", {}), values, f"{where}: ")


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
