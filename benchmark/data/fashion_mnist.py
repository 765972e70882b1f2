"""Fashion-MNIST (Zalando Research, MIT licence), read from its official idx files.

60,000 train and 10,000 test greyscale 28x28 images of 10 clothing classes, as distributed:
``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, gzipped (``.gz``) or not, in the data set's root
folder, which is read as given: a root that lacks one of the four files, or is not a folder, is a
one-line :class:`~benchmark.errors.DataError`, never replaced by another copy. Debian's
``dataset-fashion-mnist`` package (:data:`DEBIAN_DIR`, which ``scripts/bootstrap.sh`` installs
where it can) is the root only where none was named: this module's CLI without ``--root``, and
the driver without ``--data-root`` (:func:`benchmark.experiments.datasets.dataset_dir`), whose
configs then name it.

Splits (``python -m benchmark.data.fashion_mnist --root ROOT`` prints them):

- ``val``: :data:`VAL_SIZE` images carved from the official train split, stratified by class and
  fixed (:data:`VAL_SEED`): every choice of a setting is made on it (a sixth of the train images
  where they are fewer than 60,000: a set too small to give every class a val image is refused);
- ``train``: the other 50,000 official train images (pre-training sees them without labels,
  fine-tuning and probing a class-balanced fraction of their labels);
- ``test``: the official 10,000 test images, for the tables only.

Items are ``(PIL RGB image, label)`` as every reader of :mod:`benchmark.data.classification` gives
them. A file that is not an idx file of the expected kind, is truncated, or whose image and label
counts disagree is a one-line :class:`~benchmark.errors.DataError` naming it.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from benchmark.errors import EXIT_BAD_INPUT, DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
VAL_SIZE, VAL_SEED = 10_000, 0
IDX_UBYTE = 0x08  # the idx type code of unsigned bytes, the only one Fashion-MNIST uses
HOW_TO_GET = (f"expected the official files {', '.join(n + '.gz' for pair in FILES.values() for n in pair)} "
              "(gzipped or not) in that folder; Debian's package has them (apt-get install dataset-fashion-mnist "
              f"puts them in {DEBIAN_DIR})")


def find_file(root: Path, stem: str) -> Path | None:
    """``root/stem.gz`` or ``root/stem``, whichever exists (the gzipped one first)."""
    for path in (root / f"{stem}.gz", root / stem):
        if path.is_file():
            return path
    return None


def holds_files(root: Path) -> bool:
    return all(find_file(root, stem) is not None for pair in FILES.values() for stem in pair)


def locate(root: str | Path) -> Path:
    """``root``, where it holds the four files; a one-line DataError naming what it lacks (and
    saying how to get the files) otherwise. A root is never replaced by another copy."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: {'not a directory' if root.exists() else 'no such directory'}; {HOW_TO_GET}")
    for stem in (stem for pair in FILES.values() for stem in pair):
        if find_file(root, stem) is None:
            raise DataError(f"{root / stem}[.gz]: no such file; {HOW_TO_GET}")
    return root


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The unsigned-byte array of ``ndim`` dimensions stored in the idx file at ``path``."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # a bad or truncated gzip stream
        raise DataError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'an idx file'} ({err})") from None
    kind = "images" if ndim == 3 else "labels"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE or raw[3] != ndim:
        found = raw[:4].hex() if len(raw) >= 4 else f"{len(raw)} bytes"
        raise DataError(f"{path}: not an idx file of {kind} (magic number {found}, expected "
                        f"0000{IDX_UBYTE:02x}{ndim:02x})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated idx header ({len(raw)} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path}: {what} ({len(raw)} bytes, the header's {'x'.join(map(str, dims))} needs {expected})")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_part(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) and labels (N,) of the official ``part`` (train | test) in ``folder``
    (read once per process while the files stay as they are)."""
    image_stem, label_stem = FILES[part]
    image_path, label_path = find_file(folder, image_stem), find_file(folder, label_stem)
    if image_path is None or label_path is None:
        raise DataError(f"{folder / (label_stem if image_path else image_stem)}[.gz]: no such file; {HOW_TO_GET}")
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in (image_path, label_path))
    return _read_pair(image_path, label_path, stamp)


def write_idx(path: Path, array: np.ndarray) -> Path:
    """``array`` as an unsigned-byte idx file (the magic number ``0000 08 <ndim>``, the big-endian
    dimensions, the bytes), gzipped where ``path`` ends in ``.gz``: the inverse of :func:`read_idx`."""
    raw = bytes([0, 0, IDX_UBYTE, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


@lru_cache(maxsize=4)
def _read_pair(image_path: Path, label_path: Path, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    del stamp  # part of the cache key only
    images, labels = read_idx(image_path, 3), read_idx(label_path, 1)
    if len(images) != len(labels):
        raise DataError(f"{image_path} holds {len(images)} images but {label_path} {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{label_path}: label {int(labels.max())} outside 0..{len(CLASSES) - 1}")
    return images, labels


def split_train(labels: np.ndarray, source: str | Path = "the train labels") -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of the official train split: ``VAL_SIZE`` stratified val images, fixed
    (a sixth of the images where that is fewer). Labels too few to give each of their classes a
    val image and a train image are a one-line DataError naming ``source`` (their file)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    val_size = min(VAL_SIZE, len(labels) // 6)  # tiny test files keep a train split
    counts = np.bincount(labels, minlength=len(CLASSES))
    classes = int((counts > 0).sum())
    rarest = int(counts[counts > 0].min()) if classes else 0
    if val_size < max(classes, 1) or rarest < 2:
        raise DataError(f"{source}: {len(labels)} train images are too few to split: the fixed val split (a sixth "
                        f"of them) holds an image of each of their {classes} classes, which takes at least "
                        f"{6 * max(classes, 1)} images and every class twice (the rarest has {rarest})")
    train, val = train_test_split(index, test_size=val_size, stratify=labels, random_state=VAL_SEED)
    return np.sort(train), np.sort(val)


class FashionMNIST(Dataset):
    """One split (train | val | test) of Fashion-MNIST; items are ``(PIL RGB image, label)``."""

    classes = list(CLASSES)

    def __init__(self, root: str | Path, split: str) -> None:
        if split not in ("train", "val", "test"):
            raise DataError(f"unknown Fashion-MNIST split {split!r}; expected train, val or test")
        self.folder = locate(root)
        images, labels = read_part(self.folder, "test" if split == "test" else "train")
        if split != "test":
            rows = split_train(labels, find_file(self.folder, FILES["train"][1]))[0 if split == "train" else 1]
            images, labels = images[rows], labels[rows]
        self.images = images
        self.targets = [int(t) for t in labels]

    def __len__(self) -> int:
        return len(self.targets)

    def content_key(self, index: int) -> bytes:
        """What identifies item ``index`` (its pixels and label), for caches of what is fitted on it."""
        return self.images[index].tobytes() + bytes([self.targets[index]])

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index], mode="L").convert("RGB"), self.targets[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.data.fashion_mnist",
                                     description="Check the Fashion-MNIST idx files and print the splits the suite uses.")
    parser.add_argument("--root", default=str(DEBIAN_DIR), help="the folder of the idx files (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        splits = {name: FashionMNIST(args.root, name) for name in ("train", "val", "test")}
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"Fashion-MNIST in {splits['train'].folder}: "
          + ", ".join(f"{name} {len(data)}" for name, data in splits.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
