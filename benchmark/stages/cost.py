"""What a run costs: FLOPs of a whole run and GPU-hours of a reference GPU, for the dry run.

Each run kind's estimator is registered with the kind (:mod:`benchmark.stages.kinds`); the shared
parts are here. FLOPs are counted by :mod:`benchmark.models.flops` on the real model, then scaled
by the run's number of images:

- ``pretrain``: the method's own step (:func:`~benchmark.methods.flops.pretrain_flops_per_image`).
  Iterations: ``steps``, or ``epochs x round(images x fraction) / batch_size`` as
  :func:`benchmark.stages.pretrain.schedule_steps`. Images per step = ``batch_size``.
- ``finetune``: forward+backward of the classifier on ``epochs x (images x train_fraction //
  batch) x batch`` images, plus one forward over the validation split (evaluated once, at the end).
- ``probe``: forward-only encoder passes: linear with augmentation = ``epochs`` passes over the
  training subset plus one over val; linear without augmentation and k-NN = one pass over each
  split (the linear head and the k-NN similarities are negligible and not counted).
- ``detect`` / ``segment`` (:func:`estimate_dense`): an approximation from the *backbone* alone. The
  MMEngine config (with ``cfg_options``) gives the training length (epochs x training images, or
  iterations x the recipe's global batch: ``auto_scale_lr.base_batch_size``, else per-GPU batch x
  ``world_size``) and the input size: detection images are assumed 4:3 and resized as the
  pipeline's scales say (mean short side over every scale listed in the training pipeline; the
  test Resize for evaluation); segmentation trains on its ``crop_size`` crops and evaluates at the
  test Resize (4:3 assumed; sliding-window overlap not counted). The backbone (global attention at
  that token count) is counted like the rest and multiplied by ``HEAD_FACTOR`` for the FPN and heads.

GPU-hours = FLOPs / (``REFERENCE_PEAK_FLOPS`` x ``REFERENCE_MFU``) / 3600. Image counts come from
``DATASET_SIZES`` (named data sets) or from the caller (``dataset_sizes``, for path-only configs);
where a count is needed but unknown the estimate says "unknown" instead of guessing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark import REPO
from benchmark.data.sets import DATA_SETS
from benchmark.models.flops import vit_flops
from benchmark.utils.tree import first_value, nodes

# ------------------------------------------------------------------------- reference hardware
REFERENCE_GPU = "A100"
REFERENCE_PEAK_FLOPS = 312e12   # dense bf16 tensor-core peak of an A100 (NVIDIA A100 datasheet)
REFERENCE_MFU = 0.40            # assumed model FLOPs utilisation of a ViT training step

# Factor from backbone FLOPs to the whole model's (backbone + neck + heads), a stated approximation:
# - detect: Mask R-CNN + FPN. ViTDet (Li et al. 2022, Table 3) gives ~0.8 T(MAC) for a ViT-B Mask
#   R-CNN at 1024x1024 whose windowed-attention backbone is ~0.47 TMAC by hand count: ~1.7x; our
#   backbone has global attention (larger), so 1.5x.
# - segment: UperNet (512 channels) + FCN auxiliary head at 512x512: by hand count the UperNet
#   FPN convolutions at 1/4..1/32 scale are ~210 GMAC against ~106 GMAC for a ViT-B backbone, so
#   ~3x in all. Both heads cost the same whatever the backbone, so these factors underestimate
#   the total for ViT-S/Ti backbones (UperNet on ViT-S: ~6x).
# Why an image count is unknown: a path-only data set (the named ones are in DATASET_SIZES).
UNKNOWN_COUNT = "a data set given by its path: the dry run knows the image counts of the named data sets only"
HEAD_FACTOR: dict[str, float] = {"detect": 1.5, "segment": 3.0}
DETECT_ASPECT = 4 / 3           # assumed width / height of a detection or segmentation image

# --------------------------------------------------------------------------- data set sizes
# Images per split of the named data sets (split -> count), as their official releases give them
# (their records in benchmark.data.sets), keyed by their names (a fine-tuning's or probe's ``dataset``).
DATASET_SIZES: dict[str, dict[str, int]] = {name: {"train": record.train, "val": record.val}
                                            for name, record in DATA_SETS.items()
                                            if record.train is not None and record.val is not None}


@dataclass
class Estimate:
    """The compute of one run; ``flops`` and ``gpu_hours`` are None when unknown (see ``notes``)."""

    kind: str
    flops: float | None
    gpu_hours: float | None
    train_flops: float | None = None
    eval_flops: float | None = None
    steps: int | None = None                # optimiser steps / training iterations
    train_images: float | None = None       # images (or crops) seen in training, all steps together
    flops_per_image: float | None = None    # forward+backward of one training image
    notes: list[str] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.flops is not None

    def summary(self) -> str:
        """One line for the dry-run: FLOPs, GPU-hours and the reference they assume."""
        if self.flops is None:
            return f"unknown ({'; '.join(self.notes) or 'no estimate'})"
        return (f"{self.flops:.2e} FLOPs, {self.gpu_hours:.3g} GPU-h ({reference()})"
                + (f" [{'; '.join(self.notes)}]" if self.notes else ""))


def reference() -> str:
    """The reference GPU and utilisation that GPU-hours assume."""
    return f"{REFERENCE_GPU} bf16 {REFERENCE_PEAK_FLOPS / 1e12:.0f} TFLOP/s at {REFERENCE_MFU:.0%} MFU"


def gpu_hours(flops: float) -> float:
    return flops / (REFERENCE_PEAK_FLOPS * REFERENCE_MFU) / 3600



def sizes_of(config: dict[str, Any], dataset_sizes: dict[str, int] | None, default_name: str | None = None
           ) -> tuple[dict[str, int], str | None]:
    """(split -> images, where they came from): the caller's sizes, else the table's for the
    config's ``dataset`` (a named reader such as ``inat2019``) or ``default_name``."""
    if dataset_sizes:
        return dict(dataset_sizes), None
    name = config.get("dataset") or default_name
    if name in DATASET_SIZES:
        return dict(DATASET_SIZES[name]), f"sizes of {name}"
    return {}, None


def finish(est: Estimate) -> Estimate:
    if est.train_flops is not None and est.eval_flops is not None:
        est.flops = est.train_flops + est.eval_flops
        est.gpu_hours = gpu_hours(est.flops)
    return est


def unknown(kind: str, why: str, **known: Any) -> Estimate:
    return Estimate(kind, None, None, notes=[why], **known)


def no_compute(kind: str, why: str) -> Callable[..., Estimate]:
    """The ``estimate`` of a run kind that costs no accelerator time (``why``: what it does instead)."""
    return lambda config, dataset_sizes=None, world_size=None: Estimate(
        kind, 0.0, 0.0, train_flops=0.0, eval_flops=0.0, notes=[why])


def _short_sides(value: Any) -> list[int]:
    """Short sides of every ``scale`` / ``scales`` found in a (nested) MMEngine pipeline."""
    return [int(min(scale)) for scale in _all_scales(value)]


def _keep_ratio_size(scale: tuple[int, int], patch: int = 16) -> tuple[int, int]:
    """(h, w) of a DETECT_ASPECT image resized with keep_ratio into ``scale`` (long, short bounds),
    rounded down to whole patches."""
    long_max, short_max = max(scale), min(scale)
    short = min(short_max, long_max / DETECT_ASPECT)
    return max(patch, int(short) // patch * patch), max(patch, int(short * DETECT_ASPECT) // patch * patch)


def estimate_dense(kind: str, config: dict[str, Any], dataset_sizes: dict[str, int] | None, world_size: int | None) -> Estimate:
    from mmengine.config import Config

    path = Path(config["config"])
    if not path.is_absolute():
        path = REPO / path
    cfg = Config.fromfile(str(path))
    if config.get("cfg_options"):
        cfg.merge_from_dict(dict(config["cfg_options"]))
    arch = config.get("arch") or cfg.model.backbone.get("arch")
    train_cfg = cfg.train_cfg
    per_gpu = int(cfg.train_dataloader.batch_size)
    recipe = cfg.get("auto_scale_lr", {}) or {}
    global_batch = per_gpu * world_size if world_size else int(recipe.get("base_batch_size", per_gpu))
    train_pipe = cfg.train_dataloader.dataset.get("pipeline", [])
    test_scales = _short_sides(cfg.test_dataloader.dataset.get("pipeline", []))
    test_scale = first_value(cfg.test_dataloader.dataset.get("pipeline", []), "scale")
    notes = [f"backbone {arch} x head factor {HEAD_FACTOR[kind]}"]
    crop = first_value(train_pipe, "crop_size") if kind == "segment" else None
    if crop is not None:
        train_size = (int(crop[0]) // 16 * 16, int(crop[1]) // 16 * 16)
    else:
        shorts = _short_sides(train_pipe) or test_scales
        longs = [max(s) for s in _all_scales(train_pipe)] or [max(test_scale)]
        short = sum(shorts) / len(shorts)
        train_size = _keep_ratio_size((max(longs), int(short)))
    eval_size = _keep_ratio_size(tuple(test_scale)) if test_scale is not None else train_size
    sizes, source = sizes_of(config, dataset_sizes)
    if source:
        notes.append(source)
    subset = cfg.train_dataloader.dataset.get("indices")
    if isinstance(subset, int) and "train" in sizes:  # mmengine's BaseDataset: the first `indices` images
        sizes["train"] = min(subset, sizes["train"])
        notes.append(f"the first {subset} training images")
    if "max_iters" in train_cfg:
        iters = int(train_cfg.max_iters)
        images = iters * global_batch
        notes.append(f"global batch {global_batch}")
    else:
        if "train" not in sizes:
            return unknown(kind, f"number of training images unknown ({UNKNOWN_COUNT})")
        epochs = int(train_cfg.max_epochs)
        images = epochs * sizes["train"]
        iters = math.ceil(sizes["train"] / global_batch) * epochs
    if "val" not in sizes:
        return unknown(kind, f"number of validation images unknown ({UNKNOWN_COUNT})")
    interval = int(train_cfg.get("val_interval", 0) or 0)
    length = int(train_cfg.get("max_iters", train_cfg.get("max_epochs", 1)))
    evaluations = max(1, length // interval) if interval else 1
    factor = HEAD_FACTOR[kind]
    per_image = factor * vit_flops(arch, train_size, True)
    eval_flops = evaluations * sizes["val"] * factor * vit_flops(arch, eval_size, False)
    notes.append(f"train {train_size[0]}x{train_size[1]}, eval {eval_size[0]}x{eval_size[1]} px")
    est = Estimate(kind, None, None, train_flops=images * per_image, eval_flops=eval_flops, steps=iters,
                   train_images=images, flops_per_image=per_image, notes=notes)
    return finish(est)


def _all_scales(value: Any) -> list[tuple[int, int]]:
    """Every ``scale`` / ``scales`` pair found in a (nested) MMEngine pipeline."""
    found: list[tuple[int, int]] = []
    for node in nodes(value):
        if not isinstance(node, dict):
            continue
        scale, scales = node.get("scale"), node.get("scales")
        if isinstance(scale, (list, tuple)) and len(scale) == 2:
            found.append(tuple(scale))
        if isinstance(scales, (list, tuple)):
            found += [tuple(s) for s in scales if isinstance(s, (list, tuple)) and len(s) == 2]
    return found
