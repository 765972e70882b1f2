"""Labelled classification data sets, read from their official on-disk formats.

Every reader takes the data set's root folder and a split (``"train"`` or ``"val"``; a data set
whose official evaluation split has another name maps ``"val"`` onto it) and returns a torch
Dataset whose items are ``(PIL image, label)``, with ``classes`` (the class names, index =
label) and ``targets`` (the label of every item), as torchvision's ImageFolder has them. Fine-
tuning, linear probing and k-NN read their data through :func:`load_classification`.

Readers (``READERS``):

- ``imagefolder``: ``ROOT/{train,val}/<class>/<image>`` (ImageNet and its subsets, any ImageFolder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch.utils.data import Dataset

from benchmark.data.folders import DataError, image_folder

SPLITS = ("train", "val")
IMAGEFOLDER_LAYOUT = "ROOT/{train,val}/<class>/<image> (ImageFolder)"


def imagefolder(root: Path, split: str) -> Dataset:
    return image_folder(root / split, IMAGEFOLDER_LAYOUT)


READERS: dict[str, Callable[[Path, str], Dataset]] = {
    "imagefolder": imagefolder,
}


class Transformed(Dataset):
    """``dataset`` with ``transform`` applied to each item's image (evaluation: no randomness)."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any]) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        return self.transform(image), label


def load_classification(kind: str, root: str | Path, split: str) -> Dataset:
    """The ``split`` of the data set of format ``kind`` at ``root``; a one-line DataError for an
    unknown format or split, or a folder that does not hold the format."""
    if kind not in READERS:
        raise DataError(f"unknown classification data set format {kind!r}; expected one of {sorted(READERS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    return READERS[kind](Path(root), split)
