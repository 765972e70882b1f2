"""The data checks of the dense tasks, made first in a run (the cheapest check, before mmengine is
imported): a COCO directory for detection (:func:`coco_classes`: its layout, and both instances files
with their fields, references and boxes inside their image) and an ADE20k directory for segmentation
(:func:`ade_classes`: its layout, and every label map single-channel with values in range). Each
check raises :class:`~benchmark.errors.InputError` naming the first problem and the layout it
expected, and returns the class names that :mod:`benchmark.downstream.mm.config` writes into the
run's config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.errors import InputError

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
