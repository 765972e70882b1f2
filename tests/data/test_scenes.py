"""Fashion-MNIST scenes: exact visible masks, COCO and ADE20k files that agree, no leakage from the
held-out splits, determinism, a careful CLI, and the suite's own readers on the output.

The fake Fashion-MNIST gives every item a flat blob whose grey names its split (:data:`TONE`), so
a scene's pixels show which split its items came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.data import fashion_mnist as fm
from benchmark.data import scenes
from benchmark.data.fashion_mnist import CLASSES, read_part, split_train, write_idx
from benchmark.data.scenes import Options, compose, main, make_scenes
from benchmark.data.synthetic import COCO_VAL_ID_OFFSET

TONE = {"train": 100, "val carve-out": 180, "test": 250}  # the blob's grey in each split's items
EXACT = Options(min_visible=1)  # every item with a visible pixel is annotated: COCO and ADE agree exactly
COUNTS = {"train": 6, "val": 3}


def write_fake_fashion(folder: Path, train: int = 60, test: int = 20) -> Path:
    """A tiny Fashion-MNIST: dark noise (below the silhouette threshold) and a flat blob of the
    split's :data:`TONE` at a random place; every image differs."""
    rng = np.random.default_rng(0)
    labels = {"train": np.arange(train) % 10, "t10k": np.arange(test) % 10}
    tones = {"train": np.full(train, TONE["train"]), "t10k": np.full(test, TONE["test"])}
    tones["train"][split_train(labels["train"])[1]] = TONE["val carve-out"]
    folder.mkdir(parents=True, exist_ok=True)
    for part, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 20, size=(count, 28, 28))
        for image, tone in zip(images, tones[part]):
            h, w = rng.integers(10, 22, size=2)
            top, left = rng.integers(0, 28 - h + 1), rng.integers(0, 28 - w + 1)
            image[top:top + h, left:left + w] = tone
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", images.astype(np.uint8))
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels[part].astype(np.uint8))
    return folder


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), np.float32)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_fashion(tmp_path_factory.mktemp("fashion-mnist"))


@pytest.fixture(scope="module")
def scenes_root(fake_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scenes") / "out"
    make_scenes(out, 0, fake_root, COUNTS["train"], COUNTS["val"], EXACT)
    return out


# --------------------------------------------------------------------------- composition


def blob(tone: int = 200) -> np.ndarray:
    """A 28x28 item whose silhouette is rows and columns 4..23."""
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 4:24] = tone
    return image


def square(top: int, left: int, side: int = 20) -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_masks_are_the_visible_silhouettes() -> None:
    background = np.full((64, 64), 10, np.uint8)
    scene = compose([(blob(120), 3), (blob(200), 7)], [(0, 0, 28), (14, 14, 28)], background)
    first, second = square(4, 4), square(18, 18)
    assert [cls for cls, _ in scene.instances] == [3, 7]
    (_, mask_first), (_, mask_second) = scene.instances
    assert np.array_equal(mask_second, second)
    assert np.array_equal(mask_first, first & ~second)
    assert first.sum() - mask_first.sum() == (first & second).sum() == 36  # exactly the overlap is lost
    assert (scene.canvas[mask_first] == 120).all() and (scene.canvas[second] == 200).all()  # opaque, later on top
    assert (scene.canvas[~(first | second)] == 10).all()
    assert np.array_equal(scene.label, np.where(second, 8, np.where(first, 4, 0)))
    # a resized item: at 56 px its 20 px blob becomes about 40 px
    (_, big), = compose([(blob(), 0)], [(4, 4, 56)], background).instances
    assert 38 ** 2 <= big.sum() <= 42 ** 2


def test_an_item_with_few_visible_pixels_is_drawn_but_not_annotated() -> None:
    background = np.zeros((64, 64), np.uint8)
    items, placements = [(blob(), 1), (blob(), 2)], [(30, 30, 28), (30, 31, 28)]  # one row apart
    top_row = square(34, 34) & ~square(35, 34)  # all that stays of the first: 20 pixels
    scene = compose(items, placements, background)  # min_visible 30
    assert [cls for cls, _ in scene.instances] == [2]
    assert np.array_equal(scene.label == 2, top_row) and (scene.canvas[top_row] == 200).all()
    kept = compose(items, placements, background, min_visible=20)
    assert [cls for cls, _ in kept.instances] == [1, 2] and np.array_equal(kept.instances[0][1], top_row)


def test_an_item_outside_the_canvas_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit a 64 px canvas"):
        compose([(blob(), 0)], [(40, 0, 28)], np.zeros((64, 64), np.uint8))


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_instances_agree_with_ade_labels(scenes_root: Path, split: str) -> None:
    from pycocotools.coco import COCO

    coco = COCO(str(scenes_root / "coco" / "annotations" / f"instances_{split}2017.json"))
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == list(enumerate(CLASSES, start=1))
    assert len(coco.getImgIds()) == COUNTS[split]
    manifest = json.loads((scenes_root / "scenes.json").read_text())
    ade, stem = ("training", "ADE_train") if split == "train" else ("validation", "ADE_val")
    for index in range(COUNTS[split]):
        image_id = index + 1 + (COCO_VAL_ID_OFFSET if split == "val" else 0)
        info = coco.loadImgs(image_id)[0]
        jpeg = scenes_root / "coco" / f"{split}2017" / info["file_name"]
        assert info["file_name"] == f"{image_id:012d}.jpg" and (info["width"], info["height"]) == (64, 64)
        with Image.open(jpeg) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))
        ade_image = scenes_root / "ade20k" / "images" / ade / f"{stem}_{index + 1:08d}.jpg"
        assert ade_image.read_bytes() == jpeg.read_bytes()
        with Image.open(scenes_root / "ade20k" / "annotations" / ade / f"{stem}_{index + 1:08d}.png") as png:
            assert (png.format, png.mode) == ("PNG", "L")
            label = np.asarray(png)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(anns) <= len(manifest["items"][split][index])  # the last item drawn is always whole
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        assert np.sum(masks, axis=0).max() == 1, "visible masks do not overlap"
        for ann, mask in zip(anns, masks):
            rows, cols = np.nonzero(mask)
            x, y = cols.min(), rows.min()
            assert ann["bbox"] == [x, y, cols.max() - x + 1, rows.max() - y + 1]
            assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
        for cls in range(len(CLASSES)):
            union = np.any([m for a, m in zip(anns, masks) if a["category_id"] == cls + 1] + [label < 0], axis=0)
            assert np.array_equal(union, label == cls + 1), (index, cls)
        # the picture shows the items where the labels say
        picture = pixels(jpeg)
        assert picture[label > 0].mean() > picture[label == 0].mean() + 40
        if split == "train":
            png = scenes_root / "unlabelled" / "train" / "scenes" / f"{index:05d}.png"
            assert np.abs(pixels(png) - picture).mean() < 3  # the same scene, losslessly


def test_no_held_out_item_is_in_a_train_scene(scenes_root: Path, fake_root: Path) -> None:
    manifest = json.loads((scenes_root / "scenes.json").read_text())
    train_rows, val_rows = split_train(read_part(fake_root, "train")[1])
    train_items = {i for scene in manifest["items"]["train"] for i in scene}
    assert train_items <= set(train_rows.tolist()) and not train_items & set(val_rows.tolist())
    test_count = len(read_part(fake_root, "test")[1])
    assert all(0 <= i < test_count for scene in manifest["items"]["val"] for i in scene)
    assert all(2 <= len(scene) <= 5 for split in ("train", "val") for scene in manifest["items"][split])
    # The pixels agree: train scenes hold only train-split greys, val scenes test-split ones.
    for png in sorted((scenes_root / "unlabelled" / "train" / "scenes").glob("*.png")):
        assert TONE["train"] - 2 <= pixels(png).max() <= TONE["train"] + 1, png
    for jpeg in sorted((scenes_root / "coco" / "val2017").glob("*.jpg")):
        assert pixels(jpeg).max() > TONE["val carve-out"] + 30, jpeg


def test_manifest(scenes_root: Path) -> None:
    manifest = json.loads((scenes_root / "scenes.json").read_text())
    assert manifest["generator"] == "benchmark.data.scenes" and manifest["seed"] == 0
    assert manifest["counts"] == COUNTS and manifest["classes"] == list(CLASSES)
    assert manifest["options"]["size"] == 64 and manifest["options"]["min_visible"] == 1
    assert [len(manifest["items"][s]) for s in ("train", "val")] == [COUNTS["train"], COUNTS["val"]]
    assert sorted(p.name for p in scenes_root.iterdir()) == ["ade20k", "coco", "scenes.json", "unlabelled"]


def test_the_suites_readers_load_the_scenes(scenes_root: Path) -> None:
    from benchmark.data.classification import load_classification
    from benchmark.downstream.mm.datasets import check_ade_labels, coco_classes

    assert coco_classes(scenes_root / "coco") == CLASSES
    check_ade_labels(scenes_root / "ade20k", len(CLASSES))
    folder = load_classification("imagefolder", scenes_root / "unlabelled", "train")
    assert folder.classes == ["scenes"] and len(folder) == COUNTS["train"]
    image, target = folder[0]
    assert image.mode == "RGB" and image.size == (64, 64) and target == 0


def test_segmentation_takes_the_scenes_classes_and_the_driver_writes_them_as_a_data_run(
        scenes_root: Path, fake_root: Path, tmp_path: Path) -> None:
    from benchmark.downstream.mm.datasets import ade_classes
    from benchmark.stages.catalogue import run_kind

    assert ade_classes(scenes_root / "ade20k") == CLASSES  # not real ADE20k's 150
    kind = run_kind("data")
    config = {"generator": "scenes", "seed": 0, "data_root": str(fake_root), "train_scenes": COUNTS["train"],
              "val_scenes": COUNTS["val"]}
    kind.run(config, tmp_path)
    assert (tmp_path / kind.done_file(config)).is_file()
    made = make_scenes(tmp_path / "direct", 0, fake_root, COUNTS["train"], COUNTS["val"])
    assert json.loads((tmp_path / "scenes.json").read_text())["items"] == made["items"]


@pytest.mark.skipif(not fm.holds_files(fm.DEBIAN_DIR), reason="Debian's dataset-fashion-mnist is not installed")
def test_scenes_of_the_real_fashion_mnist(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    manifest = make_scenes(tmp_path, 0, fm.DEBIAN_DIR, train_scenes=4, val_scenes=2)
    train_rows, val_rows = split_train(read_part(fm.DEBIAN_DIR, "train")[1])
    train_items = {i for scene in manifest["items"]["train"] for i in scene}
    assert train_items <= set(train_rows.tolist()) and not train_items & set(val_rows.tolist())
    coco = COCO(str(tmp_path / "coco" / "annotations" / "instances_train2017.json"))
    assert all(coco.getAnnIds(imgIds=i) for i in coco.getImgIds())
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert ann["area"] >= Options.min_visible and coco.annToMask(ann).sum() == ann["area"]


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_and_counts_leave_other_scenes_alone(scenes_root: Path, fake_root: Path,
                                                                   tmp_path: Path, tree_digest) -> None:
    make_scenes(tmp_path / "again", 0, fake_root, COUNTS["train"], COUNTS["val"], EXACT)
    assert tree_digest(tmp_path / "again") == tree_digest(scenes_root)
    make_scenes(tmp_path / "other", 1, fake_root, COUNTS["train"], COUNTS["val"], EXACT)
    first = "coco/train2017/000000000001.jpg"
    assert (tmp_path / "other" / first).read_bytes() != (scenes_root / first).read_bytes()
    make_scenes(tmp_path / "more", 0, fake_root, COUNTS["train"] + 2, COUNTS["val"], EXACT)
    for index in range(COUNTS["train"]):
        rel = f"ade20k/annotations/training/ADE_train_{index + 1:08d}.png"
        assert (tmp_path / "more" / rel).read_bytes() == (scenes_root / rel).read_bytes()
    assert tree_digest(tmp_path / "more" / "coco" / "val2017") == tree_digest(scenes_root / "coco" / "val2017")


# --------------------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    """``main(argv)``'s exit code, also when argparse exits by itself."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize("argv, message", [
    (["--min-items", "4", "--max-items", "2"], "min_items (4) must be at least 1 and at most max_items (2)"),
    (["--min-items", "0"], "min_items (0)"),
    (["--size", "32"], "size (32) is smaller than the largest item (40 px)"),
    (["--seed", "-1"], "--seed must be a non-negative integer"),
    (["--val-scenes", "-3"], "--val-scenes must be a non-negative integer"),
    (["--size", "x"], "invalid int value"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_bad_options_are_one_line_and_write_nothing(tmp_path: Path, fake_root: Path, capsys: pytest.CaptureFixture,
                                                        argv: list[str], message: str) -> None:
    out = tmp_path / "out"
    assert run_cli(["--out", str(out), "--seed", "0", "--data-root", str(fake_root), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error" in err and message in err, err
    assert not out.exists()


def test_cli_missing_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian-package")
    out = tmp_path / "out"
    assert main(["--out", str(out), "--seed", "0", "--data-root", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "apt-get install dataset-fashion-mnist" in err
    assert not out.exists()


def test_cli_refuses_foreign_or_differently_made_directories(tmp_path: Path, fake_root: Path,
                                                             capsys: pytest.CaptureFixture, snapshot) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    base = ["--out", str(out), "--data-root", str(fake_root), "--train-scenes", "2", "--val-scenes", "1"]
    assert main([*base, "--seed", "0"]) == 2
    assert "--overwrite" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main([*base, "--seed", "0", "--overwrite"]) == 0
    assert "wrote 2 train and 1 val scenes" in capsys.readouterr().out
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "scenes.json").read_text())["seed"] == 0
    before = snapshot(out)
    assert main([*base, "--seed", "0"]) == 0 and "already" in capsys.readouterr().out
    assert main([*base, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "different seed" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before
    assert main([*base, "--seed", "1", "--overwrite"]) == 0
    assert json.loads((out / "scenes.json").read_text())["seed"] == 1 and (out / "notes.txt").read_text() == "mine"


def test_a_failed_write_leaves_the_previous_set_whole(tmp_path: Path, fake_root: Path, fail_on_call,
                                                      capsys: pytest.CaptureFixture, snapshot) -> None:
    out = tmp_path / "out"
    make_scenes(out, 0, fake_root, 2, 1)
    before = snapshot(out)
    calls = fail_on_call(scenes, "save_png", 3)
    assert main(["--out", str(out), "--seed", "1", "--data-root", str(fake_root), "--train-scenes", "2",
                 "--val-scenes", "1", "--overwrite"]) == 2
    assert "could not write" in capsys.readouterr().err
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staged parts left behind"
    calls["n"] = 0
    assert main(["--out", str(tmp_path / "new"), "--seed", "1", "--data-root", str(fake_root), "--train-scenes", "2"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "a new directory is not left behind"
