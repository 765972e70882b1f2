"""Self-supervised pre-training of a timm ViT with one of the suite's methods.

    python -m benchmark.pretrain --config CONFIG.json --out RUN_DIR [--resume auto|never]

A run directory holds ``config.json`` (the resolved config), ``log.jsonl``, ``checkpoint.pth``
(the whole training state, rewritten atomically every ``checkpoint_every`` steps) and, once
finished, ``encoder.safetensors`` (the encoder alone, loadable by timm's ViT of the same size).

Killed at any moment, a run started again resumes from its checkpoint and ends with the same
weights. SIGTERM (or SIGUSR2) makes it finish the current step, write its checkpoint and exit with
code 75 (docs/faults.md). Bad input is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from benchmark.data.augment import EVAL_CROP, Augmentation, eval_transform
from benchmark.data.batch_views import BatchViews, DeviceBatches, DeviceImages
from benchmark.data.classification import READERS, load_classification
from benchmark.data.device_decode import DeviceAugment, EncodedImages, collate_encoded
from benchmark.data.folders import (
    SKIPPED,
    EpochSampler,
    ImageFiles,
    SeededTransform,
    fraction_subset,
    image_folder,
    mix_seed,
    skipped_images,
)
from benchmark.data.loader import make_loader, resolve_workers
from benchmark.errors import CheckpointError, ConfigError, DataError, error_line
from benchmark.methods import METHODS, method_class
from benchmark.methods.base import supports_device_decode
from benchmark.methods.flops import pretrain_flops_per_image
from benchmark.models.checkpoints.export import check_export, encoder_state_dict, save_encoder
from benchmark.models.vit import ARCHS, create_vit, model_spec, patch_size
from benchmark.stages import cost
from benchmark.stages.cli import stage_main
from benchmark.stages.kinds import RunKind, register_kind
from benchmark.training.checkpoint import CHECKPOINT, TrainingCheckpoint, finished, load_state
from benchmark.training.config import (
    at_least,
    check_kwargs,
    config_from_dict,
    device_name,
    in_unit,
    one_of,
    optional,
    positive,
    validate,
    workers,
    write_config,
)
from benchmark.training.distributed import barrier
from benchmark.training.loop import train
from benchmark.training.monitor import KnnMonitor
from benchmark.training.optim import build_optimizer, build_scheduler, set_weight_decay
from benchmark.training.runtime import autocast, compile_blocks, start_run
from benchmark.training.stop import stop_signals_blocked
from benchmark.utils.device import to_device
from benchmark.utils.lock import main_process

FIT_BATCHES = 8  # micro-batches of plain (unaugmented) images a method's prepare() fits on
ENCODER = "encoder.safetensors"


@dataclass
class PretrainConfig:
    data_root: str                       # a folder of images; an ImageFolder for methods that use labels
    dataset: str = "folder"              # "folder", or a classification format (benchmark.data.classification),
                                         # whose train split is pre-trained on (DomainNet: its train list only)
    method: str = "splitmask"
    method_args: dict = field(default_factory=dict)
    arch: str = "vit-s16"
    img_size: int = 224
    fraction: float = 1.0                # deterministic subset of the images
    steps: int = 1000                    # optimiser steps (schedules are in iterations) ...
    epochs: float | None = None          # ... or passes over the subset: steps = epochs x images / batch_size
    warmup_epochs: float | None = None   # warm-up in passes over the subset instead of warmup_steps
    batch_size: int = 256                # global batch
    accum_steps: int = 1                 # gradient accumulation: micro-batch = batch_size / accum_steps
    blr: float = 1.5e-3                  # base learning rate for a batch of 256 (lr = blr * batch / 256)
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    clip_grad: float = 3.0
    drop_path: float = 0.1
    crop_scale_min: float = 0.08         # RandomResizedCrop scale range [min, max]
    crop_scale_max: float = 1.0
    color_jitter: float = 0.4
    hflip: float = 0.5                   # horizontal flip probability (0 where a flip changes the class)
    seed: int = 0
    num_workers: int = -1                # -1: default_workers() (0 on a CPU; on a GPU, per core)
    decode_on_device: bool = False       # decode JPEGs on the GPU with torchvision's decode_jpeg and augment
                                         # there: for when the CPU cannot keep up (single-crop methods only)
    images_on_device: bool = False       # hold the whole (subset of the) data set on the training device and make
                                         # each batch's views there (benchmark.data.batch_views): small sets on a GPU
    compile: bool = False                # torch.compile each transformer block (training.runtime.compile_blocks): measure
                                         # it first with python -m benchmark.perf --compile
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "auto"
    # The online k-NN monitor (benchmark.training.monitor): every monitor_every steps (0: off), the
    # k-NN top-1 of monitor_bank labelled train images classifying monitor_queries val images of the
    # classification data set monitor_root (format monitor_dataset), logged to log.jsonl.
    monitor_every: int = 0
    monitor_root: str | None = None
    monitor_dataset: str = "imagefolder"
    monitor_bank: int = 1000
    monitor_queries: int = 1000
    monitor_crop: float = EVAL_CROP      # the centre crop's share of the image side (1.0: the whole image)

    EXCLUSIVE: ClassVar = (("steps", "epochs"), ("warmup_steps", "warmup_epochs"))
    RULES: ClassVar = {
        "dataset": one_of(["folder", *READERS]), "arch": one_of(ARCHS),  # method: checked by its registry
        "img_size": at_least(1), "fraction": in_unit(), "steps": at_least(1), "epochs": optional(positive()),
        "warmup_epochs": optional(at_least(0)), "batch_size": at_least(1), "accum_steps": at_least(1),
        "blr": positive(), "min_lr": at_least(0), "warmup_steps": at_least(0), "weight_decay": at_least(0),
        "clip_grad": at_least(0), "drop_path": in_unit(zero=True, one=False),
        "crop_scale_min": in_unit(), "crop_scale_max": in_unit(), "color_jitter": at_least(0),
        "hflip": in_unit(zero=True), "seed": at_least(0), "num_workers": workers(),
        "checkpoint_every": at_least(1), "log_every": at_least(1), "device": device_name(),
        "monitor_every": at_least(0), "monitor_dataset": one_of(READERS), "monitor_bank": at_least(1),
        "monitor_queries": at_least(1), "monitor_crop": in_unit(),
    }

    def relations(self) -> list[str]:
        problems = []
        if self.monitor_every and not self.monitor_root:
            problems.append(f"monitor_every = {self.monitor_every} needs monitor_root (a labelled data set)")
        if self.img_size % patch_size(self.arch):
            problems.append(f"img_size = {self.img_size} is not a multiple of {self.arch}'s patch size "
                            f"{patch_size(self.arch)}")
        if self.crop_scale_min > self.crop_scale_max:
            problems.append(f"crop_scale_min = {self.crop_scale_min} is above crop_scale_max = {self.crop_scale_max}")
        if self.images_on_device and self.decode_on_device:
            problems.append("images_on_device and decode_on_device exclude each other (the images are held decoded)")
        if self.batch_size % self.accum_steps:
            problems.append(f"batch_size = {self.batch_size} is not divisible by accum_steps = {self.accum_steps}")
        return problems

    def check_named(self) -> None:
        """The method against the registry, and its arguments against the method's own ``RULES``
        (a config file that names them is refused when it is read, naming the file)."""
        try:
            method_cls = method_class(self.method)
        except ValueError as err:
            raise ConfigError(f"PretrainConfig.method: {err}") from None
        check_kwargs(method_cls, self.method_args, f"PretrainConfig.method_args of {self.method}", skip=("encoder",))

    @property
    def lr(self) -> float:
        return self.blr * self.batch_size / 256


def device_decode_methods() -> list[str]:
    """The methods whose augmentation ``decode_on_device`` reproduces on the device."""
    return [name for name in METHODS if supports_device_decode(method_class(name))]


def _images(cfg: PretrainConfig, needs_labels: bool) -> tuple[Dataset, list[int] | None]:
    """The pre-training images and the labels that pick the subset: an ImageFolder (with labels)
    or every image below a folder. Self-supervised methods never see labels, but where the folder
    is an ImageFolder (every image in a class folder just below the root, not hidden) its class
    folders still balance the subset, so that every method, supervised included, pre-trains on
    the same images for a given fraction and seed. A classification format (``dataset``) gives
    its train split, so that pre-training never sees the images a table is evaluated on."""
    if cfg.dataset != "folder":
        train = load_classification(cfg.dataset, cfg.data_root, "train")
        return train, train.targets
    if needs_labels:
        folder = image_folder(cfg.data_root)
        return folder, folder.targets
    files = ImageFiles(cfg.data_root)
    root = files.root.resolve()
    parents = [f.resolve().parent for f in files.files]
    if all(p.parent == root and not p.name.startswith(".") for p in parents):
        classes = {name: i for i, name in enumerate(sorted({p.name for p in parents}))}
        return files, [classes[p.name] for p in parents]
    return files, None


def schedule_steps(cfg: PretrainConfig, images: int) -> tuple[int, int]:
    """(total, warm-up) optimiser steps: ``steps`` and ``warmup_steps``, or from ``epochs`` and
    ``warmup_epochs`` over ``images`` images. The paper holds the number of iterations constant
    across ImageNet subsets (300 epochs of 100% = 3,000 of 10%); steps express that directly."""
    per_epoch = images / cfg.batch_size
    total = cfg.steps if cfg.epochs is None else max(1, round(cfg.epochs * per_epoch))
    warmup = cfg.warmup_steps if cfg.warmup_epochs is None else round(cfg.warmup_epochs * per_epoch)
    if cfg.epochs is not None and cfg.epochs <= 0:
        raise ConfigError(f"epochs must be positive, got {cfg.epochs}")
    return total, min(warmup, total)


def fit_cache(cfg: PretrainConfig, images: Dataset, fitted: list[int], out: Path) -> Path:
    """Where a method may cache what it fits on the images ``fitted`` (indices into ``images``),
    as a path prefix beside the data set: ``<data_root>/../.sslbench-cache/<name>-fit-<hash>``
    (outside the data root, where an ImageFolder reader would take it for a class), or in the run
    directory where that is read-only. The hash covers those files (path, size, modification
    time) and the transform that turns them into tensors, so changed images are never served stale.
    A data set read into memory from a system folder (Fashion-MNIST: ``content_key``) is hashed by
    its pixels and cached in the run directory."""
    root = Path(cfg.data_root).resolve()
    digest = hashlib.sha256(json.dumps({"img_size": cfg.img_size, "transform": "resize-center-crop-1.0-normalize"}).encode())
    if hasattr(images, "content_key"):
        for i in fitted:
            digest.update(images.content_key(i))
        return out / f"{root.name}-fit-{digest.hexdigest()[:16]}"
    paths = [Path(images.samples[i][0]) if hasattr(images, "samples") else images.files[i] for i in fitted]
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve().relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    folder = root.parent / ".sslbench-cache"
    try:
        folder.mkdir(exist_ok=True)
        writable = os.access(folder, os.W_OK)
    except OSError:
        writable = False
    return (folder if writable else out) / f"{root.name}-fit-{digest.hexdigest()[:16]}"


def whole_export(path: Path) -> Path:
    """``path``, the export of a finished run, once checked to hold the encoder of the run's
    checkpoint (where that checkpoint can be read); :class:`CheckpointError` if not."""
    try:
        model = load_state(path.parent / CHECKPOINT, mmap=True)["model"]
    except CheckpointError:  # no checkpoint (or none readable) to compare with: the export's own checks
        model = None
    prefix = "encoder."  # the method's encoder (Method.encoder), whose head the export leaves out
    encoder = None if model is None else {k[len(prefix):]: v for k, v in model.items()
                                          if k.startswith(prefix) and not k.startswith(prefix + "head.")}
    check_export(path, encoder)
    return path


def pretrain(cfg: PretrainConfig, out_dir: str | Path, resume: bool = True) -> Path:
    """Runs (or resumes, or skips if finished) a pre-training; returns the encoder export.

    Under torchrun each process trains on its share of every global batch (DDP); rank 0 alone
    writes the log, the checkpoints and the export.
    """
    # ============ a finished run: nothing to do ============
    out = Path(out_dir)
    validate(cfg)
    # A finished run's export must hold its checkpoint's encoder; a damaged one is written again:
    # the run resumes from its checkpoint, at its last step, and exports.
    redo = (f"exporting it again from {out / CHECKPOINT}" if (out / CHECKPOINT).is_file() else
            f"{out / CHECKPOINT} is gone: pre-training again")
    if finished(out, ENCODER, cfg, "pretrain", whole_export, redo):
        return out / ENCODER
    # ============ checking the method and the data ============
    # The method and the data are checked first: bad input stops the run before it writes anything.
    method_cls = method_class(cfg.method)  # it and its arguments: checked with the config (validate)
    if cfg.decode_on_device and not supports_device_decode(method_cls):
        raise ConfigError(f"decode_on_device supports the methods of the single-crop augmentation only "
                          f"({', '.join(device_decode_methods())}), not {cfg.method}")
    images, labels = _images(cfg, method_cls.needs_labels)
    subset = fraction_subset(len(images), cfg.fraction, cfg.seed, labels=labels)
    if len(subset) < cfg.batch_size:
        raise DataError(f"{cfg.data_root}: {len(subset)} images after the {cfg.fraction:g} subset, "
                        f"fewer than one batch of {cfg.batch_size}")
    encoded = EncodedImages(images, cfg.seed, subset) if cfg.decode_on_device else None  # JPEGs only
    monitor = None
    if cfg.monitor_every and main_process():
        monitor = KnnMonitor(cfg.monitor_root, cfg.monitor_dataset, cfg.img_size, cfg.monitor_bank, cfg.monitor_queries,
                             crop=cfg.monitor_crop, seed=cfg.seed)
    # ============ the processes and the device ============
    device, ctx = start_run(cfg, out, save_config=False)
    workers = resolve_workers(cfg.num_workers, ctx.local_world_size, device)
    if cfg.batch_size % (cfg.accum_steps * ctx.world_size):
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by accum_steps x processes "
                          f"= {cfg.accum_steps} x {ctx.world_size}")
    micro = cfg.batch_size // (cfg.accum_steps * ctx.world_size)

    # ============ building the method and its optimizer ============
    method_args = dict(cfg.method_args)
    if method_cls.needs_labels:
        method_args.setdefault("num_classes", len(images.classes))

    total_steps, warmup_steps = schedule_steps(cfg, len(subset))
    encoder = create_vit(cfg.arch, cfg.img_size, drop_path_rate=cfg.drop_path)
    method = method_cls(encoder, **method_args).to(device)
    aug = Augmentation(cfg.img_size, (cfg.crop_scale_min, cfg.crop_scale_max), cfg.color_jitter, cfg.hflip)
    specs = method.view_specs(aug) if cfg.images_on_device else None  # before anything is written: a ConfigError
    if ctx.distributed and device.type == "cuda":
        # Batch norm (BYOL's MLPs) over the global batch, as BYOL trains; gloo has no SyncBN.
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if cfg.compile:
        print(f"[pretrain] compiling {compile_blocks(method)} transformer blocks (first steps are slow)", file=sys.stderr)
    optimizer = build_optimizer(method, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, total_steps, warmup_steps, cfg.min_lr)
    checkpoint = TrainingCheckpoint(out, cfg, method, optimizer, scheduler, resume)
    if ctx.is_main:  # once the checkpoint, if any, was found to be of this config
        write_config(out / "config.json", cfg)
    # ============ resuming, or fitting the data-dependent parts ============
    if checkpoint.resumed:
        print(f"[pretrain] resuming {out} at step {checkpoint.start}/{total_steps}", file=sys.stderr)
    else:  # data-dependent parts (a tokenizer's codebook), identical on every process
        # the whole images, un-augmented
        plain = SeededTransform(images, eval_transform(cfg.img_size, 1.0), cfg.seed, subset, skip_log=out / SKIPPED)
        fit_loader = make_loader(plain, micro, device=device, num_workers=workers)
        method.prepare((batch.to(device) for batch, _ in itertools.islice(fit_loader, FIT_BATCHES)),
                       cache=fit_cache(cfg, images, subset[: FIT_BATCHES * micro], out))
        del fit_loader  # its workers stop here

    # ============ the data stream ============
    start = checkpoint.start * cfg.batch_size  # the samples an interrupted run had consumed
    if cfg.images_on_device:
        # The subset held on the device, each micro-batch's views made there (data.batch_views).
        store = DeviceImages.from_dataset(images, subset, device, workers=workers, skip_log=out / SKIPPED)
        next_batch = DeviceBatches(store, BatchViews(specs, labels=method.needs_labels), cfg.seed, micro, start=start,
                                   rank=ctx.rank, num_replicas=ctx.world_size)
    else:
        # With decode_on_device the workers read JPEG bytes and the step decodes and augments them.
        augment = DeviceAugment(aug) if encoded is not None else None
        data = encoded if encoded is not None else SeededTransform(images, method.train_transform(aug), cfg.seed, subset,
                                                                   skip_log=out / SKIPPED)
        sampler = EpochSampler(len(data), cfg.seed, start=start, rank=ctx.rank, num_replicas=ctx.world_size)
        with stop_signals_blocked():  # workers started here ignore the trainer's stop signals
            loader = iter(make_loader(data, micro, device=device, num_workers=workers, sampler=sampler, drop_last=True,
                                      collate_fn=collate_encoded if augment is not None else None))

        def next_batch(index: int, micro_step: int) -> Any:
            if augment is not None:
                encoded_batch = next(loader)
                batch, labels = augment(encoded_batch.images(), encoded_batch.seeds, device), encoded_batch.labels
            else:
                batch, labels = next(loader)
            return to_device((batch, labels) if method.needs_labels else batch, device)

    # ============ training ============
    checkpoint.restore_rng()  # only now: creating the loader's iterator above drew from the global RNG
    model = DistributedDataParallel(method) if ctx.distributed else method
    method.train()
    generator = torch.Generator()

    def step(index: int, micro_step: int) -> dict[str, torch.Tensor]:
        if micro_step == 0:  # the method's own randomness (masks, splits): one stream per step and process
            generator.manual_seed(mix_seed(cfg.seed, index, ctx.rank))
        batch = next_batch(index, micro_step)
        with autocast(device):
            return model(batch, generator)

    def before_update(index: int) -> None:
        if cfg.clip_grad > 0:
            method.clip_gradients(cfg.clip_grad)
        method.before_optimizer_step(index, total_steps)
        set_weight_decay(optimizer, method.weight_decay_at(index, total_steps, cfg.weight_decay))

    train(step, checkpoint, total=total_steps, batch_size=cfg.batch_size, what="pre-training",
          desc=f"pretrain {cfg.method}", out=out, ctx=ctx, log_every=cfg.log_every,
          checkpoint_every=cfg.checkpoint_every, accum_steps=cfg.accum_steps, ddp=model if ctx.distributed else None,
          before_update=before_update, after_update=lambda index: method.after_step(index, total_steps),
          monitor=(lambda: monitor(method.encoder)) if monitor is not None else None, monitor_every=cfg.monitor_every)
    # ============ exporting the encoder ============
    skipped = skipped_images(out / SKIPPED)
    if ctx.is_main and skipped:
        print(f"[pretrain] {len(skipped)} corrupt images skipped, listed in {out / SKIPPED}", file=sys.stderr)
    if ctx.is_main:
        export = save_encoder(method.encoder, model_spec(cfg.arch, cfg.img_size), out / ENCODER)
        try:  # done only once the export reads back as the encoder
            check_export(export, encoder_state_dict(method.encoder))
        except CheckpointError as err:
            export.unlink()
            raise CheckpointError(f"{error_line(err)}; removed it: run the same command again to export again") from None
    barrier(ctx)
    return out / ENCODER


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    return stage_main("pretrain", "Self-supervised pre-training of a ViT.", PretrainConfig, pretrain,
                      lambda path: f"[pretrain] wrote {path} in {time.time() - started:.0f}s", argv)


def estimate(config: dict[str, Any], dataset_sizes: dict[str, int] | None = None, world_size: int | None = None
             ) -> cost.Estimate:
    """FLOPs of the whole run: the method's step per image (:mod:`benchmark.models.flops`) times
    the images of its :func:`schedule_steps` (images counted where epochs are given)."""
    cfg = config_from_dict(PretrainConfig, {"data_root": "", **config})
    per_image = pretrain_flops_per_image(cfg.method, cfg.arch, cfg.img_size, cfg.method_args)
    if cfg.epochs is None:
        steps = cfg.steps
    else:
        sizes, _ = cost.sizes_of(config, dataset_sizes)
        if "train" not in sizes:
            return cost.unknown("pretrain", f"epochs given but the number of images is unknown ({cost.UNKNOWN_COUNT})",
                                flops_per_image=per_image)
        steps, _ = schedule_steps(cfg, max(1, round(sizes["train"] * cfg.fraction)))
    images = steps * cfg.batch_size
    return cost.finish(cost.Estimate("pretrain", None, None, train_flops=images * per_image, eval_flops=0.0, steps=steps,
                                     train_images=images, flops_per_image=per_image))


KIND = register_kind(RunKind(
    "pretrain", run=lambda config, run_dir: pretrain(config_from_dict(PretrainConfig, config), run_dir),
    done_file=lambda config: ENCODER, command="benchmark.pretrain", multi_process=True, estimate=estimate,
    timeout_min=72 * 60,
))
