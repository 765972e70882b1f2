"""Compute estimates of the driver's runs: forward+backward FLOPs of a whole run and GPU-hours.

    from benchmark.compute import estimate, DATASET_SIZES
    est = estimate("pretrain", config, dataset_sizes={"train": 1_281_167})
    print(est.summary())   # "3.1e+20 FLOPs, 690 GPU-h (A100 bf16 312 TFLOP/s at 40% MFU)"

How the FLOPs are counted: ``torch.utils.flop_counter.FlopCounterMode`` on ONE training step of
the real model on the *meta* device (shapes only, no arithmetic, well under a second for a ViT-B)
at a batch of 2 images, divided by 2, then scaled by the run's number of images. A multiply-add
counts as 2 FLOPs (a ViT-S/16 forward at 224 is ~9.2e9 FLOPs = DeiT's 4.6 GMACs). The counter sees
matrix products, convolutions and attention (SDPA), i.e. what dominates a ViT; element-wise work,
the optimiser step and data loading are not counted. Step costs are cached per
(kind, method, arch, image size, method arguments).

- ``pretrain``: the method's own step (``benchmark.methods.build_method`` with the config's
  ``method_args`` on a synthetic batch shaped by the method's own augmentation), so SplitMask's
  two half-sequences plus decoder, MAE's encoder on 25% of the patches and DINO's multi-crop all
  count as they run. Iterations: ``steps``, or ``epochs x round(images x fraction) / batch_size``
  as :func:`benchmark.pretrain.schedule_steps`. Images per step = ``batch_size``. A DALL-E
  tokenizer is counted as a random-patch codebook (the dVAE's no-grad forward is left out).
- ``finetune``: forward+backward of the classifier on ``epochs x (images x train_fraction //
  batch) x batch`` images, plus one forward over the validation split (evaluated once, at the end).
- ``probe``: forward-only encoder passes: linear with augmentation = ``epochs`` passes over the
  training subset plus one over val; linear without augmentation and k-NN = one pass over each
  split (the linear head and the k-NN similarities are negligible and not counted).
- ``detect`` / ``segment``: an approximation from the *backbone* alone. The MMEngine config (with
  ``cfg_options``) gives the training length (epochs x training images, or iterations x the
  recipe's global batch: ``auto_scale_lr.base_batch_size``, else per-GPU batch x ``world_size``)
  and the input size: detection images are assumed 4:3 and resized as the pipeline's scales say
  (mean short side over every scale listed in the training pipeline; the test Resize for
  evaluation); segmentation trains on its ``crop_size`` crops and evaluates at the test Resize
  (4:3 assumed; sliding-window overlap not counted). The backbone (global attention at that
  token count) is counted like the rest and multiplied by ``HEAD_FACTOR`` for the FPN and heads.

GPU-hours = FLOPs / (``REFERENCE_PEAK_FLOPS`` x ``REFERENCE_MFU``) / 3600. Image counts come from
``DATASET_SIZES`` (named data sets) or from the caller (``dataset_sizes``, for path-only configs);
where a count is needed but unknown the estimate says "unknown" instead of guessing.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
import torch.nn as nn

# ------------------------------------------------------------------------- reference hardware
REFERENCE_GPU = "A100"
REFERENCE_PEAK_FLOPS = 312e12   # dense bf16 tensor-core peak of an A100 (NVIDIA A100 datasheet)
REFERENCE_MFU = 0.40            # assumed model FLOPs utilisation of a ViT training step
COUNT_BATCH = 2                 # images per counted step (SplitMask's InfoNCE needs two)

# Factor from backbone FLOPs to the whole model's (backbone + neck + heads), a stated approximation:
# - detect: Mask R-CNN + FPN. ViTDet (Li et al. 2022, Table 3) gives ~0.8 T(MAC) for a ViT-B Mask
#   R-CNN at 1024x1024 whose windowed-attention backbone is ~0.47 TMAC by hand count: ~1.7x; our
#   backbone has global attention (larger), so 1.5x.
# - segment: UperNet (512 channels) + FCN auxiliary head at 512x512: by hand count the UperNet
#   FPN convolutions at 1/4..1/32 scale are ~210 GMAC against ~106 GMAC for a ViT-B backbone, so
#   ~3x in all. Both heads cost the same whatever the backbone, so these factors underestimate
#   the total for ViT-S/Ti backbones (UperNet on ViT-S: ~6x).
HEAD_FACTOR: dict[str, float] = {"detect": 1.5, "segment": 3.0}
DETECT_ASPECT = 4 / 3           # assumed width / height of a detection or segmentation image

# --------------------------------------------------------------------------- data set sizes
# Images per split of the named data sets (split -> count), as their official releases give them:
# - ImageNet-1k (ILSVRC 2012): 1,281,167 train / 50,000 val (Russakovsky et al. 2015).
# - iNaturalist 2019 (FGVC6): 265,213 train / 3,030 val (github.com/visipedia/inat_comp, 2019).
# - COCO 2017: 118,287 train2017 / 5,000 val2017 (cocodataset.org).
# - ADE20k (SceneParsing, ADEChallengeData2016): 20,210 train / 2,000 val.
# - Stanford Cars: 8,144 train / 8,041 test (Krause et al. 2013).
# - DomainNet (Peng et al. 2019), per domain, from the official *_train.txt / *_test.txt splits
#   (409,832 train / 176,743 test in all).
DATASET_SIZES: dict[str, dict[str, int]] = {
    "imagenet": {"train": 1_281_167, "val": 50_000},
    "inat2019": {"train": 265_213, "val": 3_030},
    "coco": {"train": 118_287, "val": 5_000},
    "ade20k": {"train": 20_210, "val": 2_000},
    "stanford-cars": {"train": 8_144, "val": 8_041},
    "domainnet-clipart": {"train": 33_525, "val": 14_604},
    "domainnet-infograph": {"train": 36_023, "val": 15_582},
    "domainnet-painting": {"train": 50_416, "val": 21_850},
    "domainnet-quickdraw": {"train": 120_750, "val": 51_750},
    "domainnet-real": {"train": 120_906, "val": 52_041},
    "domainnet-sketch": {"train": 48_212, "val": 20_916},
}


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


# ----------------------------------------------------------------------------- counting

def _meta(batch: Any) -> Any:
    """A (nested list of) tensor(s) as meta tensors of the same shapes and dtypes."""
    if isinstance(batch, (list, tuple)):
        return [_meta(b) for b in batch]
    return torch.empty_like(batch, device="meta")


def _to_meta(module: nn.Module) -> nn.Module:
    """``module`` on the meta device, except 0-dim buffers (step counters read with ``int()``),
    which stay real CPU scalars with their values."""
    scalars = {name: buf.detach().clone().cpu() for name, buf in module.named_buffers() if buf.dim() == 0}
    module = module.to("meta")
    for name, value in scalars.items():
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        owner._buffers[attr] = value
    return module


def count_flops(fn: Any) -> float:
    """FLOPs of everything ``fn()`` runs (forward and backward), by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _vit(arch: str, img_size: int | tuple[int, int], num_classes: int = 0, **kwargs: Any) -> nn.Module:
    from benchmark.models import create_vit

    with torch.device("meta"):
        return create_vit(arch, img_size, num_classes=num_classes, **kwargs)


@lru_cache(maxsize=None)
def vit_flops(arch: str, img_size: int | tuple[int, int], train: bool = True, num_classes: int = 0) -> float:
    """FLOPs of one image through the bare ViT ``arch``: forward+backward (``train``) or forward."""
    model = _vit(arch, img_size, num_classes=num_classes)
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    images = torch.empty(COUNT_BATCH, 3, *size, device="meta")

    def step() -> None:
        if train:
            model(images).float().sum().backward()
        else:
            with torch.no_grad():
                model(images)

    return count_flops(step) / COUNT_BATCH


@lru_cache(maxsize=None)
def _pretrain_flops(method: str, arch: str, img_size: int, method_args_json: str) -> float:
    from benchmark.methods import build_method
    from benchmark.perf import synthetic_batch

    from benchmark.methods import method_class

    args = json.loads(method_args_json)
    if method_class(method).needs_labels:  # the engine sets it from the data; a 1000-way head is a rounding error
        args.setdefault("num_classes", 1000)
    if args.get("tokenizer") == "dall-e":  # no weights needed to count; the dVAE's cost is not counted
        args = {**args, "tokenizer": "random-patches", "tokenizer_weights": None}
    model = _to_meta(build_method(method, _vit(arch, img_size), **args))
    model.train()
    batch = _meta(synthetic_batch(model, img_size, COUNT_BATCH))

    def step() -> None:
        model(batch, torch.Generator().manual_seed(0))["loss"].backward()

    return count_flops(step) / COUNT_BATCH


def pretrain_flops_per_image(method: str, arch: str, img_size: int, method_args: dict[str, Any] | None = None) -> float:
    """FLOPs of one image's share of a pre-training step of ``method`` (forward+backward, all views)."""
    return _pretrain_flops(method, arch, int(img_size), json.dumps(method_args or {}, sort_keys=True))


# ----------------------------------------------------------------------------- per kind

def _sizes(config: dict[str, Any], dataset_sizes: dict[str, int] | None, default_name: str | None = None
           ) -> tuple[dict[str, int], str | None]:
    """(split -> images, where they came from): the caller's sizes, else the table's for the
    config's ``dataset`` (a named reader such as ``inat2019``) or ``default_name``."""
    if dataset_sizes:
        return dict(dataset_sizes), None
    name = config.get("dataset") or default_name
    if name in DATASET_SIZES:
        return dict(DATASET_SIZES[name]), f"sizes of {name}"
    return {}, None


def _finish(est: Estimate) -> Estimate:
    if est.train_flops is not None and est.eval_flops is not None:
        est.flops = est.train_flops + est.eval_flops
        est.gpu_hours = gpu_hours(est.flops)
    return est


def _unknown(kind: str, why: str, **known: Any) -> Estimate:
    return Estimate(kind, None, None, notes=[why], **known)


def _pretrain(config: dict[str, Any], dataset_sizes: dict[str, int] | None) -> Estimate:
    from benchmark.engine import config_from_dict
    from benchmark.pretrain import PretrainConfig, schedule_steps

    cfg = config_from_dict(PretrainConfig, {"data_root": "", **config})
    per_image = pretrain_flops_per_image(cfg.method, cfg.arch, cfg.img_size, cfg.method_args)
    if cfg.epochs is None:
        steps = cfg.steps
    else:
        sizes, _ = _sizes(config, dataset_sizes)
        if "train" not in sizes:
            return _unknown("pretrain", "epochs given but the number of images is unknown (pass dataset_sizes)",
                            flops_per_image=per_image)
        steps, _ = schedule_steps(cfg, max(1, round(sizes["train"] * cfg.fraction)))
    images = steps * cfg.batch_size
    return _finish(Estimate("pretrain", None, None, train_flops=images * per_image, eval_flops=0.0, steps=steps,
                            train_images=images, flops_per_image=per_image))


def _finetune(config: dict[str, Any], dataset_sizes: dict[str, int] | None) -> Estimate:
    from benchmark.engine import config_from_dict
    from benchmark.finetune import FinetuneConfig

    cfg = config_from_dict(FinetuneConfig, {"data_root": "", **config})
    sizes, source = _sizes(config, dataset_sizes)
    per_image = vit_flops(cfg.arch, cfg.img_size, True, 1000)
    if "train" not in sizes or "val" not in sizes:
        return _unknown("finetune", f"number of images unknown for dataset {cfg.dataset!r} (pass dataset_sizes)",
                        flops_per_image=per_image)
    subset = sizes["train"] if cfg.train_fraction == 1 else max(1, round(sizes["train"] * cfg.train_fraction))
    batch = min(cfg.batch_size, subset)
    steps = cfg.epochs * max(1, subset // batch)
    est = Estimate("finetune", None, None, train_flops=steps * batch * per_image,
                   eval_flops=sizes["val"] * vit_flops(cfg.arch, cfg.img_size, False, 1000), steps=steps,
                   train_images=steps * batch, flops_per_image=per_image, notes=[source] if source else [])
    return _finish(est)


def _probe(config: dict[str, Any], dataset_sizes: dict[str, int] | None) -> Estimate:
    from benchmark.engine import config_from_dict
    from benchmark.probe import ProbeConfig

    cfg = config_from_dict(ProbeConfig, {"data_root": "", **config})
    sizes, source = _sizes(config, dataset_sizes)
    forward = vit_flops(cfg.arch, cfg.img_size, False)
    if "train" not in sizes or "val" not in sizes:
        return _unknown("probe", f"number of images unknown for dataset {cfg.dataset!r} (pass dataset_sizes)")
    subset = sizes["train"] if cfg.train_fraction == 1 else max(1, round(sizes["train"] * cfg.train_fraction))
    passes = cfg.epochs if cfg.mode == "linear" and cfg.augment else 1
    steps = cfg.epochs * max(1, subset // min(cfg.batch_size, subset)) if cfg.mode == "linear" else 0
    notes = ["encoder forward only (frozen)"] + ([source] if source else [])
    est = Estimate("probe", None, None, train_flops=passes * subset * forward, eval_flops=sizes["val"] * forward,
                   steps=steps, train_images=passes * subset, flops_per_image=forward, notes=notes)
    return _finish(est)


def _short_sides(value: Any) -> list[int]:
    """Short sides of every ``scale`` / ``scales`` found in a (nested) MMEngine pipeline."""
    return [int(min(scale)) for scale in _all_scales(value)]


def _keep_ratio_size(scale: tuple[int, int], patch: int = 16) -> tuple[int, int]:
    """(h, w) of a DETECT_ASPECT image resized with keep_ratio into ``scale`` (long, short bounds),
    rounded down to whole patches."""
    long_max, short_max = max(scale), min(scale)
    short = min(short_max, long_max / DETECT_ASPECT)
    return max(patch, int(short) // patch * patch), max(patch, int(short * DETECT_ASPECT) // patch * patch)


def _find(value: Any, key: str) -> Any:
    """The first value of ``key`` in a nested dict/list structure, or None."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            hit = _find(item, key)
            if hit is not None:
                return hit
    return None


def _dense(kind: str, config: dict[str, Any], dataset_sizes: dict[str, int] | None, world_size: int | None) -> Estimate:
    from pathlib import Path

    from mmengine.config import Config

    path = Path(config["config"])
    if not path.is_absolute():
        path = Path(__file__).resolve().parent.parent / path
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
    test_scale = _find(cfg.test_dataloader.dataset.get("pipeline", []), "scale")
    notes = [f"backbone {arch} x head factor {HEAD_FACTOR[kind]}"]
    crop = _find(train_pipe, "crop_size") if kind == "segment" else None
    if crop is not None:
        train_size = (int(crop[0]) // 16 * 16, int(crop[1]) // 16 * 16)
    else:
        shorts = _short_sides(train_pipe) or test_scales
        longs = [max(s) for s in _all_scales(train_pipe)] or [max(test_scale)]
        short = sum(shorts) / len(shorts)
        train_size = _keep_ratio_size((max(longs), int(short)))
    eval_size = _keep_ratio_size(tuple(test_scale)) if test_scale is not None else train_size
    sizes, source = _sizes(config, dataset_sizes)
    if source:
        notes.append(source)
    if "max_iters" in train_cfg:
        iters = int(train_cfg.max_iters)
        images = iters * global_batch
        notes.append(f"global batch {global_batch}")
    else:
        if "train" not in sizes:
            return _unknown(kind, "number of training images unknown (pass dataset_sizes)")
        epochs = int(train_cfg.max_epochs)
        images = epochs * sizes["train"]
        iters = math.ceil(sizes["train"] / global_batch) * epochs
    if "val" not in sizes:
        return _unknown(kind, "number of validation images unknown (pass dataset_sizes)")
    interval = int(train_cfg.get("val_interval", 0) or 0)
    length = int(train_cfg.get("max_iters", train_cfg.get("max_epochs", 1)))
    evaluations = max(1, length // interval) if interval else 1
    factor = HEAD_FACTOR[kind]
    per_image = factor * vit_flops(arch, train_size, True)
    eval_flops = evaluations * sizes["val"] * factor * vit_flops(arch, eval_size, False)
    notes.append(f"train {train_size[0]}x{train_size[1]}, eval {eval_size[0]}x{eval_size[1]} px")
    est = Estimate(kind, None, None, train_flops=images * per_image, eval_flops=eval_flops, steps=iters,
                   train_images=images, flops_per_image=per_image, notes=notes)
    return _finish(est)


def _all_scales(value: Any) -> list[tuple[int, int]]:
    """Every ``scale`` / ``scales`` pair found in a (nested) MMEngine pipeline."""
    found: list[tuple[int, int]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "scale" and isinstance(item, (list, tuple)) and len(item) == 2:
                found.append(tuple(item))
            elif key == "scales" and isinstance(item, (list, tuple)):
                found += [tuple(s) for s in item if isinstance(s, (list, tuple)) and len(s) == 2]
            else:
                found += _all_scales(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found += _all_scales(item)
    return found


def _strip_refs(value: Any) -> Any:
    """An unresolved config with each ``{"ref", "file"}`` replaced by a placeholder path."""
    if isinstance(value, dict):
        if set(value) == {"ref", "file"}:
            return f"<{value['ref']}>/{value['file']}"
        return {k: _strip_refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_refs(v) for v in value]
    return value


def estimate(run_kind: str, config: dict[str, Any], dataset_sizes: dict[str, int] | None = None,
             world_size: int | None = None) -> Estimate:
    """The FLOPs and reference GPU-hours of one run of the driver.

    ``config`` is the run's (resolved or unresolved: paths are not read, except a detect/segment
    run's MMEngine config). ``dataset_sizes`` ({"train": n, "val": m}) gives the image counts of a
    path-only data set; named ones (a finetune/probe ``dataset`` in ``DATASET_SIZES``) are looked up.
    ``world_size`` (detect/segment only) overrides the recipe's global batch as per-GPU x world_size.
    ``data`` runs cost nothing on a GPU (0 FLOPs)."""
    config = _strip_refs(copy.deepcopy(config))
    if run_kind == "data":
        return Estimate("data", 0.0, 0.0, train_flops=0.0, eval_flops=0.0, notes=["CPU only"])
    if run_kind == "pretrain":
        return _pretrain(config, dataset_sizes)
    if run_kind == "finetune":
        config.pop("tags", None)
        return _finetune(config, dataset_sizes)
    if run_kind == "probe":
        config.pop("tags", None)
        return _probe(config, dataset_sizes)
    if run_kind in ("detect", "segment"):
        return _dense(run_kind, config, dataset_sizes, world_size)
    return _unknown(run_kind, f"no estimate for run kind {run_kind!r}")
