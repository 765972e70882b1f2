"""Deterministic synthetic stand-ins for ImageNet, COCO and ADE20k, in their real on-disk formats.

Every image shows textured shapes on a textured background. The label is the *shape*
(see :data:`SHAPES`); colour is correlated with the class but noisy and shared between
classes, and textures (flat, stripes, dots, gradients) are drawn at random for shapes and
backgrounds alike, so a model has to look at outlines to do well.

Layout below ``OUT`` (``python -m benchmark.data.synthetic --out OUT --seed N --scale smoke``)::

    classification/{train,val}/<shape>/<NNNNN>.png       torchvision ImageFolder, RGB PNG
    coco/{train2017,val2017}/<12-digit id>.jpg           RGB JPEG (quality 90)
    coco/annotations/instances_{train2017,val2017}.json  COCO instances: images, annotations
                                                         (bbox [x, y, w, h], area, iscrowd 0,
                                                         polygon segmentation), categories 1..K
    ade20k/images/{training,validation}/ADE_{train,val}_<8-digit id>.jpg
    ade20k/annotations/{training,validation}/ADE_{train,val}_<8-digit id>.png
                                                         single-channel uint8 labels: 0 = other /
                                                         unlabelled (1 px outlines around shapes),
                                                         1 = background, 2.. = shapes
                                                         (:data:`ADE_CLASSES` in label order)
    synthetic.json                                       manifest: seed, scale, classes, counts

COCO objects never overlap, so each polygon is exactly the visible object; a ring is written
as one "keyhole" polygon (outer contour, a zero-width cut, the hole backwards). ADE20k shapes
may overlap; later shapes cover earlier ones.

The same seed gives byte-identical files. Each image draws from its own generator, seeded
from ``(seed, data set, split, index)``, so changing one count leaves every other image alone.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from benchmark.errors import EXIT_BAD_INPUT, error_line
from benchmark.utils.io import write_json

# Alphabetical, so ImageFolder's sorted class indices equal the indices into this tuple.
SHAPES: tuple[str, ...] = ("circle", "cross", "ring", "square", "star", "triangle")
ADE_CLASSES: tuple[str, ...] = ("background",) + SHAPES
SCALES: dict[str, dict] = {
    "smoke": {
        "classification": {"train_per_class": 48, "val_per_class": 16, "size": 64},
        "coco": {"num_train": 16, "num_val": 8, "size": 128},
        "ade20k": {"num_train": 16, "num_val": 8, "size": 128},
    },
    "mini": {
        "classification": {"train_per_class": 200, "val_per_class": 50, "size": 96},
        "coco": {"num_train": 64, "num_val": 32, "size": 160},
        "ade20k": {"num_train": 64, "num_val": 32, "size": 160},
    },
}

MANIFEST = "synthetic.json"
GENERATOR = "benchmark.data.synthetic"
VERSION = 1
JPEG_QUALITY = 90
COCO_OBJECTS = (2, 4)  # objects per COCO image, inclusive
ADE_OBJECTS = (2, 5)  # shapes per ADE20k image, inclusive
COCO_VAL_ID_OFFSET = 1_000_000  # val image ids start here, so ids are unique across splits

Contours = list[np.ndarray]  # a shape's outline, then its holes: (n, 2) arrays of x, y
Disc = tuple[float, float, float]  # centre x, centre y, radius

_DATASET_TAG = {"classification": 1, "coco": 2, "ade20k": 3}
_SPLIT_TAG = {"train": 0, "val": 1}


# --------------------------------------------------------------------------- randomness


def _rng(seed: int, dataset: str, split: str, *keys: int) -> np.random.Generator:
    """The generator of one image, named by ``keys``: independent of every count and other image."""
    return np.random.default_rng([int(seed), _DATASET_TAG[dataset], _SPLIT_TAG[split], *map(int, keys)])


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# --------------------------------------------------------------------------- colours and textures


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _shape_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    """A colour whose hue leans towards the class's own hue; 30 % of the time any hue."""
    if rng.random() < 0.3:
        hue = rng.random()
    else:
        hue = cls / len(SHAPES) + rng.normal(0.0, 0.07)
    return _hsv(hue, rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))


def _background_colour(rng: np.random.Generator, against: list[np.ndarray]) -> np.ndarray:
    """A muted random colour that stands apart from every colour in ``against``."""
    colour = _hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))
    for _ in range(20):
        if all(np.abs(colour - c).sum() > 120.0 for c in against):
            break
        colour = _hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))
    return colour


def _second_colour(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """The texture's other colour: the same hue, darker or lighter."""
    amount = rng.uniform(0.25, 0.5)
    if rng.random() < 0.5:
        return colour * (1.0 - amount)
    return colour + (255.0 - colour) * amount


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx + 0.5, yy + 0.5


def _texture(rng: np.random.Generator, size: int, colour: np.ndarray) -> np.ndarray:
    """A ``size x size x 3`` float image: flat, stripes, dots or a gradient of two colours."""
    other = _second_colour(rng, colour)
    kind = int(rng.integers(4))
    xx, yy = _grid(size)
    theta = rng.uniform(0.0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    if kind == 0:  # flat
        mix = np.zeros((size, size), np.float32)
    elif kind == 1:  # stripes
        period = rng.uniform(3.0, 10.0)
        mix = (((u / period + rng.random()) % 1.0) < 0.5).astype(np.float32)
    elif kind == 2:  # dots
        spacing = rng.uniform(4.0, 10.0)
        radius = rng.uniform(0.15, 0.35)
        fu = (u / spacing + rng.random()) % 1.0 - 0.5
        fv = (v / spacing + rng.random()) % 1.0 - 0.5
        mix = (fu * fu + fv * fv < radius * radius).astype(np.float32)
    else:  # gradient
        mix = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    return colour + mix[..., None] * (other - colour)


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> Image.Image:
    """Adds sensor-like noise and converts to an 8-bit RGB image."""
    noise = rng.normal(0.0, rng.uniform(2.0, 8.0), canvas.shape).astype(np.float32)
    return Image.fromarray(np.clip(canvas + noise, 0, 255).round().astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- geometry


def _unit_contours(shape: str) -> Contours:
    """Contours of a shape inside the unit circle: the outline first, then any holes."""
    ring = np.linspace(0.0, 2.0 * np.pi, 32, endpoint=False)
    circle = np.stack([np.cos(ring), np.sin(ring)], axis=1)
    if shape == "circle":
        return [circle]
    if shape == "ring":
        return [circle, 0.55 * circle]
    if shape == "square":
        return [np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float64) / np.sqrt(2.0)]
    if shape == "triangle":
        a = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return [np.stack([np.cos(a), np.sin(a)], axis=1)]
    if shape == "star":
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return [np.stack([r * np.cos(a), r * np.sin(a)], axis=1)]
    if shape == "cross":
        t, w = 0.95, 0.3
        arm = np.array([(t, -w), (t, w), (w, w)])  # one arm and the corner after it
        quarter = np.array([[0.0, -1.0], [1.0, 0.0]])  # a quarter turn
        return [np.concatenate([arm @ np.linalg.matrix_power(quarter, k).T for k in range(4)])]
    raise ValueError(f"unknown shape {shape!r}")


def _place(shape: str, cx: float, cy: float, r: float, rng: np.random.Generator) -> Contours:
    """The shape squashed, rotated, scaled to radius ``r`` and moved to ``(cx, cy)``; 2 decimals."""
    squash = rng.uniform(0.8, 1.0, size=2)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [np.round((c * squash) @ rot.T * r + (cx, cy), 2) for c in _unit_contours(shape)]


def _random_disc(rng: np.random.Generator, size: int, rmin: float, rmax: float) -> Disc:
    """Centre and radius of a disc that lies at least one pixel inside the image."""
    r = rng.uniform(rmin, rmax) * size
    cx, cy = rng.uniform(r + 1.0, size - 1.0 - r, size=2)
    return float(cx), float(cy), float(r)


def _mask(contours: Contours, size: int) -> np.ndarray:
    """Pixels inside the outline and outside its holes."""
    inside = np.zeros((size, size), bool)
    for contour in contours:
        layer = Image.new("L", (size, size), 0)
        ImageDraw.Draw(layer).polygon([tuple(p) for p in contour], fill=255)
        inside ^= np.asarray(layer) > 0
    return inside


def _outline(contours: Contours, size: int) -> np.ndarray:
    """The one-pixel outlines of every contour."""
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    for contour in contours:
        points = [tuple(p) for p in contour]
        draw.line(points + points[:1], fill=255, width=1)
    return np.asarray(layer) > 0


def _shoelace(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _coco_polygon(contours: Contours) -> list[float]:
    """One flat COCO polygon; a hole is joined to the outline by a zero-width cut."""
    outer = contours[0]
    points = [outer]
    for hole in contours[1:]:
        if np.sign(_shoelace(hole)) == np.sign(_shoelace(outer)):
            hole = hole[::-1]
        start = int(np.argmin(np.linalg.norm(hole - outer[0], axis=1)))
        hole = np.roll(hole, -start, axis=0)
        points += [outer[:1], hole, hole[:1]]
    return [round(float(v), 2) for v in np.concatenate(points).ravel()]


# --------------------------------------------------------------------------- scenes


def _scene(
    rng: np.random.Generator, size: int, objects: list[tuple[int, Contours]]
) -> tuple[Image.Image, list[np.ndarray]]:
    """Paints ``(class, contours)`` objects over a textured background, in order.

    Returns the image and each object's full (pre-occlusion) mask.
    """
    colours = [_shape_colour(rng, cls) for cls, _ in objects]
    canvas = _texture(rng, size, _background_colour(rng, colours))
    masks = []
    for colour, (_, contours) in zip(colours, objects):
        mask = _mask(contours, size)
        canvas[mask] = _texture(rng, size, colour)[mask]
        masks.append(mask)
    return _finish(rng, canvas), masks


def _classification_image(seed: int, split: str, cls: int, index: int, size: int) -> Image.Image:
    rng = _rng(seed, "classification", split, cls, index)
    cx, cy, r = _random_disc(rng, size, 0.22, 0.42)
    image, _ = _scene(rng, size, [(cls, _place(SHAPES[cls], cx, cy, r, rng))])
    return image


def _disjoint_discs(rng: np.random.Generator, size: int, count: int, rmin: float, rmax: float) -> list[Disc]:
    """Up to ``count`` discs whose bounding squares keep two pixels apart (at least one)."""
    discs: list[Disc] = []
    for attempt in range(200):
        if len(discs) == count:
            break
        scale = 1.0 if attempt < 100 else 0.6
        cx, cy, r = _random_disc(rng, size, rmin * scale, rmax * scale)
        if all(abs(cx - ox) > r + orr + 2 or abs(cy - oy) > r + orr + 2 for ox, oy, orr in discs):
            discs.append((cx, cy, r))
    return discs


def _coco_image(seed: int, split: str, index: int, size: int) -> tuple[Image.Image, list[tuple[int, Contours]]]:
    rng = _rng(seed, "coco", split, index)
    count = int(rng.integers(COCO_OBJECTS[0], COCO_OBJECTS[1] + 1))
    classes = [index % len(SHAPES)] + [int(c) for c in rng.integers(len(SHAPES), size=count - 1)]
    discs = _disjoint_discs(rng, size, count, 0.08, 0.2)
    objects = [(cls, _place(SHAPES[cls], *disc, rng)) for cls, disc in zip(classes, discs)]
    image, _ = _scene(rng, size, objects)
    return image, objects


def _ade_value(name: str) -> int:
    """The label value of an ADE class: 1-based, 0 being "other"."""
    return ADE_CLASSES.index(name) + 1


def _ade_image(seed: int, split: str, index: int, size: int) -> tuple[Image.Image, Image.Image]:
    rng = _rng(seed, "ade20k", split, index)
    count = int(rng.integers(ADE_OBJECTS[0], ADE_OBJECTS[1] + 1))
    classes = [index % len(SHAPES)] + [int(c) for c in rng.integers(len(SHAPES), size=count - 1)]
    objects = [(cls, _place(SHAPES[cls], *_random_disc(rng, size, 0.1, 0.3), rng)) for cls in classes]
    image, masks = _scene(rng, size, objects)
    label = np.full((size, size), _ade_value("background"), np.uint8)
    for (cls, contours), mask in zip(objects, masks):
        label[mask] = _ade_value(SHAPES[cls])
        label[_outline(contours, size)] = 0
    return image, Image.fromarray(label, "L")


# --------------------------------------------------------------------------- writing


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A fresh temporary directory beside ``target``, renamed onto it only if the block succeeds.

    An existing ``target`` is replaced; a failure leaves ``target`` as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes it private; give it a plain mkdir's mode
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(stage, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, target)


def save_png(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG", optimize=False, compress_level=6)


def save_jpeg(image: Image.Image, path: Path) -> None:
    image.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _check_size(size: int, smallest: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < smallest:
        raise ValueError(f"size must be an integer >= {smallest}, got {size!r}")


def make_classification(out: Path, seed: int, train_per_class: int, val_per_class: int, size: int) -> Path:
    """Writes an ImageFolder tree ``out/classification/{train,val}/<shape>/<NNNNN>.png``."""
    seed = _check_seed(seed)
    _check_counts(train_per_class=train_per_class, val_per_class=val_per_class)
    _check_size(size, 16)
    target = Path(out) / "classification"
    with staged_dir(target) as stage:
        for split, per_class in (("train", train_per_class), ("val", val_per_class)):
            for cls, shape in enumerate(SHAPES):
                folder = stage / split / shape
                folder.mkdir(parents=True)
                for j in range(per_class):
                    save_png(_classification_image(seed, split, cls, j, size), folder / f"{j:05d}.png")
    return target


def coco_json(images: list[dict], annotations: list[dict], *, classes: Sequence[str], supercategory: str,
              description: str, version: int) -> dict[str, Any]:
    """A COCO instances file's contents; ``classes`` become categories 1..K in order."""
    return {
        "info": {"description": description, "version": str(version)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": c, "supercategory": supercategory} for i, c in enumerate(classes)],
    }


def _coco_split(stage: Path, seed: int, split: str, count: int, size: int) -> None:
    folder = stage / f"{split}2017"
    folder.mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        image_id = index + 1 + (COCO_VAL_ID_OFFSET if split == "val" else 0)
        file_name = f"{image_id:012d}.jpg"
        image, objects = _coco_image(seed, split, index, size)
        save_jpeg(image, folder / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for k, (cls, contours) in enumerate(objects):
            xy = np.concatenate(contours)
            x0, y0 = xy.min(axis=0)
            x1, y1 = xy.max(axis=0)
            area = abs(_shoelace(contours[0])) - sum(abs(_shoelace(h)) for h in contours[1:])
            annotations.append(
                {
                    "id": image_id * 100 + k + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                    "area": round(area, 2),
                    "iscrowd": 0,
                    "segmentation": [_coco_polygon(contours)],
                }
            )
    data = coco_json(images, annotations, classes=SHAPES, supercategory="shape",
                     description="sslbench synthetic shapes", version=VERSION)
    text = json.dumps(data, separators=(",", ":"))
    (stage / "annotations" / f"instances_{split}2017.json").write_text(text + "\n")


def make_coco(out: Path, seed: int, num_train: int, num_val: int, size: int) -> Path:
    """Writes COCO instances: ``out/coco/{train2017,val2017}/*.jpg`` and ``annotations/*.json``."""
    seed = _check_seed(seed)
    _check_counts(num_train=num_train, num_val=num_val)
    _check_size(size, 48)
    target = Path(out) / "coco"
    with staged_dir(target) as stage:
        (stage / "annotations").mkdir()
        _coco_split(stage, seed, "train", num_train, size)
        _coco_split(stage, seed, "val", num_val, size)
    return target


def make_ade20k(out: Path, seed: int, num_train: int, num_val: int, size: int) -> Path:
    """Writes ADE20k: ``out/ade20k/{images,annotations}/{training,validation}/ADE_*``."""
    seed = _check_seed(seed)
    _check_counts(num_train=num_train, num_val=num_val)
    _check_size(size, 32)
    target = Path(out) / "ade20k"
    with staged_dir(target) as stage:
        for split, folder, count in (("train", "training", num_train), ("val", "validation", num_val)):
            images, labels = stage / "images" / folder, stage / "annotations" / folder
            images.mkdir(parents=True)
            labels.mkdir(parents=True)
            for index in range(count):
                stem = f"ADE_{split}_{index + 1:08d}"
                image, label = _ade_image(seed, split, index, size)
                save_jpeg(image, images / f"{stem}.jpg")
                save_png(label, labels / f"{stem}.png")
    return target


# --------------------------------------------------------------------------- all three + manifest


def _manifest(seed: int, scale: str) -> dict[str, Any]:
    cfg = SCALES[scale]
    cls, coco, ade = cfg["classification"], cfg["coco"], cfg["ade20k"]
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": seed,
        "scale": scale,
        "classification": {
            "path": "classification",
            "classes": list(SHAPES),
            "image_size": [cls["size"], cls["size"]],
            "counts": {"train": cls["train_per_class"] * len(SHAPES), "val": cls["val_per_class"] * len(SHAPES)},
            "per_class": {"train": cls["train_per_class"], "val": cls["val_per_class"]},
        },
        "coco": {
            "path": "coco",
            "categories": {str(i + 1): s for i, s in enumerate(SHAPES)},
            "image_size": [coco["size"], coco["size"]],
            "counts": {"train2017": coco["num_train"], "val2017": coco["num_val"]},
            "objects_per_image": list(COCO_OBJECTS),
        },
        "ade20k": {
            "path": "ade20k",
            "classes": list(ADE_CLASSES),
            "label_values": {"0": "other (unlabelled, ignored)", **{str(i + 1): c for i, c in enumerate(ADE_CLASSES)}},
            "image_size": [ade["size"], ade["size"]],
            "counts": {"training": ade["num_train"], "validation": ade["num_val"]},
        },
    }


def make_all(out: Path, seed: int, scale: str = "smoke") -> dict[str, Path]:
    """Writes all three data sets at ``scale`` and then ``out/synthetic.json``."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    seed = _check_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # The manifest marks a complete set: drop the old one before touching anything it describes.
    (out / MANIFEST).unlink(missing_ok=True)
    cfg = SCALES[scale]
    paths = {
        "classification": make_classification(out, seed, **cfg["classification"]),
        "coco": make_coco(out, seed, **cfg["coco"]),
        "ade20k": make_ade20k(out, seed, **cfg["ade20k"]),
    }
    write_json(out / MANIFEST, _manifest(seed, scale))
    os.chmod(out / MANIFEST, 0o666 & ~_umask())
    return paths


def read_manifest(out: Path, name: str = MANIFEST, generator: str = GENERATOR) -> dict[str, Any] | None:
    """``out/<name>`` (``synthetic.json``) if ``generator`` (this module) wrote it, else ``None``."""
    try:
        data = json.loads((Path(out) / name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == generator else None


# --------------------------------------------------------------------------- CLI


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m benchmark.data.synthetic", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="directory to write into")
    p.add_argument("--seed", type=int, default=0, help="non-negative integer (default 0)")
    p.add_argument("--scale", default="smoke", help=f"one of {', '.join(SCALES)} (default smoke)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty directory not made by this tool "
        "(replaces only classification/, coco/, ade20k/ and synthetic.json there)",
    )
    return p


def _refusal(out: Path, seed: int, scale: str, overwrite: bool) -> tuple[int, str] | None:
    """``(exit code, message)`` when nothing should be written, else ``None``."""
    if out.exists() and not out.is_dir():
        return EXIT_BAD_INPUT, f"error: --out {out} exists and is not a directory"
    if not out.is_dir() or overwrite:
        return None
    manifest = read_manifest(out)
    if manifest is None:
        if any(out.iterdir()):
            return EXIT_BAD_INPUT, (f"error: --out {out} is a non-empty directory not made by this tool; "
                                    "pass --overwrite to use it")
        return None
    complete = all((out / name).is_dir() for name in _DATASET_TAG)
    if manifest.get("seed") == seed and manifest.get("scale") == scale and complete:
        return 0, f"synthetic data (seed {seed}, scale {scale}) is already in {out}; nothing written"
    return None


def _summary(out: Path, manifest: dict[str, Any]) -> list[str]:
    lines = []
    for name in _DATASET_TAG:
        counts = ", ".join(f"{k} {v}" for k, v in manifest[name]["counts"].items())
        size = "x".join(map(str, manifest[name]["image_size"]))
        lines.append(f"wrote {name}: {counts} images of {size} -> {out / manifest[name]['path']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.scale not in SCALES:
        print(f"error: unknown scale {args.scale!r}; expected one of {', '.join(SCALES)}", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"error: --seed must be a non-negative integer, got {args.seed}", file=sys.stderr)
        return 2
    refusal = _refusal(args.out, args.seed, args.scale, args.overwrite)
    if refusal is not None:
        code, message = refusal
        print(message, file=sys.stderr if code else sys.stdout)
        return code
    started = time.perf_counter()
    try:
        make_all(args.out, args.seed, args.scale)
    except OSError as err:
        print(f"error: could not write {args.out}: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for line in _summary(args.out, _manifest(args.seed, args.scale)):
        print(line)
    print(f"done in {time.perf_counter() - started:.1f} s (seed {args.seed}, scale {args.scale})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
