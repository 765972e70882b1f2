"""The drawing behind :mod:`benchmark.data.synthetic`: textured shapes on textured backgrounds.

Holds the shape classes (:data:`SHAPES`), each image's own random generator (seeded from
``(seed, data set, split, index)``), the colours and textures, the shapes' contours and masks,
the COCO polygons, and the makers of one classification, COCO or ADE20k image. Nothing here
writes files; :mod:`benchmark.data.synthetic` does.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

# Alphabetical, so ImageFolder's sorted class indices equal the indices into this tuple.
SHAPES: tuple[str, ...] = ("circle", "cross", "ring", "square", "star", "triangle")
ADE_CLASSES: tuple[str, ...] = ("background",) + SHAPES
COCO_OBJECTS = (2, 4)  # objects per COCO image, inclusive
ADE_OBJECTS = (2, 5)  # shapes per ADE20k image, inclusive

Contours = list[np.ndarray]  # a shape's outline, then its holes: (n, 2) arrays of x, y
Disc = tuple[float, float, float]  # centre x, centre y, radius

DATASET_TAG = {"classification": 1, "coco": 2, "ade20k": 3}
_SPLIT_TAG = {"train": 0, "val": 1}


# --------------------------------------------------------------------------- randomness


def _rng(seed: int, dataset: str, split: str, *keys: int) -> np.random.Generator:
    """The generator of one image, named by ``keys``: independent of every count and other image."""
    return np.random.default_rng([int(seed), DATASET_TAG[dataset], _SPLIT_TAG[split], *map(int, keys)])


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


def shoelace(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def coco_polygon(contours: Contours) -> list[float]:
    """One flat COCO polygon; a hole is joined to the outline by a zero-width cut."""
    outer = contours[0]
    points = [outer]
    for hole in contours[1:]:
        if np.sign(shoelace(hole)) == np.sign(shoelace(outer)):
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


def classification_image(seed: int, split: str, cls: int, index: int, size: int) -> Image.Image:
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


def coco_image(seed: int, split: str, index: int, size: int) -> tuple[Image.Image, list[tuple[int, Contours]]]:
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


def ade_image(seed: int, split: str, index: int, size: int) -> tuple[Image.Image, Image.Image]:
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
