"""The synthetic data generator: real on-disk formats, determinism, learnable labels, a careful CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.data import synthetic
from benchmark.data.synthetic import (
    ADE_CLASSES,
    SCALES,
    SHAPES,
    main,
    make_ade20k,
    make_all,
    make_classification,
    make_coco,
)

SMOKE = SCALES["smoke"]
TINY = {
    "classification": {"train_per_class": 2, "val_per_class": 1, "size": 32},
    "coco": {"num_train": 2, "num_val": 1, "size": 64},
    "ade20k": {"num_train": 2, "num_val": 1, "size": 64},
}


@pytest.fixture
def tiny_scale(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(SCALES, "tiny", TINY)
    return "tiny"


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(synthetic_root: Path, tmp_path: Path, tree_digest) -> None:
    make_all(tmp_path, seed=0, scale="smoke")
    for name in ("classification", "coco", "ade20k"):
        assert tree_digest(tmp_path / name) == tree_digest(synthetic_root / name), name
    assert (tmp_path / "synthetic.json").read_bytes() == (synthetic_root / "synthetic.json").read_bytes()


def test_different_seed_gives_different_data(synthetic_root: Path, tmp_path: Path, tree_digest) -> None:
    make_all(tmp_path, seed=1, scale="smoke")
    for name in ("classification", "coco", "ade20k"):
        assert tree_digest(tmp_path / name) != tree_digest(synthetic_root / name), name
    first = "classification/train/circle/00000.png"
    assert (tmp_path / first).read_bytes() != (synthetic_root / first).read_bytes()
    assert json.loads((tmp_path / "synthetic.json").read_text())["seed"] == 1


def test_splits_differ_and_counts_do_not_move_other_images(tmp_path: Path, tree_digest) -> None:
    a, b = make_coco(tmp_path / "a", 0, 3, 2, 64), make_coco(tmp_path / "b", 0, 5, 2, 64)
    for rel in ("train2017/000000000001.jpg", "train2017/000000000003.jpg", "val2017/000001000001.jpg"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "train2017/000000000001.jpg").read_bytes() != (a / "val2017/000001000001.jpg").read_bytes()
    val_a, val_b = (json.loads((p / "annotations/instances_val2017.json").read_text()) for p in (a, b))
    assert val_a == val_b

    ade_a, ade_b = make_ade20k(tmp_path / "a", 0, 2, 1, 64), make_ade20k(tmp_path / "b", 0, 4, 1, 64)
    assert tree_digest(ade_a / "images/validation") == tree_digest(ade_b / "images/validation")
    rel = "annotations/training/ADE_train_00000002.png"
    assert (ade_a / rel).read_bytes() == (ade_b / rel).read_bytes()


# --------------------------------------------------------------------------- formats


def test_manifest(synthetic_root: Path) -> None:
    manifest = json.loads((synthetic_root / "synthetic.json").read_text())
    assert manifest["seed"] == 0 and manifest["scale"] == "smoke"
    assert manifest["classification"]["classes"] == list(SHAPES)
    assert manifest["ade20k"]["classes"] == list(ADE_CLASSES)
    per_class = SMOKE["classification"]["train_per_class"]
    assert manifest["classification"]["counts"]["train"] == per_class * len(SHAPES)
    assert manifest["coco"]["counts"] == {"train2017": SMOKE["coco"]["num_train"], "val2017": SMOKE["coco"]["num_val"]}
    assert not [p for p in synthetic_root.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_imagefolder_layout(synthetic_root: Path) -> None:
    from torchvision.datasets import ImageFolder

    cfg = SMOKE["classification"]
    for split, per_class in (("train", cfg["train_per_class"]), ("val", cfg["val_per_class"])):
        data = ImageFolder(str(synthetic_root / "classification" / split))
        assert data.classes == list(SHAPES)  # sorted order is SHAPES order
        assert len(data) == per_class * len(SHAPES)
        assert np.bincount(data.targets).tolist() == [per_class] * len(SHAPES)
        image, target = data[len(data) - 1]
        assert image.size == (cfg["size"], cfg["size"]) and image.mode == "RGB"
        assert target == len(SHAPES) - 1


def polygon_area(flat: list[float]) -> float:
    x, y = np.asarray(flat[0::2]), np.asarray(flat[1::2])
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # its numpy 2 copy= warning
@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_coco_instances(synthetic_root: Path, split: str) -> None:
    from pycocotools.coco import COCO

    root = synthetic_root / "coco"
    coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == list(enumerate(SHAPES, start=1))
    expected = SMOKE["coco"]["num_train" if split == "train2017" else "num_val"]
    assert len(coco.getImgIds()) == expected
    seen_categories = set()
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        with Image.open(root / split / info["file_name"]) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size == (info["width"], info["height"])
            pixels = np.asarray(image, np.float32)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 2 <= len(anns) <= 4
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        background = ~np.any(masks, axis=0)
        assert not np.any(np.sum(masks, axis=0) > 1), "COCO objects must not overlap"
        for ann, mask in zip(anns, masks):
            seen_categories.add(ann["category_id"])
            assert ann["iscrowd"] == 0
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and w > 1 and h > 1
            assert x + w <= info["width"] and y + h <= info["height"]
            (polygon,) = ann["segmentation"]
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
            assert polygon_area(polygon) > 0
            assert polygon_area(polygon) == pytest.approx(ann["area"], rel=1e-3)
            xs, ys = polygon[0::2], polygon[1::2]
            extent = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            assert np.allclose(ann["bbox"], extent, atol=1.0)
            # The rasterised polygon covers the area it claims, inside its box ...
            assert mask.sum() == pytest.approx(ann["area"], rel=0.2)
            rows, cols = np.nonzero(mask)
            assert cols.min() >= x - 1 and cols.max() <= x + w + 1 and rows.min() >= y - 1 and rows.max() <= y + h + 1
            # ... and the image shows something there that differs from the background.
            assert np.abs(pixels[mask].mean(0) - pixels[background].mean(0)).sum() > 20
    if split == "train2017":
        assert seen_categories == set(range(1, len(SHAPES) + 1))


@pytest.mark.parametrize(("split", "prefix"), [("training", "ADE_train_"), ("validation", "ADE_val_")])
def test_ade20k_labels(synthetic_root: Path, split: str, prefix: str) -> None:
    root = synthetic_root / "ade20k"
    images = sorted((root / "images" / split).iterdir())
    labels = sorted((root / "annotations" / split).iterdir())
    assert [p.stem for p in images] == [p.stem for p in labels]
    assert all(p.suffix == ".jpg" and p.stem.startswith(prefix) and len(p.stem) == len(prefix) + 8 for p in images)
    assert len(images) == SMOKE["ade20k"]["num_train" if split == "training" else "num_val"]
    seen: set[int] = set()
    for image_path, label_path in zip(images, labels):
        with Image.open(image_path) as image, Image.open(label_path) as label:
            assert image.mode == "RGB" and label.mode == "L" and label.format == "PNG"
            assert image.size == label.size
            values = np.asarray(label)
        assert values.dtype == np.uint8 and values.max() <= len(ADE_CLASSES)
        assert values.min() == 0, "shapes are outlined with unlabelled (0) pixels"
        assert (values == 0).mean() < 0.15 and (values == 1).mean() > 0.2
        assert (values >= 2).any()
        seen |= set(np.unique(values).tolist())
    assert seen == set(range(len(ADE_CLASSES) + 1))


# --------------------------------------------------------------------------- learnable


def load_pixels(root: Path, split: str, grid: int) -> tuple[np.ndarray, np.ndarray]:
    features, targets = [], []
    for cls, shape in enumerate(SHAPES):
        for path in sorted((root / split / shape).glob("*.png")):
            with Image.open(path) as image:
                small = image.convert("RGB").reduce(image.width // grid)
            features.append(np.asarray(small, np.float64).ravel() / 255.0)
            targets.append(cls)
    return np.stack(features), np.asarray(targets)


def ridge_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """Ridge regression onto one-hot targets (a linear classifier in closed form)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a = np.hstack([(x_train - mean) / std, np.ones((len(x_train), 1))])
    b = np.hstack([(x_val - mean) / std, np.ones((len(x_val), 1))])
    weights = np.linalg.solve(a.T @ a + 100.0 * np.eye(a.shape[1]), a.T @ np.eye(len(SHAPES))[y_train])
    return float(((b @ weights).argmax(1) == y_val).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classes_are_learnable(tmp_path: Path, seed: int) -> None:
    root = make_classification(tmp_path, seed, train_per_class=100, val_per_class=40, size=64)
    x_train, y_train = load_pixels(root, "train", 8)
    x_val, y_val = load_pixels(root, "val", 8)
    accuracy = ridge_accuracy(x_train, y_train, x_val, y_val)
    # Measured 0.40 to 0.55 over seeds 0-9 (0.47, 0.49, 0.55 for these three); chance is 1/6.
    assert accuracy > 1 / len(SHAPES) + 0.15, accuracy
    # Control: the same classifier on shuffled training labels stays near chance.
    shuffled = np.random.default_rng(seed).permutation(y_train)
    assert ridge_accuracy(x_train, shuffled, x_val, y_val) < accuracy - 0.1


# --------------------------------------------------------------------------- atomic writes


def test_failed_write_leaves_previous_set_whole(tmp_path: Path, fail_on_call, tree_digest) -> None:
    coco = make_coco(tmp_path, 0, 2, 1, 64)
    before = tree_digest(coco)
    fail_on_call(synthetic, "save_jpeg", 2)
    with pytest.raises(OSError, match="disk full"):
        make_coco(tmp_path, 1, 2, 1, 64)
    assert tree_digest(coco) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]


def test_failed_make_all_leaves_no_manifest(tmp_path: Path, tiny_scale: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_all(tmp_path, 0, tiny_scale)

    def broken(*args: object, **kwargs: object) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(synthetic, "make_ade20k", broken)
    with pytest.raises(OSError):
        make_all(tmp_path, 1, tiny_scale)
    assert not (tmp_path / "synthetic.json").exists(), "a half-replaced set must not look whole"


# --------------------------------------------------------------------------- CLI


def test_cli_refuses_foreign_directory(tmp_path: Path, tiny_scale: str, capsys: pytest.CaptureFixture, snapshot) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "keep.json").write_text("{}")
    before = snapshot(tmp_path)
    code = main(["--out", str(tmp_path), "--seed", "0", "--scale", tiny_scale])
    err = capsys.readouterr().err
    assert code == 2  # bad input: the code every command of the suite uses
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "notes.txt"]


def test_cli_overwrite_keeps_other_files(tmp_path: Path, tiny_scale: str, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--out", str(tmp_path), "--seed", "3", "--scale", tiny_scale, "--overwrite"]) == 0
    out = capsys.readouterr().out
    for name in ("classification", "coco", "ade20k"):
        assert any(line.startswith(f"wrote {name}:") for line in out.splitlines()), out
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "synthetic.json").read_text())["seed"] == 3
    # Now the directory is the tool's own: another seed replaces it without --overwrite.
    assert main(["--out", str(tmp_path), "--seed", "4", "--scale", tiny_scale]) == 0
    assert json.loads((tmp_path / "synthetic.json").read_text())["seed"] == 4
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_same_seed_and_scale_is_a_no_op(synthetic_root: Path, capsys: pytest.CaptureFixture, snapshot) -> None:
    before = snapshot(synthetic_root)
    assert main(["--out", str(synthetic_root), "--seed", "0", "--scale", "smoke"]) == 0
    assert "already" in capsys.readouterr().out
    assert snapshot(synthetic_root) == before


def run_cli(argv: list[str]) -> int:
    """``main(argv)``'s exit code, also when argparse exits by itself."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize("argv", [["--scale", "huge"], ["--seed", "-1"], ["--seed", "x"], ["--bogus"]])
def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(["--out", str(out), *argv]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error" in err, err
    assert not out.exists()


def test_cli_needs_out(capsys: pytest.CaptureFixture) -> None:
    assert run_cli([]) != 0
    assert "--out" in capsys.readouterr().err


def test_cli_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["--out", str(target)]) != 0
    assert "not a directory" in capsys.readouterr().err
    assert target.read_text() == "x"
