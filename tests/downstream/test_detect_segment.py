"""End-to-end MMDetection / MMSegmentation runs on the synthetic data, and the CLIs' bad-input exits."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark import REPO
from benchmark.models.checkpoints.export import save_encoder, to_mm
from benchmark.models.vit import create_vit, model_spec
from benchmark.utils.results import load_result

DET_CONFIG = REPO / "configs_mm" / "mask_rcnn_vit_fpn_smoke.py"
SEG_CONFIG = REPO / "configs_mm" / "upernet_vit_smoke.py"
PRETRAIN_SIZE = 64


@pytest.fixture(scope="module")
def encoder_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    vit = create_vit("vit-smoke", PRETRAIN_SIZE)
    return save_encoder(vit, model_spec("vit-smoke", PRETRAIN_SIZE), tmp_path_factory.mktemp("enc") / "encoder.safetensors")


def _log_text(work_dir: Path) -> str:
    """The text of the run's mmengine log file (``WORK_DIR/<timestamp>/<timestamp>.log``)."""
    logs = sorted(work_dir.rglob("*.log"))
    assert logs, f"no log file under {work_dir}"
    return "\n".join(p.read_text() for p in logs)


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
    from benchmark.stages.dense import run_detection

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
    # layer-wise lr decay; the config's SyncBN (pyramid) ran as BN in this single process, and the log says so
    assert result["config"]["optim_wrapper"]["constructor"] == "ViTLayerDecayOptimizerConstructor"
    assert model["backbone"]["norm_cfg"]["type"] == "BN"
    assert "SyncBN switched to BN in model.backbone.norm_cfg" in _log_text(work)


@pytest.mark.slow
def test_run_segmentation_end_to_end(synthetic_root: Path, encoder_ckpt: Path, tmp_path: Path) -> None:
    from benchmark.stages.dense import run_segmentation

    mm = to_mm(encoder_ckpt, tmp_path / "mm_backbone.pth")
    work = tmp_path / "seg"
    metrics = run_segmentation(mm, SEG_CONFIG, synthetic_root / "ade20k", work, seed=0)
    result = _check_result(work, "segment", metrics, {"mIoU", "aAcc"})
    model = result["config"]["model"]
    assert model["decode_head"]["num_classes"] == 7 == model["auxiliary_head"]["num_classes"]  # background + 6 shapes
    assert model["backbone"]["checkpoint"] == str(mm.resolve())
    assert result["config"]["val_dataloader"]["dataset"]["metainfo"]["classes"][0] == "background"
    assert not list(work.rglob("*.pth"))  # an mm checkpoint is used in place; no training state saved
    assert result["config"]["optim_wrapper"]["constructor"] == "ViTLayerDecayOptimizerConstructor"
    assert model["decode_head"]["norm_cfg"]["type"] == "BN" == model["auxiliary_head"]["norm_cfg"]["type"]
    log = _log_text(work)
    assert "SyncBN switched to BN" in log and "model.decode_head.norm_cfg" in log
    assert "ViTLayerDecayOptimizerConstructor: layer_decay_rate 0.65, num_layers 4" in log


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO, timeout=300)


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

    from benchmark.stages.dense import detect_main as main

    coco = tmp_path / "coco"
    shutil.copytree(synthetic_root / "coco", coco)
    (coco / "annotations" / "instances_val2017.json").unlink()
    assert main(["--ckpt", "none", "--config", str(DET_CONFIG), "--data-root", str(coco),
                 "--work-dir", str(tmp_path / "w")]) == 2


def test_several_processes_without_gpus_are_refused(synthetic_root: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Under torchrun with several processes a run uses mmengine's pytorch launcher, one GPU per
    process; on a machine without GPUs that is refused in one line before anything is built."""
    from benchmark.stages.dense import segment_main as main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["--ckpt", "none", "--config", str(SEG_CONFIG), "--data-root", str(synthetic_root / "ade20k"),
                 "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "one GPU each" in err and "\n" not in err


# ---------------------------------------------------------------------------- paper-scale configs

# (config, task, arch, layer decay rate, base lr)
PAPER_CONFIGS = [
    ("mask_rcnn_vit_s_fpn_3x_coco.py", "detect", "vit-s16", 0.7, 1e-4),
    ("mask_rcnn_vit_b_fpn_3x_coco.py", "detect", "vit-b16", 0.7, 1e-4),
    ("mask_rcnn_vit_b_fpn_6x_coco_random_init.py", "detect", "vit-b16", 1.0, 1e-4),
    ("upernet_vit_s_512x512_160k_ade20k.py", "segment", "vit-s16", 0.65, 7e-4),
    ("upernet_vit_b_512x512_160k_ade20k.py", "segment", "vit-b16", 0.65, 7e-4),
]
_PAPER_IDS = [c[0].removesuffix(".py") for c in PAPER_CONFIGS]
# tiny overrides for a CPU test process: no data-loading worker processes
_LOADER_OPTIONS = {
    "train_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
    "val_dataloader.num_workers": 0, "val_dataloader.persistent_workers": False,
}


@pytest.mark.parametrize("config, kind, arch, rate, lr", PAPER_CONFIGS, ids=_PAPER_IDS)
def test_paper_config_recipe(config: str, kind: str, arch: str, rate: float, lr: float) -> None:
    """The hyper-parameters each paper-scale config promises (see the comments in the configs)."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(REPO / "configs_mm" / config))
    assert cfg.model.backbone.type == "ViTPyramid" and cfg.model.backbone.arch == arch
    assert list(cfg.model.backbone.out_indices) == [3, 5, 7, 11]
    assert cfg.model.backbone.norm_cfg.type == "SyncBN"
    assert cfg.train_dataloader.batch_size * 8 == 16 == cfg.auto_scale_lr.base_batch_size
    ow = cfg.optim_wrapper
    assert ow.constructor == "ViTLayerDecayOptimizerConstructor" and ow.type == "AmpOptimWrapper"
    assert ow.paramwise_cfg.layer_decay_rate == rate
    assert ow.optimizer.type == "AdamW" and ow.optimizer.lr == lr and ow.optimizer.weight_decay == 0.05
    assert tuple(ow.optimizer.betas) == (0.9, 0.999)
    warmup, main = cfg.param_scheduler
    assert warmup.type == "LinearLR" and not warmup.by_epoch
    if kind == "detect":
        epochs = 72 if "6x" in config else 36
        assert cfg.train_cfg.type == "EpochBasedTrainLoop" and cfg.train_cfg.max_epochs == epochs
        assert main.type == "MultiStepLR" and list(main.milestones) == [epochs - 9, epochs - 3] and main.end == epochs
        assert warmup.end == 500
        assert cfg.test_pipeline[1] == dict(type="Resize", scale=(1333, 800), keep_ratio=True)
        assert [m for m in cfg.val_evaluator.metric] == ["bbox", "segm"]
        assert cfg.train_pipeline[3].type == "RandomChoice"  # multi-scale resize / crop
    else:
        assert cfg.train_cfg.type == "IterBasedTrainLoop" and cfg.train_cfg.max_iters == 160000
        assert warmup.end == 1500 == main.begin and main.type == "PolyLR" and main.end == 160000
        assert tuple(cfg.crop_size) == (512, 512)
        assert cfg.model.test_cfg == dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
        assert cfg.model.decode_head.type == "UPerHead" and cfg.model.decode_head.norm_cfg.type == "SyncBN"
        assert cfg.val_evaluator.iou_metrics == ["mIoU"]


@pytest.mark.slow
@pytest.mark.parametrize("config, kind, arch, rate, lr", PAPER_CONFIGS, ids=_PAPER_IDS)
def test_paper_config_builds_on_one_cpu_process(
    config: str, kind: str, arch: str, rate: float, lr: float, synthetic_root: Path, tmp_path: Path
) -> None:
    """Model, optimizer wrapper and both dataloaders build from a paper-scale config in one process."""
    import torch.nn as nn
    from mmengine.optim import OptimWrapper

    from benchmark.downstream.mm.runner import DETECT, SEGMENT, _close_log_files, build_runner, prepare

    task = DETECT if kind == "detect" else SEGMENT
    data = synthetic_root / ("coco" if kind == "detect" else "ade20k")
    work = tmp_path / "w"
    prepared = prepare(task, None, REPO / "configs_mm" / config, data, work, 0, dict(_LOADER_OPTIONS))
    assert not [p for p in _sync_bn_types(prepared.cfg.to_dict())]  # switched everywhere in the config
    runner = build_runner(prepared)
    try:
        model = runner.model
        assert model.backbone.arch == arch and len(model.backbone.vit.blocks) == 12
        assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        assert isinstance(model.backbone.fpn1[1], nn.BatchNorm2d)

        wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
        if not torch.cuda.is_available():
            assert type(wrapper) is OptimWrapper  # mixed precision switched off on CPU
        lrs = {id(p): g["lr"] for g in wrapper.optimizer.param_groups for p in g["params"]}
        vit = model.backbone.vit
        assert lrs[id(vit.pos_embed)] == pytest.approx(lr * rate ** 13)
        assert lrs[id(vit.blocks[0].attn.qkv.weight)] == pytest.approx(lr * rate ** 12)
        assert lrs[id(vit.blocks[11].attn.qkv.weight)] == pytest.approx(lr * rate)
        head = model.roi_head.bbox_head.fc_cls.weight if kind == "detect" else model.decode_head.conv_seg.weight
        assert lrs[id(head)] == pytest.approx(lr)

        train_batch = next(iter(runner.train_loop.dataloader))
        val_batch = next(iter(runner.val_loop.dataloader))
        assert len(train_batch["inputs"]) == 2
        for img in train_batch["inputs"]:
            h, w = img.shape[-2:]
            if kind == "detect":  # short side one of 480, 512, ..., 800 unless the long side hit 1333
                assert min(h, w) in range(480, 801, 32) or max(h, w) == 1333, (h, w)
            else:  # at most one 512x512 crop
                assert max(h, w) <= 512, (h, w)
        h, w = val_batch["inputs"][0].shape[-2:]
        if kind == "detect":
            assert min(h, w) == 800 or max(h, w) == 1333, (h, w)
        else:
            assert min(h, w) == 512 or max(h, w) == 2048, (h, w)
    finally:
        _close_log_files(runner.logger)
    log = _log_text(work)
    assert "SyncBN switched to BN in" in log and "model.backbone.norm_cfg" in log
    if kind == "segment":
        assert "model.decode_head.norm_cfg" in log and "model.auxiliary_head.norm_cfg" in log
    if not torch.cuda.is_available():
        assert "AmpOptimWrapper switched to fp32 OptimWrapper" in log
    assert "16 (auto_scale_lr.base_batch_size)" in log


def _sync_bn_types(node, path: str = ""):
    """Dotted paths of every SyncBN norm config left below ``node``."""
    if isinstance(node, dict):
        if node.get("type") in ("SyncBN", "MMSyncBN", "SyncBatchNorm"):
            yield path
        for key, value in node.items():
            yield from _sync_bn_types(value, f"{path}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _sync_bn_types(value, f"{path}.{i}")


def test_an_interrupted_run_resumes_from_its_latest_checkpoint(synthetic_root: Path, tmp_path: Path) -> None:
    """mmengine writes ``last_checkpoint`` beside its checkpoints; a run started again on that work
    dir resumes from the checkpoint it names, and says so in its log notes; a pointer to a partial
    (or missing) file falls back to the newest whole checkpoint. A fresh work dir starts over."""
    from benchmark.downstream.mm.runner import SEGMENT, prepare

    fresh = prepare(SEGMENT, None, SEG_CONFIG, synthetic_root / "ade20k", tmp_path / "fresh", 0)
    assert not fresh.cfg.resume
    assert fresh.cfg.train_cfg.type == "ResumableIterBasedTrainLoop"
    work = tmp_path / "interrupted"
    work.mkdir()
    torch.save({"meta": {}}, work / "iter_40.pth")
    torch.save({"meta": {}}, work / "iter_80.pth")
    (work / "last_checkpoint").write_text(str(work / "iter_80.pth"))
    again = prepare(SEGMENT, None, SEG_CONFIG, synthetic_root / "ade20k", work, 0)
    assert again.cfg.resume and again.cfg.load_from == str(work / "iter_80.pth")
    assert any("resuming" in note for note in again.notes)
    (work / "iter_80.pth").write_bytes((work / "iter_80.pth").read_bytes()[:100])  # cut short
    again = prepare(SEGMENT, None, SEG_CONFIG, synthetic_root / "ade20k", work, 0)
    assert again.cfg.resume and again.cfg.load_from == str(work / "iter_40.pth")
