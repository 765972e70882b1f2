"""Bad input: one ``error:`` line saying what is wrong and where, exit code 2, and
nothing written before is overwritten or lost. Corrupt images are skipped and counted by default,
fatal with ``--corrupt-images fail``. Checkpoints from outside never run code when loaded."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark import REPO
from benchmark.stages.pretrain import PretrainConfig

SEG_CONFIG = REPO / "configs_mm" / "upernet_vit_smoke.py"
DET_CONFIG = REPO / "configs_mm" / "mask_rcnn_vit_fpn_smoke.py"


@pytest.fixture(autouse=True)
def _skip_corrupt_images(monkeypatch) -> None:
    """The CLIs set the corrupt-image policy in the environment; each test starts from the default."""
    monkeypatch.setenv("SSLBENCH_CORRUPT_IMAGES", "skip")


def _error(capsys) -> str:
    """The one error line a CLI printed (nothing on stderr before it but progress lines)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    line = err.splitlines()[-1]
    assert line.startswith("error: "), err
    return line


def _earlier_results(folder: Path) -> dict[Path, bytes]:
    """Files an earlier run left in ``folder`` (what a failing run must leave alone)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 3}, folder / "earlier.pth")
    (folder / "result.json").write_text('{"metrics": {"top1": 42.0}}\n')
    (folder / "config.json").write_text('{"earlier": true}\n')
    return {p: p.read_bytes() for p in folder.iterdir()}


def _intact(before: dict[Path, bytes]) -> bool:
    return all(p.read_bytes() == data for p, data in before.items())


def _pretrain_cfg(tmp_path: Path, data_root: Path | str, **overrides) -> Path:
    values = asdict(PretrainConfig(data_root=str(data_root), method="splitmask", method_args={"vocab_size": 16},
                                   arch="vit-smoke", img_size=32, steps=2, batch_size=8, warmup_steps=1,
                                   checkpoint_every=1, log_every=1,
                                   num_workers=0))  # images read in this process: capsys sees its [data] lines
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**values, **overrides}))
    return path


def _pretrain(cfg: Path, out: Path, *flags: str) -> int:
    from benchmark.stages.pretrain import main

    return main(["--config", str(cfg), "--out", str(out), *flags])


# ---------------------------------------------------------------------------- data roots


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_pretraining_data_root_missing_or_empty(case: str, tmp_path, capsys) -> None:
    root = tmp_path / "data"
    if case == "empty":
        root.mkdir()
    out = tmp_path / "run"
    before = _earlier_results(out)
    assert _pretrain(_pretrain_cfg(tmp_path, root), out) == 2
    what = "no such directory" if case == "missing" else "no images found"
    assert _error(capsys) == f"error: {root}: {what} (expected any folder of .jpg/.png images)"
    assert _intact(before) and sorted(out.iterdir()) == sorted(before)


def test_finetuning_data_root_of_the_wrong_layout_names_the_expected_one(synthetic_root, tmp_path, capsys) -> None:
    from benchmark.stages.finetune import main

    root = synthetic_root / "classification" / "train"  # class folders, not train/ and val/
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"data_root": str(root), "arch": "vit-smoke", "img_size": 32, "epochs": 1}))
    before = _earlier_results(tmp_path / "run")
    assert main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert _error(capsys) == (f"error: {root / 'train'}: no such directory "
                              "(expected ROOT/{train,val[,test]}/<class>/<image> (ImageFolder))")
    assert _intact(before)


def test_detection_data_root_of_the_wrong_layout_names_the_expected_one(synthetic_root, tmp_path, capsys) -> None:
    from benchmark.stages.dense import detect_main as main

    root = synthetic_root / "ade20k"  # an ADE20k root given as COCO
    work = tmp_path / "work"
    before = _earlier_results(work)
    assert main(["--ckpt", "none", "--config", str(DET_CONFIG), "--data-root", str(root), "--work-dir", str(work)]) == 2
    assert _error(capsys) == (f"error: {root}: not a COCO data root (missing annotations/instances_train2017.json; "
                              "expected ROOT/{train2017,val2017}/<image>.jpg and "
                              "ROOT/annotations/instances_{train,val}2017.json)")
    assert _intact(before)


# ---------------------------------------------------------------------------- corrupt images


@pytest.fixture
def images_with_two_corrupt(synthetic_root, tmp_path) -> tuple[Path, list[Path]]:
    """12 good images and 2 broken ones: a truncated PNG and a text file named .jpg."""
    root = tmp_path / "images"
    root.mkdir()
    for src in sorted((synthetic_root / "classification" / "train" / "circle").glob("*.png"))[:12]:
        shutil.copy(src, root / src.name)
    truncated, garbage = root / "00005_cut.png", root / "00009_junk.jpg"
    truncated.write_bytes((root / "00005.png").read_bytes()[:150])
    garbage.write_text("not an image")
    return root, [truncated, garbage]


def test_a_corrupt_image_is_replaced_by_the_next_one_and_counted(images_with_two_corrupt, tmp_path, capsys) -> None:
    from benchmark.data.folders import ImageFiles, SeededTransform, skipped_images

    root, broken = images_with_two_corrupt
    files = ImageFiles(root)
    log = tmp_path / "skipped.txt"
    data = SeededTransform(files, lambda image: image.tobytes(), seed=0, skip_log=log)
    index = files.files.index(broken[0])
    assert data[index] == data[index + 1]  # the next readable image stands in: deterministic
    for i in range(len(data)):
        data[i]
    assert skipped_images(log) == sorted(str(p) for p in broken)
    err = capsys.readouterr().err
    assert f"[data] skipped {broken[0]}: corrupt or truncated image (" in err and err.count("[data] skipped") == 2


def test_corrupt_images_are_skipped_and_counted_by_default(images_with_two_corrupt, tmp_path, capsys) -> None:
    root, broken = images_with_two_corrupt
    out = tmp_path / "run"
    assert _pretrain(_pretrain_cfg(tmp_path, root), out) == 0
    err = capsys.readouterr().err
    for path in broken:
        assert f"[data] skipped {path}: corrupt or truncated image" in err
    assert f"[pretrain] 2 corrupt images skipped, listed in {out / 'skipped_images.txt'}" in err
    assert (out / "encoder.safetensors").is_file()


def test_a_corrupt_image_is_fatal_with_the_flag(images_with_two_corrupt, tmp_path, capsys) -> None:
    root, broken = images_with_two_corrupt
    out = tmp_path / "run"
    # (config.json is the run's own: it writes it once it starts)
    before = {p: data for p, data in _earlier_results(out).items() if p.name != "config.json"}
    # one data-loader worker: the error comes back from it, still as one line
    assert _pretrain(_pretrain_cfg(tmp_path, root, num_workers=1), out, "--corrupt-images", "fail") == 2
    line = _error(capsys)
    assert line.startswith(f"error: {broken[0]}: corrupt or truncated image (")
    assert line.endswith("; stopping (--corrupt-images fail); without the flag it is skipped")
    assert not (out / "encoder.safetensors").exists() and _intact(before)


# ---------------------------------------------------------------------------- COCO and ADE20k


def _broken_coco(synthetic_root: Path, tmp_path: Path, breakage) -> Path:
    coco = tmp_path / "coco"
    shutil.copytree(synthetic_root / "coco", coco)
    ann = coco / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    breakage(data)
    ann.write_text(json.dumps(data))
    return coco


@pytest.mark.parametrize("case", ["missing field", "box outside"])
def test_coco_annotations_with_missing_fields_or_boxes_outside_the_image(case, synthetic_root, tmp_path, capsys) -> None:
    from benchmark.stages.dense import detect_main as main

    def breakage(data: dict) -> None:
        if case == "missing field":
            del data["annotations"][3]["bbox"]
        else:
            image = next(i for i in data["images"] if i["id"] == data["annotations"][5]["image_id"])
            data["annotations"][5]["bbox"] = [image["width"] - 10.0, 4.0, 30.0, 20.0]

    coco = _broken_coco(synthetic_root, tmp_path, breakage)
    work = tmp_path / "work"
    before = _earlier_results(work)
    assert main(["--ckpt", "none", "--config", str(DET_CONFIG), "--data-root", str(coco), "--work-dir", str(work)]) == 2
    line = _error(capsys)
    ann = coco / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    if case == "missing field":
        assert line.startswith(f"error: {ann}: annotations[3] has no 'bbox' (expected COCO instances: ")
    else:
        a = data["annotations"][5]
        image = next(i for i in data["images"] if i["id"] == a["image_id"])
        assert line == (f"error: {ann}: annotations[5] (id {a['id']}): bbox {a['bbox']} lies outside its image "
                        f"{image['file_name']} ({image['width']}x{image['height']})")
    assert _intact(before)


def test_ade20k_labels_out_of_range(synthetic_root, tmp_path, capsys) -> None:
    from benchmark.stages.dense import segment_main as main

    ade = tmp_path / "ade20k"
    shutil.copytree(synthetic_root / "ade20k", ade)
    shutil.copy(synthetic_root / "synthetic.json", tmp_path / "synthetic.json")  # its 7 class names
    label = sorted((ade / "annotations" / "training").glob("*.png"))[2]
    values = np.asarray(Image.open(label)).copy()
    values[0, :5] = 200
    Image.fromarray(values).save(label)
    work = tmp_path / "work"
    before = _earlier_results(work)
    assert main(["--ckpt", "none", "--config", str(SEG_CONFIG), "--data-root", str(ade), "--work-dir", str(work)]) == 2
    assert _error(capsys) == (f"error: {label}: label values [200] outside 0..7 "
                              "(0 = other, 1..7 = the 7 classes, 255 = ignore)")
    assert _intact(before)


# ---------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def smoke_export(tmp_path_factory) -> Path:
    from benchmark.models.checkpoints.export import save_encoder
    from benchmark.models.vit import create_vit, model_spec

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("export") / "encoder.safetensors"
    return save_encoder(create_vit("vit-smoke", 32), model_spec("vit-smoke", 32), path)


@pytest.mark.parametrize("case", ["unknown format", "another model size"])
def test_finetuning_from_a_checkpoint_of_unknown_format_or_another_size(case, synthetic_root, smoke_export, tmp_path,
                                                                         capsys) -> None:
    from benchmark.stages.finetune import main

    ckpt = smoke_export
    if case == "unknown format":
        ckpt = tmp_path / "weights.bin"
        ckpt.write_bytes(b"\x00" * 64)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"data_root": str(synthetic_root / "classification"), "checkpoint": str(ckpt),
                               "arch": "vit-mini", "img_size": 32, "epochs": 1}))
    out = tmp_path / "run"
    before = _earlier_results(out)
    assert main(["--config", str(cfg), "--out", str(out)]) == 2
    if case == "unknown format":
        assert _error(capsys) == (f"error: {ckpt}: unknown checkpoint format (expected an encoder export .safetensors "
                                  "or an mm backbone checkpoint .pth)")
    else:
        assert _error(capsys) == f"error: {ckpt}: holds a vit-smoke encoder, the config asks for vit-mini"
    assert _intact(before)


def test_detection_from_a_checkpoint_of_another_model_size(synthetic_root, smoke_export, tmp_path, capsys) -> None:
    from benchmark.stages.dense import segment_main as main

    work = tmp_path / "work"
    before = _earlier_results(work)
    assert main(["--ckpt", str(smoke_export), "--config", str(SEG_CONFIG), "--data-root", str(synthetic_root / "ade20k"),
                 "--work-dir", str(work), "--cfg-options", "model.backbone.arch=vit-mini"]) == 2
    assert _error(capsys) == (f"error: {smoke_export}: checkpoint arch 'vit-smoke' does not match "
                              "model.backbone.arch='vit-mini'")
    assert _intact(before)


class _Payload:
    """Unpickling it would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("case", ["code", "another model size"])
def test_resuming_from_a_training_checkpoint_that_is_not_this_run_s(case, synthetic_root, tmp_path, capsys) -> None:
    """A checkpoint that would run code is refused unread (``weights_only``); one of another
    model size (another config) is refused by name. Either way it stays where it is."""
    from benchmark.training.checkpoint import TRAINING_KEYS

    data = synthetic_root / "classification" / "train"
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "ran"
    if case == "code":
        torch.save({key: _Payload(marker) for key in TRAINING_KEYS}, out / "checkpoint.pth")
    else:
        assert _pretrain(_pretrain_cfg(tmp_path, data, steps=1), out) == 0
        (out / "encoder.safetensors").unlink()  # as if killed before the export
    before = {p: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert _pretrain(_pretrain_cfg(tmp_path, data, steps=1, arch="vit-mini"), out) == 2
    line = _error(capsys)
    if case == "code":
        assert line.startswith(f"error: {out / 'checkpoint.pth'}: not a readable training checkpoint (")
        assert line.endswith("move it away, or use --resume never to start over") and "posix.system" in line
        assert not marker.exists()
    else:
        assert line == (f"error: {out / 'checkpoint.pth'} was written with another config (differs in ['arch']); "
                        "use another --out, or --resume never to start over")
    assert _intact(before)


# ---------------------------------------------------------------------------- configs and options


@pytest.mark.parametrize("change, message", [
    ({"stepz": 3}, "CFG: PretrainConfig: unknown key 'stepz'; did you mean 'steps'?"),
    ({"steps": "3"}, "CFG: PretrainConfig: steps='3' should be of type int"),
    ({"method_args": {"vocab_sise": 16}},
     "CFG: PretrainConfig.method_args of splitmask: unknown key 'vocab_sise'; did you mean 'vocab_size'?"),
    ({"method": "splitmsak"}, "CFG: PretrainConfig.method: unknown method 'splitmsak'; expected one of"),
])
def test_a_config_with_an_unknown_key_or_a_wrong_type(change, message, synthetic_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    before = _earlier_results(out)
    cfg = _pretrain_cfg(tmp_path, synthetic_root / "classification" / "train", **change)
    assert _pretrain(cfg, out) == 2
    # CFG: the config file, which a refusal of its keys and values names (the method's own checks too)
    assert _error(capsys).startswith(f"error: {message.replace('CFG', str(cfg))}")
    assert _intact(before)


def test_a_config_without_a_required_key(tmp_path, capsys) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"steps": 3}))
    assert _pretrain(cfg, tmp_path / "run") == 2
    assert _error(capsys) == f"error: {cfg}: PretrainConfig: missing required key 'data_root'"


def test_a_mistyped_mm_config_option_gets_the_nearest_key(synthetic_root, tmp_path, capsys) -> None:
    from benchmark.stages.dense import segment_main as main

    work = tmp_path / "work"
    before = _earlier_results(work)
    assert main(["--ckpt", "none", "--config", str(SEG_CONFIG), "--data-root", str(synthetic_root / "ade20k"),
                 "--work-dir", str(work), "--cfg-options", "train_cfg.max_iter=3"]) == 2
    assert _error(capsys) == ("error: --cfg-options train_cfg.max_iter: the config has no 'train_cfg.max_iter'; "
                              "did you mean 'train_cfg.max_iters'?")
    assert _intact(before)


@pytest.mark.parametrize("args, message", [
    (["--slurm-partition", "gpu"], "error: --slurm-partition needs --launcher slurm (got --launcher inprocess)"),
    (["--launcher", "inprocess", "--nproc-per-node", "8"],
     "error: --nproc-per-node 8 needs --launcher torchrun or slurm (--launcher inprocess runs one process)"),
])
def test_conflicting_driver_options(args, message, tmp_path, capsys) -> None:
    from benchmark.driver.run import main

    runs = tmp_path / "runs"
    before = _earlier_results(runs)
    assert main(["--subset", "smoke", "--runs-dir", str(runs), "--no-report", *args]) == 2
    assert _error(capsys) == message
    assert _intact(before) and sorted(runs.iterdir()) == sorted(before)


# ---------------------------------------------------------------------------- values and relations


@pytest.mark.parametrize("change, message", [
    ({"steps": 0}, "PretrainConfig.steps = 0: should be at least 1"),
    ({"batch_size": -8}, "PretrainConfig.batch_size = -8: should be at least 1"),
    ({"fraction": 1.5}, "PretrainConfig.fraction = 1.5: should be in (0, 1]"),
    ({"fraction": 0.0}, "PretrainConfig.fraction = 0.0: should be in (0, 1]"),
    ({"arch": "vit-huge"}, "PretrainConfig.arch = 'vit-huge': should be one of ['beit-b16', "),
    ({"img_size": 40}, "PretrainConfig: img_size = 40 is not a multiple of vit-smoke's patch size 16"),
    ({"epochs": 2.0}, "PretrainConfig: steps and epochs given together; give one of them (the other is derived)"),
    ({"blr": 0.0}, "PretrainConfig.blr = 0.0: should be positive"),
    ({"hflip": 2.0}, "PretrainConfig.hflip = 2.0: should be in [0, 1]"),
])
def test_a_value_out_of_range_is_one_line_naming_the_file_and_nothing_is_written(change, message, synthetic_root,
                                                                                 tmp_path, capsys) -> None:
    cfg = _pretrain_cfg(tmp_path, synthetic_root / "classification" / "train", **change)
    out = tmp_path / "run"
    assert _pretrain(cfg, out) == 2
    assert _error(capsys).startswith(f"error: {cfg}: {message}")
    assert not out.exists()  # not even an empty run directory


def test_a_finished_pretraining_refuses_another_config(synthetic_root, tmp_path, capsys) -> None:
    data = synthetic_root / "classification" / "train"
    out = tmp_path / "run"
    assert _pretrain(_pretrain_cfg(tmp_path, data, steps=1), out) == 0
    before = {p: p.read_bytes() for p in out.iterdir()}
    other = _pretrain_cfg(tmp_path, tmp_path / "nowhere", steps=1, blr=1e-2)
    assert _pretrain(other, out) == 2
    assert _error(capsys) == (f"error: {out} holds a finished run of another config (differs in ['blr', 'data_root']); "
                              "use another --out")
    assert _intact(before) and sorted(out.iterdir()) == sorted(before)


def test_out_that_is_a_file_is_one_line(synthetic_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.write_text("mine")
    assert _pretrain(_pretrain_cfg(tmp_path, synthetic_root / "classification" / "train"), out) == 2
    assert _error(capsys) == f"error: --out {out}: a file, not a run directory"
    assert out.read_text() == "mine"


def test_a_config_that_is_not_json_names_the_file(tmp_path, capsys) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{steps: 3")
    assert _pretrain(cfg, tmp_path / "run") == 2
    assert _error(capsys).startswith(f"error: {cfg}: not valid JSON (")
    assert not (tmp_path / "run").exists()


def test_a_corrupt_image_is_reported_and_listed_once(synthetic_root, tmp_path, capsys) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "classification" / "train", data)
    victim = sorted(data.rglob("*.png"))[0]
    victim.write_bytes(b"not a png")
    out = tmp_path / "run"
    assert _pretrain(_pretrain_cfg(tmp_path, data, steps=4, batch_size=32), out) == 0
    err = capsys.readouterr().err
    assert err.count(f"[data] skipped {victim}") == 1, err
    listed = [line.split("\t")[0] for line in (out / "skipped_images.txt").read_text().splitlines()]
    assert listed == [str(victim)]


def test_a_second_command_on_a_run_directory_in_use_says_who_holds_it(synthetic_root, tmp_path, capsys) -> None:
    from benchmark.utils.lock import exclusive

    out = tmp_path / "run"
    before = _earlier_results(out)
    with exclusive(out, "run directory"):  # another command runs there
        assert _pretrain(_pretrain_cfg(tmp_path, synthetic_root / "classification" / "train"), out) == 2
    line = _error(capsys)
    assert line.startswith(f"error: {out}: this run directory is in use by process {os.getpid()} on ")
    assert _intact(before) and sorted(out.iterdir()) == sorted(before)
