"""Image readers for real on-disk layouts, and deterministic, resumable sampling.

- :class:`ImageFiles`: every image below a folder, labels unused (COCO ``train2017/``,
  ADE20k ``images/training/``, or an ImageFolder's ``train/`` for pre-training on it);
- torchvision's ``ImageFolder`` for labelled ``root/<class>/<image>`` sets.

Augmentation randomness is tied to (seed, epoch, index) by :class:`SeededTransform`, and the
order of samples to (seed, epoch) by :class:`EpochSampler`, so a run resumed at any step sees
exactly the images and crops an uninterrupted run would have seen, for any number of workers.

A corrupt or truncated image (one PIL cannot decode) is, by default, skipped: the next image of the
data set takes its place (deterministically, so a resumed run still matches), one ``[data]`` line on
stderr names it, and the run's ``skipped_images.txt`` lists it. ``--corrupt-images fail`` (the
environment variable ``SSLBENCH_CORRUPT_IMAGES=fail``, which data-loader workers and child
processes inherit) makes the first one a one-line :class:`DataError` instead.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision.datasets import ImageFolder

from benchmark.errors import CorruptImage, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


CORRUPT_ENV = "SSLBENCH_CORRUPT_IMAGES"
CORRUPT_POLICIES = ("skip", "fail")


def set_corrupt_policy(policy: str) -> None:
    """``skip`` (the default) or ``fail``, for this process and those it starts."""
    if policy not in CORRUPT_POLICIES:
        raise DataError(f"unknown corrupt-image policy {policy!r}; expected one of {CORRUPT_POLICIES}")
    os.environ[CORRUPT_ENV] = policy


def corrupt_policy() -> str:
    policy = os.environ.get(CORRUPT_ENV, "skip")
    if policy not in CORRUPT_POLICIES:
        raise DataError(f"{CORRUPT_ENV}={policy!r}; expected one of {CORRUPT_POLICIES}")
    return policy


def open_image(path: str | Path) -> Image.Image:
    """The image at ``path``, fully decoded, as RGB; :class:`CorruptImage` if it cannot be."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImage(path, err) from None


class SkipCorrupt:
    """Reads item ``position`` of a data set through ``read``; where its image is corrupt, the
    next readable one takes its place (or, under ``--corrupt-images fail``, a DataError stops the
    run). Each skipped file is reported once, on stderr and in ``log`` if given (once per process
    where there is no log; a file the log already lists, read by an earlier loader of the run, is
    not reported again)."""

    def __init__(self, log: str | Path | None = None) -> None:
        self.log = Path(log) if log is not None else None
        self.skipped: set[Path] = set()

    def read(self, read: Callable[[int], Any], position: int, size: int) -> Any:
        for offset in range(size):
            try:
                return read((position + offset) % size)
            except CorruptImage as err:
                if corrupt_policy() == "fail":
                    raise DataError(f"{err}; stopping (--corrupt-images fail); without the flag it is skipped") from None
                self._report(err)
        raise DataError(f"no readable image among the {size} of the data set (every one is corrupt)")

    def _report(self, err: CorruptImage) -> None:
        if err.path in self.skipped:
            return
        self.skipped.add(err.path)
        if self.log is not None and str(err.path) in skipped_images(self.log):
            return
        print(f"[data] skipped {err}; the next image takes its place ({len(self.skipped)} skipped so far in this "
              "process; --corrupt-images fail stops instead)", file=sys.stderr, flush=True)
        if self.log is not None:
            with open(self.log, "a") as fh:  # one short append per file: whole lines from every worker
                fh.write(f"{err.path}\t{err.reason}\n")


SKIPPED = "skipped_images.txt"  # in a run's directory: the corrupt images it skipped (SkipCorrupt's log)


def skipped_images(log: str | Path) -> list[str]:
    """The distinct files a run's ``skipped_images.txt`` (:data:`SKIPPED`) lists."""
    path = Path(log)
    if not path.is_file():
        return []
    return sorted({line.split("\t", 1)[0] for line in path.read_text().splitlines() if line.strip()})


def list_images(root: str | Path, layout_hint: str = "any folder of .jpg/.png images") -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected {layout_hint})")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"{root}: no images found (expected {layout_hint})")
    return files


def one_thread_worker(_worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: one torch thread per worker process. Workers run their
    transforms side by side; each with torch's default of one thread per core would oversubscribe
    the CPU many times over."""
    torch.set_num_threads(1)


class VisibleImageFolder(ImageFolder):
    """torchvision's ImageFolder, but hidden folders (``.ipynb_checkpoints``, caches) are no class,
    and images are read by :func:`open_image` (a corrupt one raises :class:`CorruptImage`)."""

    def __init__(self, root: str, **kwargs: Any) -> None:
        super().__init__(root, loader=open_image, **kwargs)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: index for index, name in enumerate(classes)}


def image_folder(root: str | Path, layout_hint: str = "ROOT/<class>/<image> (ImageFolder)") -> ImageFolder:
    """torchvision's ImageFolder at ``root``, with a one-line :class:`DataError` if it is not one."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected {layout_hint})")
    try:
        return VisibleImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"{root}: {err} (expected {layout_hint})") from None


class ImageFiles(Dataset):
    """Every image below ``root`` (sorted, recursive); each item is ``(PIL image, 0)``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.files = list_images(root)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return open_image(self.files[index]), 0


def fraction_subset(num_items: int, fraction: float, seed: int, labels: Sequence[int] | None = None) -> list[int]:
    """A deterministic subset of ``fraction`` of the indices (at least one per class).

    With ``labels``, the subset is class-balanced: each class keeps ``fraction`` of its items.
    The same (num_items, fraction, seed, labels) always gives the same indices, for every method.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(range(num_items))
    gen = torch.Generator().manual_seed(seed)
    groups: dict[int, list[int]] = {}
    for index in range(num_items):
        groups.setdefault(labels[index] if labels is not None else 0, []).append(index)
    chosen: list[int] = []
    for members in groups.values():
        keep = max(1, round(len(members) * fraction))
        order = torch.randperm(len(members), generator=gen)[:keep]
        chosen.extend(members[i] for i in order.tolist())
    return sorted(chosen)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (stable across processes, unlike ``hash``)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


class SeededTransform(Dataset):
    """Applies ``transform`` to ``dataset[index]`` with RNG seeded by (seed, epoch, index).

    Items are requested as ``(epoch, index)`` (see :class:`EpochSampler`). The transform may
    draw from torch's, ``random``'s and numpy's global RNGs (torchvision, timm's augmentations);
    all three are seeded per item and restored afterwards, so the caller's are untouched. A
    corrupt image is replaced by the next one of ``indices`` (:class:`SkipCorrupt`; ``skip_log``
    lists them).
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Image.Image], Any], seed: int, indices: Sequence[int] | None = None,
                 skip_log: str | Path | None = None) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.indices = list(indices) if indices is not None else list(range(len(dataset)))  # type: ignore[arg-type]
        self.corrupt = SkipCorrupt(skip_log)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[Any, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, label = self.corrupt.read(lambda i: self.dataset[self.indices[i]], index, len(self.indices))
        seed = mix_seed(self.seed, epoch, index)
        state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)  # the CPU's alone: torch.manual_seed
            # also seeds (and lazily records a traceback for) every GPU, which fork_rng(devices=[]) does not restore
            random.seed(seed)
            np.random.seed(seed % 2**32)  # timm's RandAugment picks its operations with numpy
            try:
                return self.transform(image), label
            finally:
                random.setstate(state)
                np.random.set_state(np_state)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` forever: a fresh permutation per epoch, seeded by (seed, epoch).

    ``start`` skips that many samples of the stream (what a resumed run has already consumed).
    With ``num_replicas > 1`` each rank takes every ``num_replicas``-th sample of the stream.
    """

    def __init__(self, size: int, seed: int, start: int = 0, rank: int = 0, num_replicas: int = 1) -> None:
        self.size, self.seed, self.start = size, seed, start
        self.rank, self.num_replicas = rank, num_replicas

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.size)
        position = self.start
        while True:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch)))
            for index in order[offset:].tolist():
                if position % self.num_replicas == self.rank:
                    yield epoch, index
                position += 1
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # a stream; the training loop counts steps, not epochs
        return self.size
