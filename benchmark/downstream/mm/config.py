"""The config surgery of a dense run: the mmengine config file loaded with the ``--cfg-options``
merged in (:func:`load_config`, a mistyped key refused with the nearest name suggested), a
training of zero length refused (:func:`check_train_length`), and the run-time values filled in:
the data root and class names in every data loader, evaluator and head (:func:`configure_detect`,
:func:`configure_segment`), the backbone's arch and img_size from the checkpoint
(:func:`configure_backbone`). It only edits a config; what one process cannot run is switched in
:mod:`benchmark.downstream.mm.processes`, and :mod:`benchmark.downstream.mm.runner` puts the steps in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.errors import CheckpointError, InputError

if TYPE_CHECKING:  # heavy imports stay out of CLI start-up and bad-input exits
    from mmengine.config import Config

_DATASET_WRAPPERS = ("RepeatDataset", "ClassBalancedDataset", "MultiImageMixDataset")


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


def configure_detect(cfg: Config, root: Path, classes: tuple[str, ...], embed_dim: int) -> None:
    """Points a detection config at the COCO ``root`` and its ``classes``: data loaders, COCO
    evaluators, RoI heads, and the neck's ``in_channels`` for a backbone of ``embed_dim``."""
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


def configure_segment(cfg: Config, root: Path, classes: tuple[str, ...], embed_dim: int) -> None:
    """Points a segmentation config at the ADE20k ``root`` and its ``classes``: data loaders, and the
    decode and auxiliary heads (``num_classes``, ``in_channels`` for a backbone of ``embed_dim``)."""
    _set_data(cfg, root, classes)
    for key in ("decode_head", "auxiliary_head"):
        heads = cfg.model.get(key)
        _set_heads(heads, num_classes=len(classes))
        for head in heads if isinstance(heads, (list, tuple)) else [heads]:
            if head and "in_channels" in head:
                ins = head["in_channels"]
                head["in_channels"] = [embed_dim] * len(ins) if isinstance(ins, (list, tuple)) else embed_dim


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


def configure_backbone(cfg: Config, ckpt: Path | None, spec: dict[str, Any] | None, explicit: set[str]) -> int:
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

