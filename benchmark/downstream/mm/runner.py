"""Shared code of ``python -m benchmark.detect`` and ``python -m benchmark.segment``.

One run = check the data, resolve the checkpoint (an encoder export is converted to
``WORK_DIR/mm_backbone.pth`` first), load the mmengine config and fill in the run-time values
(data root, class names and counts, backbone arch / img_size / checkpoint, in_channels, seed,
work dir), train with mmengine's Runner, take the validation metrics of the end of training and
write ``WORK_DIR/result.json``.

A run is a single process (``launcher='none'``), or, started by ``torchrun --nproc_per_node N``,
N processes with one GPU each (mmengine's ``pytorch`` launcher; rank 0 writes ``result.json``).
What a config asks for that one process cannot do is switched before the Runner is built, and
each switch is logged as one warning line in the run's log (:func:`single_process_fallbacks`): SyncBN -> BN
everywhere in the config (backbone
pyramid, neck, heads), and mixed precision (``AmpOptimWrapper``) -> fp32 ``OptimWrapper`` without
CUDA. A total batch smaller than the recipe's ``auto_scale_lr.base_batch_size`` is only logged.
On a GPU with an mmcv built without its CUDA ops, RoIAlign and NMS switch to torchvision's kernels
(:mod:`benchmark.downstream.mm.ops`), logged the same way.

Bad input (missing data, a COCO annotation file with missing fields or boxes outside their image,
ADE20k labels out of range, unknown checkpoint format, mismatching checkpoint, a mistyped
``--cfg-options`` key, a training of zero length) raises :class:`InputError` or :class:`benchmark.errors.CheckpointError`;
the CLIs print one line and exit 2.

An interrupted run started again on its work dir resumes from its latest whole checkpoint and ends
as the uninterrupted run would have; SIGTERM makes it write a checkpoint after the current
iteration and exit with code 75 (:mod:`benchmark.downstream.mm.faults`, docs/faults.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark import REPO
from benchmark.downstream.mm import ops
from benchmark.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    CheckpointError,
    InputError,
    Preempted,
    SuiteError,
    error_line,
)
from benchmark.models.checkpoints.export import to_mm
from benchmark.utils.io import remove_if_empty
from benchmark.utils.lock import exclusive, main_process

if TYPE_CHECKING:  # heavy imports stay out of CLI start-up and bad-input exits
    from mmengine.config import Config
    from mmengine.runner import Runner

_RUN_COUNTER = itertools.count()
_DATASET_WRAPPERS = ("RepeatDataset", "ClassBalancedDataset", "MultiImageMixDataset")


# ---------------------------------------------------------------------------- data sets


COCO_DIRS = "ROOT/{train2017,val2017}/<image>.jpg and ROOT/annotations/instances_{train,val}2017.json"
ADE_DIRS = "ROOT/images/{training,validation}/<name>.jpg and ROOT/annotations/{training,validation}/<name>.png"


def _require(paths: Sequence[Path], what: str, root: Path, layout: str) -> None:
    if not root.is_dir():
        raise InputError(f"{root}: data root does not exist or is not a directory (expected {what} layout: {layout})")
    for path in paths:
        if not path.exists():
            raise InputError(f"{root}: not {what} data root (missing {path.relative_to(root)}; expected {layout})")


COCO_LAYOUT = ("COCO instances: 'images' (id, file_name, width, height), 'annotations' (image_id, category_id, "
               "bbox [x, y, w, h]) and 'categories' (id, name)")
BOX_TOLERANCE = 1.0  # pixels a box may overhang its image (rounding)


def _missing(record: Any, keys: Sequence[str]) -> str | None:
    if not isinstance(record, dict):
        return "any field (not an object)"
    return next((repr(k) for k in keys if k not in record), None)


def check_coco(ann: Path) -> tuple[str, ...]:
    """Checks a COCO instances file (fields, references, boxes inside their image); returns the
    category names in category-id order."""
    try:
        data = json.loads(ann.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{ann}: not a COCO instances file ({err})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise InputError(f"{ann}: missing field {key!r} (expected {COCO_LAYOUT})")
    images: dict[Any, dict] = {}
    for i, image in enumerate(data["images"]):
        if (field := _missing(image, ("id", "file_name", "width", "height"))) is not None:
            raise InputError(f"{ann}: images[{i}] has no {field} (expected {COCO_LAYOUT})")
        images[image["id"]] = image
    for i, cat in enumerate(data["categories"]):
        if (field := _missing(cat, ("id", "name"))) is not None:
            raise InputError(f"{ann}: categories[{i}] has no {field} (expected {COCO_LAYOUT})")
    categories = {c["id"] for c in data["categories"]}
    for i, a in enumerate(data["annotations"]):
        if (field := _missing(a, ("image_id", "category_id", "bbox"))) is not None:
            raise InputError(f"{ann}: annotations[{i}] has no {field} (expected {COCO_LAYOUT})")
        where = f"{ann}: annotations[{i}] (id {a.get('id')})"
        image = images.get(a["image_id"])
        if image is None:
            raise InputError(f"{where} refers to image_id {a['image_id']!r}, which 'images' does not list")
        if a["category_id"] not in categories:
            raise InputError(f"{where} has category_id {a['category_id']!r}, which 'categories' does not list")
        box = a["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise InputError(f"{where}: bbox {box!r} is not [x, y, w, h]")
        x, y, w, h = box
        width, height = image["width"], image["height"]
        if w < 0 or h < 0 or x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE \
                or y + h > height + BOX_TOLERANCE:
            raise InputError(f"{where}: bbox {box} lies outside its image {image['file_name']} ({width}x{height})")
    return tuple(str(c["name"]) for c in sorted(data["categories"], key=lambda c: int(c["id"])))


def coco_classes(root: Path) -> tuple[str, ...]:
    """Checks a COCO directory (layout, both annotation files) and returns its category names, in
    category-id order."""
    ann = root / "annotations" / "instances_train2017.json"
    val = root / "annotations" / "instances_val2017.json"
    _require([ann, val, root / "train2017", root / "val2017"], "a COCO", root, COCO_DIRS)
    names = check_coco(ann)
    if not names:
        raise InputError(f"{ann}: no categories")
    if check_coco(val) != names:
        raise InputError(f"{val}: categories differ from those of {ann.name}")
    return names


def ade_classes(root: Path) -> tuple[str, ...]:
    """Checks an ADE20k directory and returns its class names (label values 1.. in order).

    The suite's own data sets name their classes in their manifest beside the data set
    (``synthetic.json``, or ``scenes.json`` of :mod:`benchmark.data.scenes`); anything else is taken
    to be the real ADE20k with its 150 classes.
    """
    _require(
        [root / "images" / "training", root / "images" / "validation",
         root / "annotations" / "training", root / "annotations" / "validation"],
        "an ADE20k", root, ADE_DIRS,
    )
    from benchmark.data import scenes
    from benchmark.data.synthetic import read_manifest

    manifest = read_manifest(root.parent)
    made_scenes = read_manifest(root.parent, scenes.MANIFEST, scenes.GENERATOR) if root.name == "ade20k" else None
    if manifest and manifest.get("ade20k", {}).get("path") == root.name and manifest["ade20k"].get("classes"):
        classes = tuple(str(c) for c in manifest["ade20k"]["classes"])
    elif made_scenes and made_scenes.get("classes"):
        classes = tuple(str(c) for c in made_scenes["classes"])
    else:
        from mmseg.datasets import ADE20KDataset

        classes = tuple(ADE20KDataset.METAINFO["classes"])
    check_ade_labels(root, len(classes))
    return classes


def check_ade_labels(root: Path, num_classes: int) -> None:
    """Every label map of both splits is single-channel with values 0 (other, ignored),
    1..``num_classes`` or 255 (ignored); an :class:`InputError` names the first that is not."""
    import numpy as np
    from PIL import Image

    for split in ("training", "validation"):
        folder = root / "annotations" / split
        labels = sorted(folder.glob("*.png"))
        if not labels:
            raise InputError(f"{folder}: no label maps (expected <name>.png beside images/{split}/<name>.jpg)")
        for path in labels:
            try:
                with Image.open(path) as img:
                    values = np.unique(np.asarray(img))
                    mode = img.mode
            except (OSError, SyntaxError, ValueError) as err:
                raise InputError(f"{path}: unreadable label map ({err})") from None
            if mode not in ("L", "P", "I", "I;16"):
                raise InputError(f"{path}: a {mode} image; expected a single-channel label map")
            bad = values[(values > num_classes) & (values != 255)]
            if bad.size:
                raise InputError(f"{path}: label values {bad[:5].tolist()} outside 0..{num_classes} "
                                 f"(0 = other, 1..{num_classes} = the {num_classes} classes, 255 = ignore)")


def _leaf_dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    while dataset.get("type") in _DATASET_WRAPPERS and "dataset" in dataset:
        dataset = dataset["dataset"]
    return dataset


def _dataloaders(cfg: Config) -> list[dict[str, Any]]:
    return [cfg[k] for k in ("train_dataloader", "val_dataloader", "test_dataloader") if cfg.get(k)]


def _set_data(cfg: Config, root: Path, classes: tuple[str, ...]) -> None:
    # top-level helper variables of the config file, so that the recorded config tells no stale values
    for key, value in (("data_root", str(root)), ("num_classes", len(classes))):
        if key in cfg:
            cfg[key] = value
    for loader in _dataloaders(cfg):
        dataset = _leaf_dataset(loader["dataset"])
        dataset["data_root"] = str(root)
        dataset["metainfo"] = dict(classes=classes)


def _set_heads(heads: Any, **values: Any) -> None:
    """Sets ``values`` on a head config or on each of a list of them."""
    for head in heads if isinstance(heads, (list, tuple)) else [heads]:
        if head:
            for key, value in values.items():
                head[key] = value


def _configure_detect(cfg: Config, root: Path, classes: tuple[str, ...], embed_dim: int) -> None:
    _set_data(cfg, root, classes)
    for name in ("val_evaluator", "test_evaluator"):
        evaluators = cfg.get(name)
        for ev in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
            if ev and ev.get("type") == "CocoMetric":
                ev["ann_file"] = str(root / "annotations" / "instances_val2017.json")
    roi = cfg.model.get("roi_head")
    if roi:
        _set_heads(roi.get("bbox_head"), num_classes=len(classes))
        _set_heads(roi.get("mask_head"), num_classes=len(classes))
    neck = cfg.model.get("neck")
    if neck and "in_channels" in neck:
        neck["in_channels"] = [embed_dim] * len(neck["in_channels"])


def _configure_segment(cfg: Config, root: Path, classes: tuple[str, ...], embed_dim: int) -> None:
    _set_data(cfg, root, classes)
    for key in ("decode_head", "auxiliary_head"):
        heads = cfg.model.get(key)
        _set_heads(heads, num_classes=len(classes))
        for head in heads if isinstance(heads, (list, tuple)) else [heads]:
            if head and "in_channels" in head:
                ins = head["in_channels"]
                head["in_channels"] = [embed_dim] * len(ins) if isinstance(ins, (list, tuple)) else embed_dim


# ---------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """What differs between detection and segmentation."""

    kind: str  # result.json "kind"
    scope: str  # mmengine default scope
    classes: Callable[[Path], tuple[str, ...]]
    configure: Callable[[Config, Path, tuple[str, ...], int], None]
    metrics: dict[str, tuple[str, float]]  # our name -> (suffix of the mm metric key, scale to 0-100)


DETECT = Task(
    kind="detect",
    scope="mmdet",
    classes=coco_classes,
    configure=_configure_detect,
    metrics={
        "bbox_mAP": ("bbox_mAP", 100.0),
        "bbox_mAP_50": ("bbox_mAP_50", 100.0),
        "segm_mAP": ("segm_mAP", 100.0),
        "segm_mAP_50": ("segm_mAP_50", 100.0),
    },
)
SEGMENT = Task(
    kind="segment",
    scope="mmseg",
    classes=ade_classes,
    configure=_configure_segment,
    metrics={"mIoU": ("mIoU", 1.0), "aAcc": ("aAcc", 1.0)},
)


# ---------------------------------------------------------------------------- checkpoint and config


def resolve_checkpoint(ckpt: str | Path | None) -> tuple[Path | None, dict[str, Any] | None, str | None]:
    """``(path, model spec, format)`` of a checkpoint; ``(None, None, None)`` for ``None`` / ``"none"``.

    Raises :class:`CheckpointError` for a missing file or an unknown format.
    """
    if ckpt is None or str(ckpt).lower() == "none":
        return None, None, None
    from benchmark.models.checkpoints.export import read_spec

    path = Path(ckpt)
    spec, fmt = read_spec(path)
    return path, spec, fmt


def mm_checkpoint(path: Path | None, fmt: str | None, work_dir: Path) -> Path | None:
    """The mm backbone checkpoint to load: ``path`` itself, or an encoder export converted into ``work_dir``."""
    if path is None or fmt != "encoder.safetensors":
        return path
    work_dir.mkdir(parents=True, exist_ok=True)
    return to_mm(path, work_dir / "mm_backbone.pth")


def load_config(config: str | Path, cfg_options: dict[str, Any] | None = None) -> Config:
    """The mmengine config at ``config`` with ``cfg_options`` (dotted keys) merged in."""
    from mmengine.config import Config

    if not Path(config).is_file():
        raise InputError(f"{config}: no such config file")
    try:
        cfg = Config.fromfile(str(config))
    except Exception as err:  # syntax errors, failed imports, bad base files
        raise InputError(f"{config}: not a valid mmengine config ({type(err).__name__}: {err})") from None
    if cfg_options:
        for key in cfg_options:
            check_option_key(cfg, key)
        try:
            cfg.merge_from_dict(dict(cfg_options))
        except (TypeError, KeyError, ValueError) as err:
            raise InputError(f"--cfg-options: {' '.join(str(err).split())}") from None
    return cfg


def check_train_length(cfg: Any, config: str | Path, cfg_options: dict[str, Any] | None = None) -> None:
    """Refuses a training of zero length (a result of an untrained model): ``train_cfg``'s
    ``max_epochs`` / ``max_iters`` must be whole numbers of at least 1. The message names the
    ``--cfg-options`` pair that set the value, else the config file."""
    train_cfg = cfg.get("train_cfg") or {}
    for key in ("max_epochs", "max_iters"):
        value = train_cfg.get(key) if isinstance(train_cfg, dict) else None
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            continue
        option = f"train_cfg.{key}"
        where = f"--cfg-options {option}={value}" if option in (cfg_options or {}) else f"{config}: {option} = {value!r}"
        raise InputError(f"{where}: should be a whole number of at least 1 (a training of zero length is not a result)")


def check_option_key(cfg: Any, key: str) -> None:
    """Rejects a dotted ``--cfg-options`` key that looks like a typo: a part missing from the
    config where a close name exists (the nearest is suggested). A new key with no near name is
    allowed (adding a field is how some options are meant to be used)."""
    import difflib

    node, path = cfg.to_dict() if hasattr(cfg, "to_dict") else cfg, []
    for part in key.split("."):
        if isinstance(node, (list, tuple)) and part.isdigit():
            node = node[int(part)] if int(part) < len(node) else None
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict):
            near = difflib.get_close_matches(part, [str(k) for k in node], n=1, cutoff=0.75)
            if near:
                raise InputError(f"--cfg-options {key}: the config has no {'.'.join(path + [part])!r}; "
                                 f"did you mean {'.'.join(path + [near[0]])!r}?")
            return
        else:
            return
        path.append(part)


def _configure_backbone(cfg: Config, ckpt: Path | None, spec: dict[str, Any] | None, explicit: set[str]) -> int:
    """Puts arch and img_size into the backbone config; returns its embed_dim.

    The checkpoint's model spec decides arch and img_size unless ``--cfg-options`` set them
    explicitly (a mismatching explicit arch is an error).
    """
    from benchmark.downstream.mm.backbone import vit_embed_dim

    backbone = cfg.model.backbone
    if backbone.get("type") != "ViTPyramid":
        raise InputError(f"config backbone is {backbone.get('type')!r}, expected 'ViTPyramid'")
    if spec:
        if "model.backbone.arch" in explicit and backbone.get("arch") != spec.get("arch"):
            raise CheckpointError(
                f"{ckpt}: checkpoint arch {spec.get('arch')!r} does not match model.backbone.arch={backbone.get('arch')!r}"
            )
        backbone["arch"] = spec["arch"]
        if "model.backbone.img_size" not in explicit:
            backbone["img_size"] = int(spec["img_size"])
    if not backbone.get("arch"):
        raise InputError("model.backbone.arch is not set and there is no checkpoint to take it from")
    try:
        return vit_embed_dim(backbone["arch"])
    except ValueError as err:
        raise InputError(str(err)) from None


def json_values(obj: Any) -> Any:
    """A config (or part of one) as JSON-friendly plain values (``result.json``'s config)."""
    if isinstance(obj, dict):
        return {str(k): json_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_values(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


# ---------------------------------------------------------------------------- single process

SYNC_BN_TYPES = ("SyncBN", "MMSyncBN", "SyncBatchNorm", "TorchSyncBN")
_AMP_ONLY_KEYS = ("loss_scale", "dtype", "use_fsdp")


def _launched_by_torchrun() -> bool:
    """Several processes started by torchrun (one per GPU): mmengine's ``pytorch`` launcher."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _distributed() -> bool:
    import torch.distributed as dist

    return (dist.is_available() and dist.is_initialized()) or _launched_by_torchrun()


def _is_sync_bn(norm_type: Any) -> bool:
    if isinstance(norm_type, str):
        return norm_type in SYNC_BN_TYPES
    import torch.nn as nn

    return isinstance(norm_type, type) and issubclass(norm_type, nn.SyncBatchNorm)


def switch_sync_bn(node: Any, path: str = "") -> list[str]:
    """Turns every ``dict(type=SyncBN...)`` below ``node`` into ``type='BN'`` in place; returns their dotted paths."""
    found: list[str] = []
    if isinstance(node, dict):
        if "type" in node and _is_sync_bn(node["type"]):
            node["type"] = "BN"
            found.append(path or "<root>")
        for key, value in node.items():
            found += switch_sync_bn(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += switch_sync_bn(value, f"{path}.{i}")
    return found


def _has_accelerator() -> bool:
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
    distributed = _distributed()
    if not distributed:
        paths = [p for key in list(cfg.keys()) for p in switch_sync_bn(cfg[key], str(key))]
        if paths:
            notes.append(f"single process without torch.distributed: SyncBN switched to BN in {', '.join(paths)}")
    wrapper = cfg.get("optim_wrapper")
    if isinstance(wrapper, dict) and wrapper.get("type") == "AmpOptimWrapper" and not _has_accelerator():
        wrapper["type"] = "OptimWrapper"
        dropped = [k for k in _AMP_ONLY_KEYS if wrapper.pop(k, None) is not None]
        extra = f" (dropped {', '.join(dropped)})" if dropped else ""
        notes.append(f"no CUDA device: mixed precision AmpOptimWrapper switched to fp32 OptimWrapper{extra}")
    scale = cfg.get("auto_scale_lr") or {}
    loader = cfg.get("train_dataloader") or {}
    base, per_proc = scale.get("base_batch_size"), loader.get("batch_size")
    if not distributed and base and per_proc and int(per_proc) < int(base) and not scale.get("enable"):
        notes.append(f"single process: {per_proc} images per step where the recipe assumes {base} "
                     f"(auto_scale_lr.base_batch_size); learning rates are left as configured")
    return notes


# ---------------------------------------------------------------------------- running


def _metrics_hook() -> Any:
    """A hook that remembers the metrics of the latest validation and the iteration it ran at."""
    from mmengine.hooks import Hook

    class LastValMetrics(Hook):
        priority = "LOWEST"

        def __init__(self) -> None:
            self.metrics: dict[str, Any] | None = None
            self.at_iter = -1

        def after_val_epoch(self, runner: Any, metrics: dict[str, Any] | None = None) -> None:
            self.metrics = dict(metrics or {})
            self.at_iter = runner.iter

    return LastValMetrics()


def _pick_metrics(task: Task, raw: dict[str, Any], logger: logging.Logger) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, (suffix, scale) in task.metrics.items():
        keys = [k for k in raw if k == suffix or k.endswith("/" + suffix)]
        if not keys:
            # mmdet's CocoMetric reports nothing when a model makes no detection at all: AP is 0 then
            logger.warning(f"metric {suffix!r} missing from the evaluation ({sorted(raw)}); recording 0.0")
            out[name] = 0.0
            continue
        value = round(float(raw[keys[0]]) * scale, 4)  # mmdet rounds to 3 decimals of 0-1: no float noise
        if not math.isfinite(value):
            logger.warning(f"metric {suffix!r} is {value}; recording 0.0")
            value = 0.0
        out[name] = value
    return out


def _close_log_files(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)


@dataclass
class Prepared:
    """A run's resolved config, before any mmengine Runner exists."""

    task: Task
    cfg: Config
    work_dir: Path
    seed: int
    ckpt: str | Path | None
    started: float
    notes: list[str] = field(default_factory=list)  # logged as warnings once the Runner's logger exists


def prepare(
    task: Task,
    ckpt: str | Path | None,
    config: str | Path,
    data_root: str | Path,
    work_dir: str | Path,
    seed: int = 0,
    cfg_options: dict[str, Any] | None = None,
) -> Prepared:
    """Checks the input, converts the checkpoint and fills in / adapts the config for one process."""
    started = time.time()
    data_root, work_dir = Path(data_root).resolve(), Path(work_dir).resolve()
    classes = task.classes(data_root)  # data first: the cheapest check
    src, spec, fmt = resolve_checkpoint(ckpt)
    cfg = load_config(config, cfg_options)
    check_train_length(cfg, config, cfg_options)
    notes: list[str] = []
    config_arch = cfg.model.get("backbone", {}).get("arch")
    embed_dim = _configure_backbone(cfg, src, spec, set(cfg_options or {}))  # checks arch before converting
    if config_arch and cfg.model.backbone["arch"] != config_arch:
        notes.append(f"backbone arch {cfg.model.backbone['arch']} taken from the checkpoint ({src}); "
                     f"the config names {config_arch}")
    mm_ckpt = mm_checkpoint(src, fmt, work_dir)
    cfg.model.backbone["checkpoint"] = str(mm_ckpt) if mm_ckpt else None
    if "embed_dim" in cfg:
        cfg.embed_dim = embed_dim
    task.configure(cfg, data_root, classes, embed_dim)
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg.work_dir = str(work_dir)
    if _launched_by_torchrun() and not _has_accelerator():
        raise InputError("several processes need one GPU each (mmengine's pytorch launcher); "
                         "run a single process on CPU")
    cfg.launcher = "pytorch" if _launched_by_torchrun() else "none"
    cfg.randomness = {**dict(cfg.get("randomness") or {}), "seed": int(seed)}
    _fault_tolerant(cfg, notes)
    from benchmark.downstream.mm.faults import latest_checkpoint

    latest = latest_checkpoint(work_dir)
    if latest is not None:  # an interrupted run: resume from its latest whole checkpoint
        cfg.resume, cfg.load_from = True, str(latest)
        notes.append(f"resuming from the latest checkpoint in {work_dir}: {latest.name}")
    cfg.experiment_name = f"{task.kind}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{next(_RUN_COUNTER)}"
    notes += single_process_fallbacks(cfg)
    if ops.needed(_has_accelerator()):  # an mmcv built without CUDA ops, on a GPU: torchvision's kernels
        notes += ops.torchvision_ops(cfg)
    return Prepared(task, cfg, work_dir, int(seed), ckpt, started, notes)


def _fault_tolerant(cfg: Config, notes: list[str]) -> None:
    """mmengine's train loops swapped for their resumable versions (:mod:`benchmark.downstream.mm.faults`),
    and checkpoints written atomically."""
    from benchmark.downstream.mm.faults import ATOMIC_BACKEND, RESUMABLE_LOOPS

    train_cfg = cfg.get("train_cfg") or {}
    loop = train_cfg.get("type")
    if loop in RESUMABLE_LOOPS:
        train_cfg["type"] = RESUMABLE_LOOPS[loop]
    elif loop not in RESUMABLE_LOOPS.values():
        notes.append(f"train loop {loop!r}: an interrupted run resumes, but not bit for bit")
    hook = (cfg.get("default_hooks") or {}).get("checkpoint")
    if isinstance(hook, dict) and not hook.get("backend_args"):
        hook["backend_args"] = dict(backend=ATOMIC_BACKEND)


def build_runner(prepared: Prepared) -> Runner:
    """The mmengine Runner of a prepared run (model built, nothing trained), with the
    :class:`~benchmark.downstream.mm.faults.FaultTolerance` hook; logs the run's notes."""
    from mmengine.runner import Runner

    from benchmark.downstream.mm.faults import FaultTolerance

    runner = Runner.from_cfg(prepared.cfg)
    runner.register_hook(FaultTolerance("detection" if prepared.task.kind == "detect" else "segmentation"))
    for note in prepared.notes:
        runner.logger.warning(note)
    return runner


def run(
    task: Task,
    ckpt: str | Path | None,
    config: str | Path,
    data_root: str | Path,
    work_dir: str | Path,
    seed: int = 0,
    cfg_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Trains and evaluates one model; writes ``work_dir/result.json`` and returns its metrics."""
    import pickle

    from benchmark.downstream.mm.faults import FaultTolerance

    prepared = prepare(task, ckpt, config, data_root, work_dir, seed, cfg_options)
    runner = build_runner(prepared)
    try:
        recorder = _metrics_hook()
        runner.register_hook(recorder)
        try:
            runner.train()
        except pickle.UnpicklingError as err:  # a checkpoint holding objects, not only tensors and plain values
            from benchmark.utils.io import load_failure

            raise CheckpointError(f"{prepared.cfg.load_from}: cannot be resumed with weights_only loading "
                                  f"({load_failure(err)}); move it away to start over") from None
        raw = recorder.metrics if recorder.metrics is not None and recorder.at_iter == runner.iter else runner.val()
        metrics = _pick_metrics(task, raw or {}, runner.logger)
        runner.logger.info(f"{task.kind} metrics: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    finally:
        for hook in runner.hooks:
            if isinstance(hook, FaultTolerance):
                hook.stop.restore()
        _close_log_files(runner.logger)
    from mmengine.dist import get_rank

    if get_rank() == 0:  # the metrics are gathered from every process; one writes them
        write_result(prepared.work_dir, task, metrics, prepared.cfg, prepared.seed, prepared.started, ckpt)
    return metrics


def write_result(
    work_dir: Path, task: Task, metrics: dict[str, float], cfg: Config, seed: int, started: float,
    ckpt: str | Path | None,
) -> Path:
    """``work_dir/result.json`` with the resolved config as plain values."""
    from benchmark.utils.results import write_result as _write

    checkpoint = None if ckpt is None or str(ckpt).lower() == "none" else str(ckpt)
    return _write(work_dir, kind=task.kind, metrics=metrics, config=json_values(cfg.to_dict()), seed=seed,
                  started=started, checkpoint=checkpoint)


# ---------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cfg_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``k=v`` pairs parsed as mmengine's ``--cfg-options`` does (lists, tuples, numbers, bools)."""
    if not pairs:
        return {}
    from mmengine.config import DictAction

    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise InputError(f"--cfg-options expects KEY=VALUE pairs, got {bad[0]!r}")
    namespace = argparse.Namespace()
    DictAction(option_strings=["--cfg-options"], dest="cfg_options")(None, namespace, list(pairs))
    return dict(namespace.cfg_options)


def mm_args(config: dict[str, Any], run_dir: Path) -> list[str]:
    """The command line (:func:`main`) of a driver's detection or segmentation run: ``--ckpt
    --config --data-root --work-dir --seed`` and ``--cfg-options`` for its resolved ``config``."""
    args = ["--ckpt", str(config.get("ckpt") or "none"), "--config", str(config["config"]),
            "--data-root", str(config["data_root"]), "--work-dir", str(run_dir), "--seed", str(config.get("seed", 0))]
    options = config.get("cfg_options") or {}
    if options:
        args += ["--cfg-options", *(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in options.items())]
    return args


def absolute_config(config: dict[str, Any]) -> dict[str, Any]:
    """A driver's run config with its MMEngine config path made absolute (the registry writes it
    relative to the repository)."""
    path = Path(config["config"])
    return {**config, "config": str(path if path.is_absolute() else REPO / path)}


def main(task: Task, data_help: str, argv: Sequence[str] | None = None) -> int:
    """The CLI of one task; returns the exit code (2 on bad input)."""
    parser = _Parser(prog=f"python -m benchmark.{task.kind}",
                     description=f"Train and evaluate a ViT backbone ({task.kind}) with {task.scope}; "
                                 "writes WORK_DIR/result.json.")
    parser.add_argument("--ckpt", required=True, help="encoder .safetensors, mm_backbone .pth, or 'none' (random init)")
    parser.add_argument("--config", required=True, help="mmengine config file")
    parser.add_argument("--data-root", required=True, help=data_help)
    parser.add_argument("--work-dir", required=True, help="output directory (logs, result.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                        help="config overrides, e.g. train_cfg.max_epochs=1")
    args = parser.parse_args(argv)
    created = not Path(args.work_dir).exists()
    try:
        options = _cfg_options(args.cfg_options)
        with exclusive(args.work_dir, "work directory") if main_process() else nullcontext():
            metrics = run(task, args.ckpt, args.config, args.data_root, args.work_dir, args.seed, options)
    except Preempted as err:
        print(f"[{task.kind}] {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"[{task.kind}] interrupted at once (a second Ctrl-C); {args.work_dir} keeps its last checkpoint: run "
              "the same command again to resume from it", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SuiteError as err:
        if created:
            remove_if_empty(args.work_dir)
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps({"result": str(Path(args.work_dir) / "result.json"), "metrics": metrics}))
    return 0
