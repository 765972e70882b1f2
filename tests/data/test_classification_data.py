"""Classification readers on tiny copies of each data set in its official on-disk format.

Every image is a solid colour that encodes its true class (``PALETTE[class]``), so a reader that
returns a wrong label, or a wrong class order, is caught by looking at the pixels it returns.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat, savemat

from benchmark.data.classification import DOMAINNET_DOMAINS, READERS, load_classification
from benchmark.errors import DataError

PALETTE = [(220, 20, 20), (20, 200, 20), (20, 20, 220)]
TRAIN_PER_CLASS, VAL_PER_CLASS = 2, 1


def write_jpeg(path: Path, true_class: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), PALETTE[true_class]).save(path, quality=95)


def colour_class(image: Image.Image) -> int:
    """The palette index nearest to the image's mean colour."""
    mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(mean - np.array(c)).sum() for c in PALETTE]))


def check_dataset(dataset, classes: list[str], size: int) -> None:
    """``size`` items, ``classes`` in order, and each image's colour is its returned label."""
    assert len(dataset) == size
    assert dataset.classes == classes
    assert len(dataset.targets) == size
    for index in range(size):
        image, label = dataset[index]
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (16, 16)
        assert isinstance(label, int) and label == dataset.targets[index]
        assert colour_class(image) == label
    assert sorted(set(dataset.targets)) == list(range(len(classes)))


# --- iNaturalist 2019 ------------------------------------------------------------------------

# Category ids out of order and with gaps: labels must follow the sorted ids (2, 5, 7).
INAT_CATEGORIES = [
    {"id": 7, "name": "Ursus arctos", "kingdom": "Animalia", "supercategory": "Mammals"},
    {"id": 2, "name": "Quercus robur", "kingdom": "Plantae", "supercategory": "Plants"},
    {"id": 5, "name": "Amanita muscaria", "kingdom": "Fungi", "supercategory": "Fungi"},
]
INAT_CLASSES = ["Quercus robur", "Amanita muscaria", "Ursus arctos"]  # sorted by id


def make_inat2019(root: Path) -> Path:
    """``ROOT/{train2019,val2019}.json`` and ``ROOT/train_val2019/<super>/<id>/<hash>.jpg``."""
    by_id = sorted(INAT_CATEGORIES, key=lambda c: c["id"])
    image_id = 100
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        images, annotations = [], []
        for position, category in reversed(list(enumerate(by_id))):  # not in label order
            for k in range(per_class):
                name = f"train_val2019/{category['supercategory']}/{category['id']}/{split}{image_id:08x}{k}.jpg"
                write_jpeg(root / name, position)
                images.append({"id": image_id, "file_name": name, "width": 16, "height": 16, "license": 0})
                annotations.append({"image_id": image_id, "category_id": category["id"], "id": image_id + 5000})
                image_id += 1
        annotations.reverse()  # annotations in another order than images
        data = {"info": {"year": 2019}, "images": images, "annotations": annotations, "categories": INAT_CATEGORIES,
                "licenses": []}
        (root / f"{split}2019.json").write_text(json.dumps(data))
    return root


def test_inat2019_reads_both_splits(tmp_path: Path) -> None:
    root = make_inat2019(tmp_path / "inat")
    train = load_classification("inat2019", root, "train")
    val = load_classification("inat2019", root, "val")
    check_dataset(train, INAT_CLASSES, 3 * TRAIN_PER_CLASS)
    check_dataset(val, INAT_CLASSES, 3 * VAL_PER_CLASS)
    assert train.classes == val.classes
    assert all("val" in Path(f).name for f in val.files)


def test_inat2019_errors(tmp_path: Path) -> None:
    root = make_inat2019(tmp_path / "inat")
    data = json.loads((root / "val2019.json").read_text())
    missing_image = root / data["images"][0]["file_name"]
    missing_image.unlink()
    with pytest.raises(DataError, match=rf"{missing_image.name}: image listed in .*val2019\.json not found"):
        load_classification("inat2019", root, "val")

    data["annotations"][0]["category_id"] = 999
    write_jpeg(missing_image, 0)
    (root / "val2019.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="unknown category_id 999"):
        load_classification("inat2019", root, "val")

    (root / "val2019.json").write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DataError, match=r"val2019\.json: missing field 'annotations'"):
        load_classification("inat2019", root, "val")

    (root / "val2019.json").unlink()
    with pytest.raises(DataError, match=r"val2019\.json: no such file \(expected .*train_val2019"):
        load_classification("inat2019", root, "val")

    shutil.rmtree(root / "train_val2019")
    with pytest.raises(DataError, match=r"train_val2019: no such directory"):
        load_classification("inat2019", root, "train")


# --- Stanford Cars ---------------------------------------------------------------------------

CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TTS Coupe 2012"]
ANNOTATION_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def save_annotations(path: Path, rows: list[tuple[str, int]], with_class: bool = True) -> None:
    """A 1xN MATLAB struct array ``annotations`` as in the devkit (``class`` is 1-based)."""
    fields = [f for f in ANNOTATION_FIELDS if with_class or f != "class"]
    records = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, (fname, klass) in enumerate(rows):
        for f, value in zip(("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"), (1, 2, 15, 14)):
            records[0, i][f] = np.array([[value]], dtype=np.uint8)
        if with_class:
            records[0, i]["class"] = np.array([[klass]], dtype=np.uint8)
        records[0, i]["fname"] = fname
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"annotations": records})


def make_stanford_cars(root: Path, test_annos_in_devkit: bool = False) -> Path:
    """``ROOT/devkit/{cars_meta,cars_train_annos}.mat``, the labelled test annotations,
    ``ROOT/cars_train/`` and ``ROOT/cars_test/``."""
    names = np.empty((1, len(CARS_CLASSES)), dtype=object)
    names[0, :] = CARS_CLASSES
    (root / "devkit").mkdir(parents=True)
    savemat(str(root / "devkit" / "cars_meta.mat"), {"class_names": names})
    counter = 1
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", VAL_PER_CLASS)):
        rows = []
        for _ in range(per_class):
            for klass in (3, 1, 2):  # interleaved, as the real files are
                fname = f"{counter:05d}.jpg"
                write_jpeg(root / f"cars_{split}" / fname, klass - 1)
                rows.append((fname, klass))
                counter += 1
        if split == "train":
            save_annotations(root / "devkit" / "cars_train_annos.mat", rows)
        else:
            folder = root / "devkit" if test_annos_in_devkit else root
            save_annotations(folder / "cars_test_annos_withlabels.mat", rows)
    return root


def test_stanford_cars_mat_files_read_back_as_the_official_ones(tmp_path: Path) -> None:
    root = make_stanford_cars(tmp_path / "cars")
    names = loadmat(str(root / "devkit" / "cars_meta.mat"))["class_names"]
    assert names.shape == (1, 3) and names.dtype == object and names[0, 1][0] == CARS_CLASSES[1]
    annos = loadmat(str(root / "devkit" / "cars_train_annos.mat"))["annotations"]
    assert annos.shape == (1, 3 * TRAIN_PER_CLASS) and set(annos.dtype.names) == set(ANNOTATION_FIELDS)
    assert annos[0, 0]["class"].shape == (1, 1) and annos[0, 0]["fname"][0] == "00001.jpg"


@pytest.mark.parametrize("in_devkit", [False, True])
def test_stanford_cars_reads_both_splits(tmp_path: Path, in_devkit: bool) -> None:
    root = make_stanford_cars(tmp_path / "cars", test_annos_in_devkit=in_devkit)
    train = load_classification("stanford-cars", root, "train")
    val = load_classification("stanford-cars", root, "val")
    check_dataset(train, CARS_CLASSES, 3 * TRAIN_PER_CLASS)
    check_dataset(val, CARS_CLASSES, 3 * VAL_PER_CLASS)
    assert train.classes == val.classes
    assert train.targets[:3] == [2, 0, 1]  # class - 1, in the annotation order
    assert all(Path(f).parent.name == "cars_test" for f in val.files)


def test_stanford_cars_errors(tmp_path: Path) -> None:
    root = make_stanford_cars(tmp_path / "cars")
    (root / "cars_test" / "00008.jpg").unlink()
    with pytest.raises(DataError, match=r"00008\.jpg: image listed in .*cars_test_annos_withlabels\.mat not found"):
        load_classification("stanford-cars", root, "val")

    save_annotations(root / "cars_test_annos_withlabels.mat", [("00007.jpg", 1)], with_class=False)
    with pytest.raises(DataError, match=r"no field 'class'.*cars_test_annos_withlabels"):
        load_classification("stanford-cars", root, "val")

    (root / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DataError,
                       match=r"cars_test_annos_withlabels\.mat or .*devkit/cars_test_annos_withlabels\.mat: no such file"):
        load_classification("stanford-cars", root, "val")

    save_annotations(root / "devkit" / "cars_train_annos.mat", [("00001.jpg", 4)])
    with pytest.raises(DataError, match=r"00001\.jpg has class 4, outside 1\.\.3"):
        load_classification("stanford-cars", root, "train")

    (root / "devkit" / "cars_meta.mat").unlink()
    with pytest.raises(DataError, match=r"devkit/cars_meta\.mat: no such file \(expected .*Stanford Cars"):
        load_classification("stanford-cars", root, "train")

    root = make_stanford_cars(tmp_path / "cars2")
    shutil.rmtree(root / "cars_train")
    with pytest.raises(DataError, match=r"cars_train: no such directory"):
        load_classification("stanford-cars", root, "train")


# --- DomainNet -------------------------------------------------------------------------------

DOMAINNET_CLASSES = ["zebra", "The_Eiffel_Tower", "apple"]  # label order, not alphabetical


def make_domainnet(root: Path, domain: str = "sketch") -> Path:
    """``ROOT/<domain>_{train,test}.txt`` and ``ROOT/<domain>/<class>/<domain>_<n>.jpg``."""
    counter = 0
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", VAL_PER_CLASS)):
        lines = []
        for label in (2, 0, 1):
            for _ in range(per_class):
                relative = f"{domain}/{DOMAINNET_CLASSES[label]}/{domain}_{counter:03d}_{counter:06d}.jpg"
                write_jpeg(root / relative, label)
                lines.append(f"{relative} {label}\n")
                counter += 1
        (root / f"{domain}_{split}.txt").write_text("".join(lines))
    return root


@pytest.mark.parametrize("domain", ["sketch", "real"])
def test_domainnet_reads_both_splits(tmp_path: Path, domain: str) -> None:
    root = make_domainnet(tmp_path / "domainnet", domain)
    train = load_classification(f"domainnet-{domain}", root, "train")
    val = load_classification(f"domainnet-{domain}", root, "val")
    check_dataset(train, DOMAINNET_CLASSES, 3 * TRAIN_PER_CLASS)
    check_dataset(val, DOMAINNET_CLASSES, 3 * VAL_PER_CLASS)
    assert train.classes == val.classes
    assert not set(train.files) & set(val.files)


def test_every_domainnet_domain_is_registered() -> None:
    assert set(DOMAINNET_DOMAINS) == {"clipart", "infograph", "painting", "quickdraw", "real", "sketch"}
    assert {f"domainnet-{d}" for d in DOMAINNET_DOMAINS} | {"imagefolder", "inat2019", "stanford-cars", "fashion-mnist"} \
        == set(READERS)


def test_domainnet_errors(tmp_path: Path) -> None:
    root = make_domainnet(tmp_path / "domainnet")
    test_list = root / "sketch_test.txt"
    lines = test_list.read_text().splitlines(keepends=True)

    first = root / lines[0].split()[0]
    first.unlink()
    with pytest.raises(DataError, match=rf"{first.name}: image listed in .*sketch_test\.txt not found"):
        load_classification("domainnet-sketch", root, "val")
    write_jpeg(first, 2)

    # label 0 is "zebra" in train but "apple" here: the two lists disagree on the classes
    swapped = [line.replace(" 2\n", " 9\n").replace(" 0\n", " 2\n").replace(" 9\n", " 0\n") for line in lines]
    test_list.write_text("".join(swapped))
    with pytest.raises(DataError,
                       match=r"sketch_train\.txt and .*sketch_test\.txt disagree on the classes .*label 0 is 'zebra' vs 'apple'"):
        load_classification("domainnet-sketch", root, "train")

    test_list.write_text("".join(lines[:2]))  # class 1 missing from the test list
    with pytest.raises(DataError, match=r"disagree on the classes \(3 vs 2 labels, label 1 \('The_Eiffel_Tower'\) "
                                        r"is only in sketch_train\.txt"):
        load_classification("domainnet-sketch", root, "val")

    test_list.write_text("".join(lines) + "sketch/zebra/x.jpg 1\n")
    with pytest.raises(DataError, match=r"sketch_test\.txt:4: label 1 is class 'zebra' here but 'The_Eiffel_Tower' earlier"):
        load_classification("domainnet-sketch", root, "val")

    test_list.write_text("sketch/zebra/x.jpg\n")
    with pytest.raises(DataError, match=r"sketch_test\.txt:1: expected 'sketch/<class>/<image> <label>'"):
        load_classification("domainnet-sketch", root, "val")

    test_list.unlink()
    with pytest.raises(DataError, match=r"sketch_test\.txt: no such file \(expected .*DomainNet"):
        load_classification("domainnet-sketch", root, "train")

    for name in ("sketch_train.txt", "sketch_test.txt"):  # one folder, two labels, in both lists
        (root / name).write_text("sketch/zebra/a.jpg 0\nsketch/zebra/b.jpg 1\n")
    with pytest.raises(DataError, match=r"sketch_train\.txt: class folder 'zebra' has several labels"):
        load_classification("domainnet-sketch", root, "train")
    (root / "sketch_test.txt").write_text("sketch/zebra/a.jpg 0\nsketch/apple/b.jpg 2\n")
    (root / "sketch_train.txt").write_text("sketch/zebra/a.jpg 0\nsketch/apple/b.jpg 2\n")
    with pytest.raises(DataError, match=r"sketch_train\.txt: labels are not 0\.\.1"):
        load_classification("domainnet-sketch", root, "train")

    root = make_domainnet(tmp_path / "domainnet2")
    shutil.rmtree(root / "sketch")
    with pytest.raises(DataError, match=r"domainnet2/sketch: no such directory"):
        load_classification("domainnet-sketch", root, "train")


# --- dispatch and ImageFolder ----------------------------------------------------------------


def test_unknown_kind_and_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown classification data set format 'cars'; expected one of .*'stanford-cars'"):
        load_classification("cars", tmp_path, "train")
    with pytest.raises(DataError, match=r"unknown split 'testing'"):
        load_classification("imagefolder", tmp_path, "testing")
    # Only an ImageFolder has a held-out test split of its own; the official formats' val is their test.
    with pytest.raises(DataError, match=r"inat2019 has no split 'test' here"):
        load_classification("inat2019", tmp_path, "test")


def test_imagefolder_still_reads(tmp_path: Path) -> None:
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for label, name in enumerate(("a", "b", "c")):
            for k in range(per_class):
                write_jpeg(tmp_path / split / name / f"{k}.jpg", label)
    check_dataset(load_classification("imagefolder", tmp_path, "train"), ["a", "b", "c"], 3 * TRAIN_PER_CLASS)
    check_dataset(load_classification("imagefolder", tmp_path, "val"), ["a", "b", "c"], 3 * VAL_PER_CLASS)
    with pytest.raises(DataError, match=r"missing/train: no such directory"):
        load_classification("imagefolder", tmp_path / "missing", "train")


def test_domainnet_pretraining_reads_the_train_list_only(tmp_path) -> None:
    """Pre-training on a DomainNet domain sees the images of its train list, never the test
    images that Table 6 evaluates on, although both live in the same class folders."""
    from benchmark.experiments.paper import Pre, pretrain_run
    from benchmark.experiments.scales import SCALE_SPECS
    from benchmark.stages.pretrain import PretrainConfig, _images

    root = make_domainnet(tmp_path / "domainnet", "clipart")
    train_list = {line.split()[0] for line in (root / "clipart_train.txt").read_text().splitlines()}
    images, labels = _images(PretrainConfig(data_root=str(root), dataset="domainnet-clipart"), needs_labels=False)
    seen = {str(Path(f).relative_to(root)) for f in images.files}
    assert seen == train_list and len(labels) == len(seen)
    assert len(list((root / "clipart").rglob("*.jpg"))) > len(seen)  # the folder holds the test images too

    run = pretrain_run(SCALE_SPECS["paper"], Pre("splitmask", "domainnet-clipart", 1.0, 100), "s")
    assert run.config["dataset"] == "domainnet-clipart" and run.config["data_root"] == {"data": "domainnet", "path": ""}
