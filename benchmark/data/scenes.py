"""Scenes of several Fashion-MNIST items on one canvas (not object-centric), in real on-disk formats.

A scene is a square greyscale canvas (``--size``, 64 px) with a smooth, dark, low-contrast
background and 2..5 items (``--min-items``/``--max-items``): Fashion-MNIST images resized to a
random side of 20..40 px (bilinear) and pasted, fully inside the canvas, at random places; later
items cover earlier ones. An item's silhouette is its resized pixels above 30 (of 255), where it
is pasted opaque; its instance mask is what stays visible, its silhouette less those of every
item drawn after it. An item with fewer than 30 visible pixels stays drawn but is not annotated.

No leakage: train scenes take items only from the suite's train split (the official train split
less the fixed val carve-out, :func:`~benchmark.data.fashion_mnist.split_train`), val scenes only
from the official test split. ``scenes.json`` records the source index of every item drawn.

Layout below ``OUT`` (``python -m benchmark.data.scenes --out OUT --seed N``)::

    coco/{train2017,val2017}/<12-digit id>.jpg           RGB JPEG (grey replicated); val ids from 1,000,001
    coco/annotations/instances_{train2017,val2017}.json  COCO instances: bbox [x, y, w, h] and area of the
                                                         visible mask, iscrowd 0, RLE segmentation,
                                                         categories 1..10 (Fashion-MNIST's CLASSES)
    ade20k/images/{training,validation}/ADE_{train,val}_<8-digit id>.jpg
    ade20k/annotations/{training,validation}/ADE_{train,val}_<8-digit id>.png
                                                         single-channel uint8: 0 = background (ADE20k's
                                                         "other", which mmseg ignores), c + 1 = visible
                                                         pixels of class c, those of items too hidden to
                                                         be annotated in COCO included (they are visible)
    unlabelled/train/scenes/<NNNNN>.png                  the train scenes as an ImageFolder of one class,
                                                         RGB PNG, for pre-training
    scenes.json                                          manifest: seed, options, counts, classes, and per
                                                         split the source indices of each scene's items
                                                         (train: into the official train file; val: test)

Every part is staged beside its place (``.coco.XXXXXXXX.tmp``) and renamed into place once all are
written; ``scenes.json`` comes last. Until it is there, ``.scenes.unfinished.json`` names the run's
settings, so that a run killed at any point is this tool's to finish: the same command again
removes what the killed run left (staged parts, replaced parts, temporary files) and writes the set.

The same seed gives byte-identical files. Each scene draws from its own generator, seeded from
``(seed, split, index)``, so changing one count leaves every other scene alone.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from benchmark.data import fashion_mnist as fm
from benchmark.data.fashion_mnist import CLASSES
from benchmark.data.synthetic import (
    COCO_VAL_ID_OFFSET,
    OneLineParser,
    coco_json,
    read_manifest,
    save_jpeg,
    save_png,
    staged_dir,
)
from benchmark.errors import EXIT_BAD_INPUT, ConfigError, DataError, SuiteError, error_line
from benchmark.utils.io import remove_if_empty, write_json

MANIFEST = "scenes.json"
UNFINISHED = ".scenes.unfinished.json"  # a run's settings, from its start until its manifest is written
GENERATOR = "benchmark.data.scenes"
VERSION = 1
PARTS = ("coco", "ade20k", "unlabelled")
BACKGROUND_MAX = 40  # brightest background grey: well below the items' typical 100..255
PROGRESS_EVERY = 500  # scenes between progress lines
_SCENES_TAG = 4  # after synthetic's data-set tags 1..3, so no scene shares a generator with them
_SPLIT_TAG = {"train": 0, "val": 1}
# What a run killed half-way leaves beside the parts: staged parts (``.coco.XXXXXXXX.tmp``, see
# synthetic.staged_dir), parts being replaced (``.coco.XXXXXXXX.old``) and files being written
# (``.scenes.json.XXXXXXXX.tmp``, see utils.io.atomic_path): names no other writer uses.
_NAMES = "|".join(map(re.escape, (*PARTS, MANIFEST, UNFINISHED)))
_LEFTOVER = re.compile(rf"\.(?:{_NAMES})\.[a-z0-9_]+\.(?:tmp|old)")

Item = tuple[np.ndarray, int]  # a 28x28 uint8 image and its class index
Placement = tuple[int, int, int]  # left x, top y, side (px) of the resized item


class Scene(NamedTuple):
    canvas: np.ndarray  # uint8 [size, size]
    label: np.ndarray  # uint8 [size, size]: 0 background, class + 1 where an item is visible
    instances: list[tuple[int, np.ndarray]]  # (class index, visible mask) of the annotated items, in drawing order


@dataclass(frozen=True)
class Options:
    """How scenes are composed (the CLI sets size and the item counts; the rest keep these defaults)."""

    size: int = 64  # canvas side, px
    min_items: int = 2
    max_items: int = 5
    min_side: int = 20  # an item's side after resizing, px (Fashion-MNIST's own is 28)
    max_side: int = 40
    threshold: int = 30  # silhouette: resized pixels above this (of 255)
    min_visible: int = 30  # items with fewer visible pixels stay drawn but get no annotation

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if not 1 <= self.min_items <= self.max_items:
            raise ConfigError(f"min_items ({self.min_items}) must be at least 1 and at most max_items ({self.max_items})")
        if not 1 <= self.min_side <= self.max_side:
            raise ConfigError(f"min_side ({self.min_side}) must be at least 1 and at most max_side ({self.max_side})")
        if self.size < self.max_side:
            raise ConfigError(f"size ({self.size}) is smaller than the largest item ({self.max_side} px)")


# --------------------------------------------------------------------------- composition


def compose(items: Sequence[Item], placements: Sequence[Placement], background: np.ndarray,
            threshold: int = Options.threshold, min_visible: int = Options.min_visible) -> Scene:
    """Pastes ``items`` in order over ``background`` (uint8 [size, size]) at ``placements``.

    Each item is resized to ``side`` px (bilinear) and pasted opaque on its silhouette (pixels >
    ``threshold``). Its mask is its silhouette less those of all later items; ``instances`` keeps
    the items with at least ``min_visible`` such pixels, ``label`` shows every item's class + 1.
    """
    size = background.shape[0]
    canvas = background.copy()
    owner = np.full((size, size), -1)  # the item each pixel shows
    for n, ((image, _), (x, y, side)) in enumerate(zip(items, placements, strict=True)):
        if not (0 <= x <= size - side and 0 <= y <= size - side):
            raise ValueError(f"item {n} ({side} px at x={x}, y={y}) does not fit a {size} px canvas")
        pixels = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
        silhouette = pixels > threshold
        canvas[y:y + side, x:x + side][silhouette] = pixels[silhouette]
        owner[y:y + side, x:x + side][silhouette] = n
    classes = np.array([cls for _, cls in items] + [-1])  # owner -1 indexes the last: background, label 0
    label = (classes[owner] + 1).astype(np.uint8)
    masks = [(cls, owner == n) for n, (_, cls) in enumerate(items)]
    return Scene(canvas, label, [(cls, mask) for cls, mask in masks if mask.sum() >= min_visible])


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one scene: independent of every count and every other scene."""
    return np.random.default_rng([seed, _SCENES_TAG, _SPLIT_TAG[split], index])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth texture: a 4x4 grid of dark greys, bilinearly upsampled."""
    coarse = rng.uniform(0.0, BACKGROUND_MAX, size=(4, 4)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.BILINEAR)).round().astype(np.uint8)


def random_scene(seed: int, split: str, index: int, images: np.ndarray, labels: np.ndarray,
                 pool: np.ndarray, options: Options) -> tuple[Scene, list[int]]:
    """Scene ``index`` of ``split`` with items drawn from ``images[pool]``; also their source indices."""
    rng = _rng(seed, split, index)
    background = _background(rng, options.size)
    count = int(rng.integers(options.min_items, options.max_items + 1))
    sources = [int(i) for i in pool[rng.integers(len(pool), size=count)]]
    placements = []
    for side in rng.integers(options.min_side, options.max_side + 1, size=count):
        x, y = rng.integers(options.size - side + 1, size=2)
        placements.append((int(x), int(y), int(side)))
    items = [(images[i], int(labels[i])) for i in sources]
    return compose(items, placements, background, options.threshold, options.min_visible), sources


# --------------------------------------------------------------------------- writing


def _annotation(ann_id: int, image_id: int, cls: int, mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rows, cols = np.nonzero(mask)
    x, y = int(cols.min()), int(rows.min())
    return {"id": ann_id, "image_id": image_id, "category_id": cls + 1,
            "bbox": [x, y, int(cols.max()) - x + 1, int(rows.max()) - y + 1], "area": int(mask.sum()), "iscrowd": 0,
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}}


def _write_split(stages: dict[str, Path], seed: int, split: str, count: int, source: tuple[np.ndarray, np.ndarray],
                 pool: np.ndarray, options: Options, progress: Callable[[str], None]) -> list[list[int]]:
    """Writes ``count`` scenes of ``split`` in every format; returns their items' source indices."""
    ade_split = {"train": "training", "val": "validation"}[split]
    folders = {"coco": stages["coco"] / f"{split}2017", "ade_images": stages["ade20k"] / "images" / ade_split,
               "ade_labels": stages["ade20k"] / "annotations" / ade_split}
    if split == "train":
        folders["unlabelled"] = stages["unlabelled"] / "train" / "scenes"
    for folder in folders.values():
        folder.mkdir(parents=True)
    images, annotations, items = [], [], []
    for index in range(count):
        scene, sources = random_scene(seed, split, index, *source, pool, options)
        items.append(sources)
        rgb = Image.fromarray(scene.canvas, "L").convert("RGB")
        image_id = index + 1 + (COCO_VAL_ID_OFFSET if split == "val" else 0)
        save_jpeg(rgb, folders["coco"] / f"{image_id:012d}.jpg")
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": options.size, "height": options.size})
        for cls, mask in scene.instances:  # ids count up through the split, so more scenes leave earlier ids alone
            annotations.append(_annotation(len(annotations) + 1, image_id, cls, mask))
        stem = f"ADE_{split}_{index + 1:08d}"
        save_jpeg(rgb, folders["ade_images"] / f"{stem}.jpg")
        save_png(Image.fromarray(scene.label, "L"), folders["ade_labels"] / f"{stem}.png")
        if "unlabelled" in folders:
            save_png(rgb, folders["unlabelled"] / f"{index:05d}.png")
        if (index + 1) % PROGRESS_EVERY == 0:
            progress(f"[scenes] {split}: {index + 1}/{count} scenes")
    data = coco_json(images, annotations, classes=CLASSES, supercategory="clothing",
                     description="sslbench Fashion-MNIST scenes", version=VERSION)
    (stages["coco"] / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
    return items


def settings(seed: int, options: Options, train_scenes: int, val_scenes: int) -> dict[str, Any]:
    """What decides a scene set's bytes (with the Fashion-MNIST files): the manifest's head."""
    return {"generator": GENERATOR, "version": VERSION, "seed": seed, "options": asdict(options),
            "counts": {"train": train_scenes, "val": val_scenes}}


def leftovers(out: Path) -> list[Path]:
    """What runs of this tool that were killed half-way left in ``out`` (see :data:`_LEFTOVER`)."""
    return sorted(p for p in Path(out).iterdir() if _LEFTOVER.fullmatch(p.name)) if Path(out).is_dir() else []


def clear_leftovers(out: Path) -> int:
    """Removes :func:`leftovers` of ``out``; returns how many there were."""
    found = leftovers(out)
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return len(found)


def make_scenes(out: Path, seed: int, data_root: str | Path = fm.DEBIAN_DIR, train_scenes: int = 2000,
                val_scenes: int = 500, options: Options = Options(),
                progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Writes ``coco/``, ``ade20k/``, ``unlabelled/`` and then ``scenes.json`` into ``out`` (other
    files there stay, what a killed run left is removed); returns the manifest. A failure leaves
    ``out`` as it was; a kill leaves :data:`UNFINISHED`, and a run with the same settings finishes."""
    for name, value in (("seed", seed), ("train_scenes", train_scenes), ("val_scenes", val_scenes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    folder = fm.locate(data_root)
    train, test = fm.read_part(folder, "train"), fm.read_part(folder, "test")
    pools = {"train": fm.split_train(train[1])[0], "val": np.arange(len(test[1]))}
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    manifest = settings(seed, options, train_scenes, val_scenes)
    earlier = (out / UNFINISHED).exists()  # a killed run's: its parts may be half swapped in
    manifest |= {"classes": list(CLASSES), "label_values": {"0": "background", **{str(i + 1): c for i, c in enumerate(CLASSES)}},
                 "sources": {"train": "official train split less the val carve-out", "val": "official test split"},
                 "items": {}}
    swapping = False
    try:
        write_json(out / UNFINISHED, settings(seed, options, train_scenes, val_scenes))  # first: out is ours from here
        if cleared := clear_leftovers(out):
            progress(f"[scenes] removed {cleared} unfinished part(s) that a run stopped half-way left in {out}")
        with ExitStack() as stack:  # every part is staged; all are renamed into place only once all are written
            stages = {part: stack.enter_context(staged_dir(out / part)) for part in PARTS}
            (stages["coco"] / "annotations").mkdir()
            for split, count, source in (("train", train_scenes, train), ("val", val_scenes, test)):
                if count and not len(pools[split]):
                    raise DataError(f"{folder}: no Fashion-MNIST images for the {split} scenes")
                manifest["items"][split] = _write_split(stages, seed, split, count, source, pools[split], options, progress)
            (out / MANIFEST).unlink(missing_ok=True)  # the parts it describes are about to change
            swapping = True
    except BaseException:
        if not swapping and not earlier:  # out holds what it held before: nothing unfinished
            (out / UNFINISHED).unlink(missing_ok=True)
            if created:
                remove_if_empty(out)
        raise
    write_json(out / MANIFEST, manifest)
    (out / UNFINISHED).unlink(missing_ok=True)
    return manifest


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m benchmark.data.scenes", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="directory to write into")
    p.add_argument("--seed", type=int, required=True, help="non-negative integer")
    p.add_argument("--data-root", type=Path, default=fm.DEBIAN_DIR,
                   help="folder of the Fashion-MNIST idx files (default: %(default)s)")
    p.add_argument("--train-scenes", type=int, default=2000, help="default %(default)s")
    p.add_argument("--val-scenes", type=int, default=500, help="default %(default)s")
    p.add_argument("--min-items", type=int, default=Options.min_items, help="items per scene, at least (default %(default)s)")
    p.add_argument("--max-items", type=int, default=Options.max_items, help="items per scene, at most (default %(default)s)")
    p.add_argument("--size", type=int, default=Options.size, help="canvas side in px (default %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help=f"write into a directory not made by this tool, or made with other options "
                        f"(replaces only {', '.join(p + '/' for p in PARTS)} and {MANIFEST} there, and removes "
                        "what a run of this tool stopped half-way left)")
    return p


def _refusal(out: Path, wanted: dict[str, Any], overwrite: bool) -> tuple[int, str] | None:
    """``(exit code, message)`` when nothing should be written, else ``None``."""
    if out.exists() and not out.is_dir():
        return EXIT_BAD_INPUT, f"error: --out {out} exists and is not a directory"
    if not out.is_dir() or overwrite:
        return None
    manifest = read_manifest(out, MANIFEST, GENERATOR)  # a finished set: its parts are whole
    unfinished = read_manifest(out, UNFINISHED, GENERATOR) if manifest is None else None
    if manifest is None and unfinished is None:
        if any(not _LEFTOVER.fullmatch(p.name) for p in out.iterdir()):
            return EXIT_BAD_INPUT, (f"error: --out {out} is a non-empty directory not made by this tool; "
                                    "pass --overwrite to use it")
        return None
    differ = [key for key in wanted if (manifest or unfinished).get(key) != wanted[key]]
    if manifest is not None and not differ and all((out / part).is_dir() for part in PARTS):
        return 0, f"scenes (seed {wanted['seed']}, same options) are already in {out}; nothing written"
    if differ:
        held = "scenes made" if manifest is not None else "the unfinished scenes of a run stopped half-way, made"
        return EXIT_BAD_INPUT, (f"error: --out {out} holds {held} with other settings (different "
                                f"{' and '.join(differ)}); pass --overwrite to replace them")
    return None


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the process exit code."""
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        options = Options(size=args.size, min_items=args.min_items, max_items=args.max_items)
        for flag, value in (("--seed", args.seed), ("--train-scenes", args.train_scenes), ("--val-scenes", args.val_scenes)):
            if value < 0:
                raise ConfigError(f"{flag} must be a non-negative integer, got {value}")
        refusal = _refusal(args.out, settings(args.seed, options, args.train_scenes, args.val_scenes), args.overwrite)
        if refusal is not None:
            code, message = refusal
            if code == 0:  # the finished set stays; what a run killed after writing it left goes
                clear_leftovers(args.out)
                (args.out / UNFINISHED).unlink(missing_ok=True)
            print(message, file=sys.stderr if code else sys.stdout)
            return code
        make_scenes(args.out, args.seed, args.data_root, args.train_scenes, args.val_scenes, options,
                    progress=lambda line: print(line, file=sys.stderr, flush=True))
    except SuiteError as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        print(f"error: could not write {args.out}: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {args.train_scenes} train and {args.val_scenes} val scenes of {options.size}x{options.size} px "
          f"({options.min_items}-{options.max_items} Fashion-MNIST items each) in {args.out}: "
          f"{', '.join(p + '/' for p in PARTS)} and {MANIFEST}")
    print(f"done in {time.perf_counter() - started:.1f} s (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
