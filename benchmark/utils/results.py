"""The ``result.json`` every evaluation writes, and the code that reads them back.

Schema (all keys required):

- ``schema``: ``"sslbench.result/1"``
- ``kind``: the evaluation (``finetune``, ``linear``, ``knn``, ``pixels``, ``detect``, ``segment``)
- ``metrics``: ``{name: float}``, e.g. ``{"top1": 83.1}`` or ``{"bbox_mAP": 12.0, "segm_mAP": 10.1}``
- ``config``: the resolved config of the run (plain values)
- ``checkpoint``: ``{"path": str | None, "sha256": str | None}``, the pre-trained weights used
- ``versions``: package versions, ``python``, ``git_commit``
- ``device``, ``wall_time_s``, ``seed``, ``created``: where, how long, which seed, when

Optional: ``lr_schedule``, the schedule rule of the suite's training loops
(:data:`benchmark.utils.schedule.SCHEDULE_ID`); results written before it existed have none.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmark.errors import ResultError
from benchmark.utils.io import sha256_file, write_json
from benchmark.utils.schedule import SCHEDULE_ID

SCHEMA = "sslbench.result/1"
REQUIRED = {
    "schema": str,
    "kind": str,
    "metrics": dict,
    "config": dict,
    "checkpoint": dict,
    "versions": dict,
    "device": str,
    "wall_time_s": (int, float),
    "seed": int,
    "created": str,
}
RESULT_FILE = "result.json"
_PACKAGES = ("torch", "torchvision", "timm", "mmengine", "mmcv", "mmdet", "mmsegmentation", "numpy")


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["git_commit"] = git_commit()
    return versions


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()})"


def validate(result: dict[str, Any], where: str = "result") -> dict[str, Any]:
    """Raises :class:`ResultError` naming the first field that breaks the schema."""
    for key, typ in REQUIRED.items():
        if key not in result:
            raise ResultError(f"{where}: missing field {key!r}")
        if not isinstance(result[key], typ) or (typ is int and isinstance(result[key], bool)):
            raise ResultError(f"{where}: field {key!r} should be {typ}, got {type(result[key]).__name__}")
    if not isinstance(result.get("lr_schedule", ""), str):
        raise ResultError(f"{where}: field 'lr_schedule' should be a string")
    if result["schema"] != SCHEMA:
        raise ResultError(f"{where}: schema {result['schema']!r} is not {SCHEMA!r}")
    for name, value in result["metrics"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ResultError(f"{where}: metric {name!r} is not a number")
    if set(result["checkpoint"]) != {"path", "sha256"}:
        raise ResultError(f"{where}: checkpoint must hold exactly 'path' and 'sha256'")
    return result


def write_result(
    run_dir: str | Path,
    kind: str,
    metrics: dict[str, float],
    config: dict[str, Any],
    seed: int,
    started: float,
    checkpoint: str | Path | None = None,
) -> Path:
    """Validates and atomically writes ``run_dir/result.json``; ``started`` is a ``time.time()``."""
    ckpt = Path(checkpoint) if checkpoint else None
    result = {
        "schema": SCHEMA,
        "kind": kind,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "config": config,
        "checkpoint": {
            "path": str(ckpt) if ckpt else None,
            "sha256": sha256_file(ckpt) if ckpt and ckpt.is_file() else None,
        },
        "versions": package_versions(),
        "device": device_name(),
        "wall_time_s": round(time.time() - started, 3),
        "seed": int(seed),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "lr_schedule": SCHEDULE_ID,
    }
    validate(json.loads(json.dumps(result, default=str)))
    path = Path(run_dir) / RESULT_FILE
    write_json(path, result)
    return path


def load_result(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise ResultError(f"{path}: cannot read the result ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise ResultError(f"{path}: not valid JSON ({err})") from None
    return validate(data, where=str(path))
