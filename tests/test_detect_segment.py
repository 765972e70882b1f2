"""End-to-end MMDetection / MMSegmentation runs on the synthetic data, and the CLIs' bad-input exits."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.convert import save_encoder, to_mm
from benchmark.models import create_vit, model_spec
from benchmark.results import load_result

ROOT = Path(__file__).resolve().parents[1]
DET_CONFIG = ROOT / "configs_mm" / "mask_rcnn_vit_fpn_smoke.py"
SEG_CONFIG = ROOT / "configs_mm" / "upernet_vit_smoke.py"
PRETRAIN_SIZE = 64


@pytest.fixture(scope="module")
def encoder_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    vit = create_vit("vit-smoke", PRETRAIN_SIZE)
    return save_encoder(vit, model_spec("vit-smoke", PRETRAIN_SIZE), tmp_path_factory.mktemp("enc") / "encoder.safetensors")


def _check_result(work_dir: Path, kind: str, metrics: dict[str, float], keys: set[str]) -> dict:
    result = load_result(work_dir / "result.json")
    assert result["kind"] == kind
    assert set(result["metrics"]) == keys == set(metrics)
    for name, value in result["metrics"].items():
        assert math.isfinite(value) and 0.0 <= value <= 100.0, (name, value)
        assert value == pytest.approx(metrics[name])
    return result


@pytest.mark.slow
def test_run_detection_end_to_end(synthetic_root: Path, encoder_ckpt: Path, tmp_path: Path) -> None:
    from benchmark.detect import run_detection

    work = tmp_path / "det"
    metrics = run_detection(encoder_ckpt, DET_CONFIG, synthetic_root / "coco", work, seed=0)
    result = _check_result(work, "detect", metrics, {"bbox_mAP", "bbox_mAP_50", "segm_mAP", "segm_mAP_50"})
    assert metrics["bbox_mAP_50"] >= metrics["bbox_mAP"] and metrics["segm_mAP_50"] >= metrics["segm_mAP"]
    # the run used the checkpoint's spec, the data's classes and the converted checkpoint
    model = result["config"]["model"]
    assert model["backbone"]["arch"] == "vit-smoke" and model["backbone"]["img_size"] == PRETRAIN_SIZE
    assert model["backbone"]["checkpoint"] == str((work / "mm_backbone.pth").resolve())
    assert model["neck"]["in_channels"] == [192] * 4
    assert model["roi_head"]["bbox_head"]["num_classes"] == 6 == model["roi_head"]["mask_head"]["num_classes"]
    assert result["config"]["train_dataloader"]["dataset"]["metainfo"]["classes"][0] == "circle"
    assert result["checkpoint"]["path"] == str(encoder_ckpt) and result["checkpoint"]["sha256"]
    assert [p.name for p in work.rglob("*.pth")] == ["mm_backbone.pth"]  # no training state saved


@pytest.mark.slow
def test_run_segmentation_end_to_end(synthetic_root: Path, encoder_ckpt: Path, tmp_path: Path) -> None:
    from benchmark.segment import run_segmentation

    mm = to_mm(encoder_ckpt, tmp_path / "mm_backbone.pth")
    work = tmp_path / "seg"
    metrics = run_segmentation(mm, SEG_CONFIG, synthetic_root / "ade20k", work, seed=0)
    result = _check_result(work, "segment", metrics, {"mIoU", "aAcc"})
    model = result["config"]["model"]
    assert model["decode_head"]["num_classes"] == 7 == model["auxiliary_head"]["num_classes"]  # background + 6 shapes
    assert model["backbone"]["checkpoint"] == str(mm.resolve())
    assert result["config"]["val_dataloader"]["dataset"]["metainfo"]["classes"][0] == "background"
    assert not list(work.rglob("*.pth"))  # an mm checkpoint is used in place; no training state saved


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_detect_cli_missing_data_root_exits_2(tmp_path: Path) -> None:
    proc = _cli("benchmark.detect", "--ckpt", "none", "--config", str(DET_CONFIG),
                "--data-root", str(tmp_path / "no-such-coco"), "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-coco" in lines[0] and lines[0].startswith("error:")
    assert not (tmp_path / "w" / "result.json").exists()


def test_segment_cli_bad_checkpoint_exits_2(synthetic_root: Path, tmp_path: Path) -> None:
    junk = tmp_path / "weights.pth"
    junk.write_text("junk")
    proc = _cli("benchmark.segment", "--ckpt", str(junk), "--config", str(SEG_CONFIG),
                "--data-root", str(synthetic_root / "ade20k"), "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown checkpoint format" in lines[0]


def test_detect_missing_annotation_file_is_input_error(synthetic_root: Path, tmp_path: Path) -> None:
    import shutil

    from benchmark.detect import main

    coco = tmp_path / "coco"
    shutil.copytree(synthetic_root / "coco", coco)
    (coco / "annotations" / "instances_val2017.json").unlink()
    assert main(["--ckpt", "none", "--config", str(DET_CONFIG), "--data-root", str(coco),
                 "--work-dir", str(tmp_path / "w")]) == 2
