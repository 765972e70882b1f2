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
The drawing is :mod:`benchmark.data.shapes`; this module writes the files, the manifest and the CLI.
"""

from __future__ import annotations

import argparse
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
from PIL import Image

from benchmark.data.shapes import (
    ADE_CLASSES,
    COCO_OBJECTS,
    DATASET_TAG,
    SHAPES,
    ade_image,
    classification_image,
    coco_image,
    coco_polygon,
    shoelace,
)
from benchmark.errors import EXIT_BAD_INPUT, error_line
from benchmark.utils.io import write_json

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
COCO_VAL_ID_OFFSET = 1_000_000  # val image ids start here, so ids are unique across splits


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


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


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
                    save_png(classification_image(seed, split, cls, j, size), folder / f"{j:05d}.png")
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
        image, objects = coco_image(seed, split, index, size)
        save_jpeg(image, folder / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for k, (cls, contours) in enumerate(objects):
            xy = np.concatenate(contours)
            x0, y0 = xy.min(axis=0)
            x1, y1 = xy.max(axis=0)
            area = abs(shoelace(contours[0])) - sum(abs(shoelace(h)) for h in contours[1:])
            annotations.append(
                {
                    "id": image_id * 100 + k + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                    "area": round(area, 2),
                    "iscrowd": 0,
                    "segmentation": [coco_polygon(contours)],
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
                image, label = ade_image(seed, split, index, size)
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
    complete = all((out / name).is_dir() for name in DATASET_TAG)
    if manifest.get("seed") == seed and manifest.get("scale") == scale and complete:
        return 0, f"synthetic data (seed {seed}, scale {scale}) is already in {out}; nothing written"
    return None


def _summary(out: Path, manifest: dict[str, Any]) -> list[str]:
    lines = []
    for name in DATASET_TAG:
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
