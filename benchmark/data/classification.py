"""Labelled classification data sets, read from their official on-disk formats.

Every reader takes the data set's root folder and a split (``"train"`` or ``"val"``; a data set
whose official evaluation split has another name maps ``"val"`` onto it) and returns a torch
Dataset whose items are ``(PIL RGB image, label)``, with ``classes`` (the class names, index =
label) and ``targets`` (the label of every item), as torchvision's ImageFolder has them. Fine-
tuning, linear probing and k-NN read their data through :func:`load_classification`.
docs/datasets.md says where each format's official files come from.

Readers (``READERS``):

- ``imagefolder``: ``ROOT/{train,val}/<class>/<image>`` (ImageNet and its subsets, any ImageFolder).
- ``inat2019``: iNaturalist 2019, ``ROOT/train2019.json``, ``ROOT/val2019.json`` (COCO-like:
  ``images`` with ``file_name`` relative to ROOT, ``annotations`` with ``image_id`` and
  ``category_id``, ``categories`` with ``id`` and ``name``) and the images in
  ``ROOT/train_val2019/<supercategory>/<category id>/<file>.jpg``. Labels: categories sorted by
  id, label = position; classes = their names. ``val`` reads ``val2019.json``.
- ``stanford-cars``: Stanford Cars with its devkit, ``ROOT/devkit/cars_meta.mat``
  (``class_names``), ``ROOT/devkit/cars_train_annos.mat`` (``annotations``: ``fname``,
  ``class`` 1-based, bounding box), ``ROOT/cars_test_annos_withlabels.mat`` (or in
  ``ROOT/devkit/``), images in ``ROOT/cars_train/<fname>`` and ``ROOT/cars_test/<fname>``.
  Label = ``class - 1``; classes = ``class_names``. ``val`` is the test split.
- ``domainnet-<domain>`` (clipart, infograph, painting, quickdraw, real, sketch): DomainNet,
  ``ROOT/<domain>_train.txt`` and ``ROOT/<domain>_test.txt``, one ``<domain>/<class>/<file>
  <label>`` per line (path relative to ROOT). Classes: the ``<class>`` folder names ordered by
  label, identical in both lists. ``val`` is the test split.

An annotation file or image folder that is missing, malformed, or names an image that is not on
disk gives a one-line :class:`~benchmark.data.folders.DataError` naming it and the layout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from benchmark.data.fashion_mnist import FashionMNIST
from benchmark.data.folders import SkipCorrupt, image_folder, open_image
from benchmark.errors import DataError

SPLITS = ("train", "val", "test")
# The formats with a held-out test split besides val (an ImageFolder with ROOT/test); the others' val is their test.
WITH_TEST_SPLIT = ("imagefolder", "fashion-mnist")
IMAGEFOLDER_LAYOUT = "ROOT/{train,val[,test]}/<class>/<image> (ImageFolder)"
INAT2019_LAYOUT = (
    "ROOT/{train2019,val2019}.json and ROOT/train_val2019/<supercategory>/<category id>/<image>.jpg "
    "(iNaturalist 2019)"
)
CARS_LAYOUT = (
    "ROOT/devkit/{cars_meta,cars_train_annos}.mat, ROOT/cars_test_annos_withlabels.mat "
    "(or in ROOT/devkit/), ROOT/cars_train/<fname>, ROOT/cars_test/<fname> (Stanford Cars)"
)
DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")


def domainnet_layout(domain: str) -> str:
    return (
        f"ROOT/{domain}_train.txt and ROOT/{domain}_test.txt with lines '{domain}/<class>/<image> <label>', "
        f"images in ROOT/{domain}/<class>/ (DomainNet)"
    )


class LabelledFiles(Dataset):
    """Images given as a list of files with their labels; items are ``(PIL RGB image, label)``."""

    def __init__(self, files: Sequence[Path], targets: Sequence[int], classes: Sequence[str]) -> None:
        if len(files) != len(targets):
            raise ValueError("files and targets differ in length")
        self.files = list(files)
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.samples = list(zip((str(f) for f in self.files), self.targets))  # as ImageFolder has them

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return open_image(self.files[index]), self.targets[index]


def first_missing(files: Iterable[Path]) -> Path | None:
    """The first of ``files`` that is not a file on disk, or None. Lists each folder once (a stat
    per image is slow on network file systems with hundreds of thousands of images)."""
    listings: dict[Path, set[str] | None] = {}
    for path in files:
        parent = path.parent
        if parent not in listings:
            try:
                listings[parent] = {e.name for e in os.scandir(parent) if e.is_file()}
            except OSError:
                listings[parent] = None
        names = listings[parent]
        if names is None or path.name not in names:
            return path
    return None


def require_images(files: Sequence[Path], source: Path, layout: str) -> None:
    """A DataError naming the first of ``files`` (listed in ``source``) that does not exist."""
    if not files:
        raise DataError(f"{source}: lists no images (expected {layout})")
    missing = first_missing(files)
    if missing is not None:
        raise DataError(f"{missing}: image listed in {source} not found (expected {layout})")


def require_dir(path: Path, layout: str) -> None:
    if not path.is_dir():
        raise DataError(f"{path}: no such directory (expected {layout})")


def imagefolder(root: Path, split: str) -> Dataset:
    """An ImageFolder per split: ``ROOT/train`` and ``ROOT/val``."""
    return image_folder(root / split, IMAGEFOLDER_LAYOUT)


def inat2019(root: Path, split: str) -> LabelledFiles:
    """iNaturalist 2019 from its official json files; ``val`` is ``val2019.json``."""
    path = root / f"{'train' if split == 'train' else 'val'}2019.json"
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected {INAT2019_LAYOUT})")
    require_dir(root / "train_val2019", INAT2019_LAYOUT)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        label_of = {c["id"]: index for index, c in enumerate(categories)}
        classes = [str(c["name"]) for c in categories]
        category_of = {a["image_id"]: a["category_id"] for a in data["annotations"]}
        images = [(i["id"], i["file_name"]) for i in data["images"]]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid json ({err}) (expected {INAT2019_LAYOUT})") from None
    except (KeyError, TypeError) as err:
        raise DataError(f"{path}: missing field {err} (expected 'images', 'annotations' and 'categories' as in "
                        f"{INAT2019_LAYOUT})") from None
    if len(label_of) != len(categories):
        raise DataError(f"{path}: duplicate category ids (expected {INAT2019_LAYOUT})")
    files, targets = [], []
    for image_id, file_name in images:
        if image_id not in category_of:
            raise DataError(f"{path}: image {image_id} ({file_name}) has no annotation (expected {INAT2019_LAYOUT})")
        category = category_of[image_id]
        if category not in label_of:
            raise DataError(f"{path}: image {image_id} has unknown category_id {category} (expected {INAT2019_LAYOUT})")
        files.append(root / file_name)
        targets.append(label_of[category])
    require_images(files, path, INAT2019_LAYOUT)
    return LabelledFiles(files, targets, classes)


def mat_scalar(value: Any) -> Any:
    """The one value inside a MATLAB cell or field as ``loadmat`` returns it (e.g. ``[[14]]``,
    ``['00001.jpg']``)."""
    array = np.asarray(value)
    if array.dtype == object and array.size == 1:
        return mat_scalar(array.reshape(-1)[0])
    if array.size != 1:
        raise ValueError(f"expected one value, got shape {array.shape}")
    return array.reshape(-1)[0].item() if array.dtype.kind != "U" else str(array.reshape(-1)[0])


def load_mat(path: Path, variable: str) -> np.ndarray:
    """``variable`` of the .mat file at ``path``, flattened; a DataError if it is not there."""
    from scipy.io import loadmat  # a dependency only of this reader

    try:
        content = loadmat(str(path))
    except Exception as err:  # scipy raises several types for a file that is not a .mat
        raise DataError(f"{path}: not a readable .mat file ({err}) (expected {CARS_LAYOUT})") from None
    if variable not in content:
        raise DataError(f"{path}: no variable {variable!r} (expected {CARS_LAYOUT})")
    return np.asarray(content[variable]).reshape(-1)


def stanford_cars(root: Path, split: str) -> LabelledFiles:
    """Stanford Cars from the devkit's .mat files; ``val`` is the labelled test split."""
    meta = root / "devkit" / "cars_meta.mat"
    if split == "train":
        annos, images = root / "devkit" / "cars_train_annos.mat", root / "cars_train"
    else:
        name = "cars_test_annos_withlabels.mat"
        candidates = [root / name, root / "devkit" / name]
        annos = next((p for p in candidates if p.is_file()), candidates[0])
        images = root / "cars_test"
    for path in (meta, annos):
        if not path.is_file():
            where = f" or {root / 'devkit' / path.name}" if path.name == "cars_test_annos_withlabels.mat" else ""
            raise DataError(f"{path}{where}: no such file (expected {CARS_LAYOUT})")
    require_dir(images, CARS_LAYOUT)
    try:
        classes = [str(mat_scalar(name)) for name in load_mat(meta, "class_names")]
    except (ValueError, TypeError) as err:
        raise DataError(f"{meta}: bad 'class_names' ({err}) (expected a 1x196 cell of strings)") from None
    records = load_mat(annos, "annotations")
    fields = records.dtype.names or ()
    for field in ("fname", "class"):
        if field not in fields:
            hint = " (the unlabelled cars_test_annos.mat? use cars_test_annos_withlabels.mat)" if field == "class" else ""
            raise DataError(f"{annos}: 'annotations' has no field {field!r}{hint} (expected {CARS_LAYOUT})")
    files, targets = [], []
    for record in records:
        try:
            fname, klass = str(mat_scalar(record["fname"])), int(mat_scalar(record["class"]))
        except (ValueError, TypeError) as err:
            raise DataError(f"{annos}: bad annotation ({err}) (expected {CARS_LAYOUT})") from None
        if not 1 <= klass <= len(classes):
            raise DataError(f"{annos}: {fname} has class {klass}, outside 1..{len(classes)} of {meta.name}")
        files.append(images / fname)
        targets.append(klass - 1)
    require_images(files, annos, CARS_LAYOUT)
    return LabelledFiles(files, targets, classes)


def read_domainnet_list(path: Path, domain: str) -> tuple[list[str], list[int], dict[int, str]]:
    """The relative paths and labels of a DomainNet list, and each label's class folder name."""
    layout = domainnet_layout(domain)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected {layout})")
    paths: list[str] = []
    labels: list[int] = []
    name_of: dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().rsplit(maxsplit=1)  # a path with spaces keeps them
            relative = parts[0] if len(parts) == 2 else ""
            components = relative.split("/")
            if len(components) != 3 or components[0] != domain or not parts[1].isdigit():
                raise DataError(f"{path}:{number}: expected '{domain}/<class>/<image> <label>', got {line.strip()!r}")
            label, name = int(parts[1]), components[1]
            if name_of.setdefault(label, name) != name:
                raise DataError(f"{path}:{number}: label {label} is class {name!r} here but {name_of[label]!r} earlier")
            paths.append(relative)
            labels.append(label)
    if not paths:
        raise DataError(f"{path}: lists no images (expected {layout})")
    return paths, labels, name_of


def domainnet_classes(train: dict[int, str], test: dict[int, str], train_list: Path, test_list: Path) -> list[str]:
    """The class names ordered by label, the same in both lists; a DataError where they differ."""
    if train != test:
        only = sorted(set(train) ^ set(test))
        renamed = sorted(label for label in set(train) & set(test) if train[label] != test[label])
        if renamed:
            label = renamed[0]
            where = f"label {label} is {train[label]!r} vs {test[label]!r}"
        else:
            label = only[0]
            only_in = (train_list if label in train else test_list).name
            where = f"label {label} ({train.get(label, test.get(label))!r}) is only in {only_in}"
        raise DataError(
            f"{train_list} and {test_list} disagree on the classes ({len(train)} vs {len(test)} labels, {where}); "
            "both must give each class folder the same label"
        )
    if sorted(train) != list(range(len(train))):
        raise DataError(f"{train_list}: labels are not 0..{len(train) - 1}")
    classes = [train[label] for label in range(len(train))]
    if len(set(classes)) != len(classes):
        name = next(n for n in classes if classes.count(n) > 1)
        raise DataError(f"{train_list}: class folder {name!r} has several labels")
    return classes


def domainnet(domain: str) -> Callable[[Path, str], LabelledFiles]:
    """The reader of DomainNet's ``domain``; ``val`` is the test split."""

    def read(root: Path, split: str) -> LabelledFiles:
        layout = domainnet_layout(domain)
        train_list, test_list = root / f"{domain}_train.txt", root / f"{domain}_test.txt"
        train = read_domainnet_list(train_list, domain)
        test = read_domainnet_list(test_list, domain)
        classes = domainnet_classes(train[2], test[2], train_list, test_list)
        paths, labels, _ = train if split == "train" else test
        require_dir(root / domain, layout)
        files = [root / p for p in paths]
        require_images(files, train_list if split == "train" else test_list, layout)
        return LabelledFiles(files, labels, classes)

    read.__name__ = read.__qualname__ = f"domainnet_{domain}"
    read.__doc__ = f"DomainNet {domain}: ROOT/{domain}_{{train,test}}.txt; val is the test split."
    return read


READERS: dict[str, Callable[[Path, str], Dataset]] = {
    "imagefolder": imagefolder,
    "inat2019": inat2019,
    "stanford-cars": stanford_cars,
    **{f"domainnet-{domain}": domainnet(domain) for domain in DOMAINNET_DOMAINS},
    "fashion-mnist": FashionMNIST,
}


class Transformed(Dataset):
    """``dataset`` with ``transform`` applied to each item's image (evaluation: no randomness); a
    corrupt image is replaced by the next one (:class:`~benchmark.data.folders.SkipCorrupt`)."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any], skip_log: str | Path | None = None) -> None:
        self.dataset, self.transform = dataset, transform
        self.corrupt = SkipCorrupt(skip_log)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.corrupt.read(self.dataset.__getitem__, index, len(self.dataset))
        return self.transform(image), label


def load_classification(kind: str, root: str | Path, split: str) -> Dataset:
    """The ``split`` of the data set of format ``kind`` at ``root``; a one-line DataError for an
    unknown format or split, or a folder that does not hold the format."""
    if kind not in READERS:
        raise DataError(f"unknown classification data set format {kind!r}; expected one of {sorted(READERS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split == "test" and kind not in WITH_TEST_SPLIT:
        raise DataError(f"{kind} has no split 'test' here: its 'val' split is the official test split")
    return READERS[kind](Path(root), split)


def load_splits(kind: str, root: str | Path, eval_split: str = "val") -> tuple[Dataset, Dataset]:
    """The train split and the split evaluated on (``val`` or, for an ImageFolder with a held-out
    ``test`` folder, ``test``), which must have the same classes."""
    if eval_split == "train":
        raise DataError("the evaluation split cannot be 'train'")
    train, held_out = load_classification(kind, root, "train"), load_classification(kind, root, eval_split)
    if held_out.classes != train.classes:
        raise DataError(f"{root}: the train and {eval_split} splits have different classes")
    return train, held_out
