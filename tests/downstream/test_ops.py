"""torchvision's RoIAlign and NMS in place of mmcv's (benchmark.downstream.mm.ops), for an mmcv
without CUDA ops on a GPU: on CPU tensors they give exactly what mmcv's own ops give, a config is
switched wherever it names them, and a detection trained with them scores as one with mmcv's while
no compiled mmcv op is called (as on a GPU, where this mmcv has none); a segmentation calls none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmcv.ops import RoIAlign, batched_nms, nms

from benchmark import REPO
from benchmark.downstream.mm.ops import TORCHVISION_NMS, torchvision_nms, torchvision_ops


def _boxes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=generator) * 100
    wh = 5 + torch.rand(count, 2, generator=generator) * 40
    return torch.cat([xy, xy + wh], dim=1), torch.rand(count, generator=generator)


@pytest.mark.parametrize("output_size, scale, sampling", [(7, 0.25, 0), (14, 0.125, 0), (7, 0.5, 2)])
def test_torchvisions_roi_align_gives_mmcvs_output(output_size, scale, sampling) -> None:
    features = torch.randn(2, 16, 32, 40, generator=torch.Generator().manual_seed(0))
    boxes, _ = _boxes(30, 1)
    rois = torch.cat([torch.arange(30).remainder(2).float().unsqueeze(1), boxes], dim=1)
    ours = RoIAlign(output_size, scale, sampling, aligned=True, use_torchvision=True)(features, rois)
    theirs = RoIAlign(output_size, scale, sampling, aligned=True)(features, rois)
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"score_threshold": 0.3}, {"max_num": 10}, {"score_threshold": 0.5, "max_num": 5}])
def test_torchvision_nms_keeps_what_mmcvs_keeps(options) -> None:
    boxes, scores = _boxes(200, 2)
    dets, keep = torchvision_nms(boxes, scores, 0.5, **options)
    their_dets, their_keep = nms(boxes, scores, 0.5, **options)
    assert torch.equal(keep, their_keep) and torch.allclose(dets, their_dets)
    assert 0 < len(keep) < 200


def test_a_config_is_switched_wherever_it_names_the_ops_and_batched_nms_finds_ours() -> None:
    from mmengine.config import Config

    cfg = Config.fromfile(str(REPO / "configs_mm" / "mask_rcnn_vit_fpn_smoke.py"))
    notes = [line for key in list(cfg.keys()) for line in torchvision_ops(cfg[key])]
    roi = [cfg.model.roi_head.bbox_roi_extractor.roi_layer, cfg.model.roi_head.mask_roi_extractor.roi_layer]
    assert all(layer.use_torchvision for layer in roi)
    nms_cfgs = [cfg.model.test_cfg.rpn.nms, cfg.model.test_cfg.rcnn.nms, cfg.model.train_cfg.rpn_proposal.nms]
    assert {c.type for c in nms_cfgs} == {TORCHVISION_NMS} and notes and "RoIAlign" in notes[0]
    boxes, scores = _boxes(300, 3)
    labels = torch.arange(300).remainder(3)
    ours = batched_nms(boxes, scores, labels, {"type": TORCHVISION_NMS, "iou_threshold": 0.5})
    theirs = batched_nms(boxes, scores, labels, {"type": "nms", "iou_threshold": 0.5})
    assert torch.equal(ours[1], theirs[1]) and torch.allclose(ours[0], theirs[0])
    assert torchvision_ops({"model": {"backbone": {"type": "ViTPyramid"}}}) == []  # nothing to switch: no note


def refuse_compiled_ops(monkeypatch) -> None:
    """Every compiled op of mmcv raises, as each does on a CUDA tensor where mmcv was built for the
    CPU alone: a dense run that still calls one fails, naming it."""
    import mmcv._ext as compiled

    def refusing(name: str):
        def op(*args, **kwargs):
            raise RuntimeError(f"mmcv's compiled {name} was called")
        return op

    for name in dir(compiled):
        if not name.startswith("_") and callable(getattr(compiled, name)):
            monkeypatch.setattr(compiled, name, refusing(name))


@pytest.mark.slow
def test_detection_trained_with_torchvisions_ops_scores_as_with_mmcvs(synthetic_root: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    from benchmark.downstream.mm.runner import DETECT, prepare, run

    options = {"train_cfg.max_epochs": 2, "train_cfg.val_interval": 2}
    config = REPO / "configs_mm" / "mask_rcnn_vit_fpn_smoke.py"
    assert not any("torchvision" in note for note in prepare(DETECT, None, config, synthetic_root / "coco",
                                                             tmp_path / "plain", 0, options).notes)  # CPU: mmcv's own
    theirs = run(DETECT, None, config, synthetic_root / "coco", tmp_path / "mmcv", 0, options)
    monkeypatch.setenv("SSLBENCH_MM_OPS", "torchvision")
    notes = prepare(DETECT, None, config, synthetic_root / "coco", tmp_path / "forced", 0, options).notes
    assert any(note.startswith("forced by SSLBENCH_MM_OPS=torchvision: 2 RoIAlign layers and 3 NMS") for note in notes)
    refuse_compiled_ops(monkeypatch)  # the mask targets' RoIAlign too (mmdet calls mmcv's roi_align itself)
    ours = run(DETECT, None, config, synthetic_root / "coco", tmp_path / "torchvision", 0, options)
    assert ours == theirs and set(ours) >= {"bbox_mAP", "segm_mAP"}


@pytest.mark.slow
def test_segmentation_calls_no_compiled_mmcv_op(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    from benchmark.downstream.mm.runner import SEGMENT, run

    refuse_compiled_ops(monkeypatch)
    options = {"train_cfg.max_iters": 8, "train_cfg.val_interval": 8, "param_scheduler.1.end": 8}
    metrics = run(SEGMENT, None, REPO / "configs_mm" / "upernet_vit_smoke.py", synthetic_root / "ade20k",
                  tmp_path / "segment", 0, options)
    assert "mIoU" in metrics


# A process whose mmcv has no compiled ops (scripts/offline_install.sh ... none): the stub module in
# mmcv._ext's place before anything imports mmcv. Its Python has no distutils, as 3.12 (the GPU
# machine's), and the kit's setuptools is not in site-packages, so no .pth file provides one.
_WITHOUT_COMPILED_OPS = """
import importlib.abc, importlib.util, json, sys
from pathlib import Path
class NoDistutils(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "distutils":
            raise ModuleNotFoundError("No module named 'distutils'")
sys.meta_path[:] = [NoDistutils()] + [f for f in sys.meta_path if type(f).__name__ != "DistutilsMetaFinder"]
for name in [m for m in sys.modules if m.split(".")[0] == "distutils"]:
    del sys.modules[name]
spec = importlib.util.spec_from_file_location("mmcv._ext", sys.argv[1])
sys.modules["mmcv._ext"] = stub = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stub)
import mmcv.ops, mmdet.models, mmseg.models  # every op module looks its kernels up at import
from benchmark.downstream.mm import ops
from benchmark.downstream.mm.runner import DETECT, run
assert not ops.mmcv_compiled_ops() and ops.needed(on_accelerator=False)  # torchvision's, on any device
try:
    mmcv.ops.nms(*[__import__("torch").ones(1, 4), __import__("torch").ones(1)], 0.5)
    raise SystemExit("the stub's nms ran")
except RuntimeError as err:
    assert "compiled nms is not installed" in str(err), err
options = {"train_cfg.max_epochs": 1, "train_cfg.val_interval": 1}
print(json.dumps(run(DETECT, None, *map(Path, sys.argv[2:5]), 0, options)))
"""


@pytest.mark.slow
def test_mask_rcnn_trains_on_an_mmcv_installed_without_compiled_ops(synthetic_root: Path, tmp_path: Path) -> None:
    """What the GPU lease installs in seconds (scripts/offline_install.sh ... none): mmdet imports
    with scripts/mmcv_ext_stub.py as mmcv's compiled module, its ops raise naming themselves, and
    Mask R-CNN trains and scores with torchvision's kernels, chosen because this mmcv has no ops
    (on the CPU here, as on a GPU), in a Python without distutils (3.12's, with the kit's setuptools
    on PYTHONPATH: mmengine's Runner logs its environment with distutils)."""
    import json
    import os
    import subprocess
    import sys

    config = REPO / "configs_mm" / "mask_rcnn_vit_fpn_smoke.py"
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_COMPILED_OPS, str(REPO / "scripts" / "mmcv_ext_stub.py"),
                           str(config), str(synthetic_root / "coco"), str(tmp_path / "detect")],
                          capture_output=True, text=True, cwd=REPO,
                          env={k: v for k, v in os.environ.items() if k != "SSLBENCH_MM_OPS"})  # not forced
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"bbox_mAP", "segm_mAP"} <= set(metrics)
