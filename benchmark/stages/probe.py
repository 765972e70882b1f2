"""Frozen-feature evaluation of a (pre-trained or random) ViT: linear probing and weighted k-NN.

    python -m benchmark.probe --config CONFIG.json --out RUN_DIR

The data root holds the splits of :func:`benchmark.data.classification.load_classification`
(``train/<class>/*`` and ``val/<class>/*`` for an ImageFolder). The encoder is frozen throughout
(eval mode, no gradients, its weights never change); its pooled feature is the class token after
the final norm (:func:`benchmark.models.vit.pooled_features`).

- ``mode="linear"`` (MAE's linear probe): ``BatchNorm1d(dim, affine=False, eps=1e-6)`` then a
  ``Linear(dim, num_classes)`` (weights truncated-normal, std 0.01; bias 0) trained with
  cross-entropy; LARS (timm's, with MAE's grouping: the trust ratio on the weight matrix only)
  at lr = blr * batch / 256, blr 0.1, no weight decay, 90 epochs, 10 of warm-up, cosine.
  Training images get RandomResizedCrop + horizontal flip. With ``augment=False`` the frozen
  features of the un-augmented training images (resize + centre crop) are computed once and the
  head is trained on those cached features: one encoder pass in all instead of one per epoch,
  much cheaper on CPU, at the price of no augmentation.
- ``mode="knn"`` (DINO's weighted k-NN): L2-normalised features of the training and validation
  images (no augmentation); each validation image takes its ``k`` nearest training features by
  cosine similarity and each of them votes for its class with weight ``exp(similarity / T)``.
  Similarities are computed in blocks of queries x training features, so a training set of any
  size needs only its features in memory. ``k`` and, where cheap, k = 10 are reported.

Writes ``RUN_DIR/result.json`` (kind ``linear`` or ``knn``) with top-1 (and top-5 with more than
five classes) on the validation split; the linear probe also writes its trained head's state
(tensors only) to ``RUN_DIR/head.pth``.

Under torchrun (``python -m torch.distributed.run --nproc_per_node N -m benchmark.probe ...``) the
probe runs on N processes as pre-training does (:mod:`benchmark.training.distributed`), with the same
results as one process:

- feature extraction: each process encodes its share of the images (items ``rank::N``, in batches
  of ``batch_size / N``); the training features and labels are then gathered, in the original
  order, on every process (the k-NN bank, the linear probe's cached features);
- the linear head trains under DDP, each process on its share of every global batch of
  ``batch_size`` (which must be divisible by N); the frozen encoder is not wrapped (it has no
  gradients). Its BatchNorm1d normalises with the statistics of the *global* batch (the
  processes' sums are all-reduced, on CPUs/gloo as on GPUs/nccl), so the head takes exactly the
  steps one process takes. MAE's probe leaves the BN unsynchronised (per-GPU statistics); we sync
  it so that the result does not depend on the number of processes;
- evaluation is sharded: each process scores its share of the validation images and the counts
  of correct predictions are summed over the processes (integers: the same metrics exactly);
- rank 0 alone writes the logs, ``head.pth`` and ``result.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn as nn
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.optim import create_optimizer_v2, list_optimizers
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset
from torchvision import transforms

from benchmark.data.augment import EVAL_CROP, eval_transform
from benchmark.data.classification import READERS, Transformed, load_splits
from benchmark.data.folders import EpochSampler, SeededTransform, fraction_subset
from benchmark.data.loader import make_loader, resolve_workers
from benchmark.errors import ConfigError
from benchmark.models.checkpoints.export import checkpoint_pool_kwargs, load_pretrained
from benchmark.models.flops import vit_flops
from benchmark.models.vit import ARCHS, create_vit, downstream_kwargs
from benchmark.stages import cost
from benchmark.stages.cli import stage_main
from benchmark.stages.kinds import RunKind, register_kind
from benchmark.training.checkpoint import TrainingCheckpoint, evaluate_again, finished
from benchmark.training.config import (
    Rule,
    at_least,
    config_from_dict,
    device_name,
    in_unit,
    one_of,
    positive,
    validate,
    workers,
    write_config,
)
from benchmark.training.distributed import Context, barrier
from benchmark.training.features import (
    SINGLE,
    encode,
    extract_features,
    extraction_steps,
    freeze,
    knn_classify,
    topk_metrics,
)
from benchmark.training.log import RunLog
from benchmark.training.loop import train
from benchmark.training.optim import build_scheduler
from benchmark.training.runtime import start_run
from benchmark.training.stop import stop_signals_blocked
from benchmark.utils.io import torch_save
from benchmark.utils.results import RESULT_FILE, load_result, write_result

MODES = ("linear", "knn")
LARS_FAMILY = ("lars", "larc", "nlars", "nlarc")
HEAD_FILE = "head.pth"  # the linear probe's trained head (state dict, tensors only)


@dataclass
class ProbeConfig:
    data_root: str
    dataset: str = "imagefolder"         # the data set's format (benchmark.data.classification.READERS)
    checkpoint: str | None = None        # an encoder export; None = random initialisation
    arch: str = "vit-s16"
    img_size: int = 224
    mode: str = "linear"                 # "linear" (MAE's linear probe) | "knn" (DINO's weighted k-NN)
    train_fraction: float = 1.0          # class-balanced subset of the training labels (both modes)
    eval_split: str = "val"              # the split result.json reports: "val", or "test" (classification.WITH_TEST_SPLIT)
    # linear probe
    epochs: int = 90
    batch_size: int = 256                # also the batch of feature extraction
    optimizer: str = "lars"              # any timm optimiser name; LARS as MAE
    blr: float = 0.1                     # lr = blr * batch_size / 256
    min_lr: float = 0.0
    warmup_epochs: float = 10.0
    weight_decay: float = 0.0
    augment: bool = True                 # False: train the head on cached features of un-augmented images
    crop_scale_min: float = 0.08         # RandomResizedCrop scale = (crop_scale_min, 1)
    eval_crop: float = EVAL_CROP         # un-augmented images: the centre crop's share of the side (1.0: whole)
    # k-NN
    k: int = 20
    temperature: float = 0.07
    knn_chunk: int = 256                 # validation images per similarity block
    seed: int = 0
    num_workers: int = -1                # -1: default_workers() (0 on a CPU; on a GPU, per core)
    log_every: int = 10
    checkpoint_every: int = 1000         # linear probe: steps between training checkpoints (resume)
    device: str = "auto"
    tags: dict = field(default_factory=dict)   # free-form labels for the report (method, data, ...)

    RULES: ClassVar = {
        "dataset": one_of(READERS), "arch": one_of(ARCHS), "img_size": at_least(1), "mode": one_of(MODES),
        "train_fraction": in_unit(), "eval_split": one_of(["val", "test"]), "epochs": at_least(0),
        "batch_size": at_least(1), "optimizer": Rule(lambda v: v in list_optimizers(), "a timm optimiser "
                                                     "(timm.optim.list_optimizers())"),
        "blr": positive(), "min_lr": at_least(0), "warmup_epochs": at_least(0), "weight_decay": at_least(0),
        "crop_scale_min": in_unit(), "eval_crop": in_unit(), "k": at_least(1), "temperature": positive(),
        "knn_chunk": at_least(1),
        "seed": at_least(0), "num_workers": workers(), "log_every": at_least(1), "checkpoint_every": at_least(1),
        "device": device_name(),
    }


# ----------------------------------------------------------------------------- the frozen encoder


def build_encoder(cfg: ProbeConfig) -> nn.Module:
    """The headless ViT of ``cfg`` (checkpoint loaded, or random), frozen: eval mode, no grad."""
    encoder = create_vit(cfg.arch, cfg.img_size, num_classes=0, **downstream_kwargs(cfg.arch),
                         **checkpoint_pool_kwargs(cfg.checkpoint))
    if cfg.checkpoint:
        load_pretrained(encoder, cfg.checkpoint, cfg.arch)
    return freeze(encoder)


def probe_train_transform(img_size: int, crop_scale_min: float = 0.08):
    """MAE's linear-probe augmentation: RandomResizedCrop (bicubic) + horizontal flip."""
    return transforms.Compose([
        transforms.RandomResizedCrop(img_size, scale=(crop_scale_min, 1.0),
                                     interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    ])


# ----------------------------------------------------------------------------- linear probe


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over the global batch: in training mode under a process group, each
    process's sums are all-reduced (differentiably, as SyncBatchNorm does) so that every
    process normalises with the mean and (biased) variance of the whole batch and updates its
    running statistics with them, exactly as one process over that batch would. Unlike
    :class:`torch.nn.SyncBatchNorm` it works with gloo on CPUs too. Without a process group, or
    in eval mode, a plain BatchNorm1d (same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        count = torch.full((1,), float(x.shape[0]), dtype=x.dtype, device=x.device)
        summed = all_reduce(torch.cat([x.sum(0), count]))
        n = summed[-1]
        mean = summed[:-1] / n
        var = all_reduce(((x - mean) ** 2).sum(0)) / n  # two passes: no E[x^2] - E[x]^2 cancellation
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                self.running_var.mul_(1 - factor).add_(factor * unbiased.detach())
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y


def make_head(dim: int, num_classes: int, synchronised: bool = False) -> nn.Sequential:
    """MAE's probe head: BatchNorm1d without affine parameters, then a Linear layer
    (weights truncated-normal with std 0.01, bias 0). ``synchronised``: the BN normalises with
    the global batch's statistics under torchrun (:class:`GlobalBatchNorm1d`)."""
    linear = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    bn = (GlobalBatchNorm1d if synchronised else nn.BatchNorm1d)(dim, affine=False, eps=1e-6)
    return nn.Sequential(bn, linear)


def build_head_optimizer(head: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """timm's optimiser ``name`` for the head. The LARS family follows MAE's LARS: weight decay
    and the trust ratio on matrices only (``always_adapt``, so also without weight decay);
    biases get plain momentum SGD. Other optimisers: timm's grouping (no decay on biases)."""
    if name in LARS_FAMILY:
        matrices = [p for p in head.parameters() if p.ndim > 1]
        vectors = [p for p in head.parameters() if p.ndim <= 1]
        groups = [{"params": matrices, "weight_decay": weight_decay, "always_adapt": True},
                  {"params": vectors, "weight_decay": 0.0, "always_adapt": False}]
        return create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=weight_decay)
    return create_optimizer_v2(head, opt=name, lr=lr, weight_decay=weight_decay)


def linear_probe(
    cfg: ProbeConfig, encoder: nn.Module, train_set: Dataset, val_set: Dataset, device: torch.device,
    out: Path, ctx: Context = SINGLE, resume: bool = True,
) -> tuple[dict[str, float], nn.Sequential]:
    """Trains the probe head on the frozen ``encoder`` (features of ``train_set``; the
    ``train_fraction`` subset) and returns its validation metrics and the head. Writes the
    training log to ``out/log.jsonl`` and feature-extraction progress to ``out/features.jsonl``
    (rank 0 alone under torchrun, where the head trains under DDP: module docstring)."""
    freeze(encoder)
    workers = resolve_workers(cfg.num_workers, ctx.local_world_size, device)
    num_classes = len(train_set.classes)
    subset = fraction_subset(len(train_set), cfg.train_fraction, cfg.seed, labels=train_set.targets)
    batch = min(cfg.batch_size, len(subset))  # global
    if batch % ctx.world_size:
        raise ConfigError(f"batch size {batch} is not divisible by the {ctx.world_size} processes")
    micro = batch // ctx.world_size
    steps_per_epoch = max(1, len(subset) // batch)
    total = cfg.epochs * steps_per_epoch
    val_data = Transformed(val_set, eval_transform(cfg.img_size, cfg.eval_crop))
    train_steps = 0 if cfg.augment else extraction_steps(len(subset), batch, ctx)
    flog = None
    if ctx.is_main:
        flog = RunLog(out / "features.jsonl", train_steps + extraction_steps(len(val_data), batch, ctx), 0,
                      desc="features", every=cfg.log_every)
    try:
        cached = None
        if not cfg.augment:
            plain = Transformed(Subset(train_set, subset), eval_transform(cfg.img_size, cfg.eval_crop))
            cached = extract_features(encoder, plain, batch, device, workers, flog, ctx=ctx)
        # Each process keeps its share of the validation features: evaluation is sharded.
        val_feats, val_labels = extract_features(encoder, val_data, batch, device, workers, flog, train_steps,
                                                 ctx=ctx, gather=False)
    finally:
        if flog:
            flog.close()

    head = make_head(encoder.num_features, num_classes, synchronised=ctx.distributed).to(device)
    lr = cfg.blr * batch / 256
    optimizer = build_head_optimizer(head, cfg.optimizer, lr, cfg.weight_decay)
    # MAE's linear probe sets its lr per iteration from a fractional epoch: its warm-up rule, unrounded.
    scheduler = build_scheduler(optimizer, total, cfg.warmup_epochs * steps_per_epoch, cfg.min_lr, warmup_rule="mae")
    checkpoint = TrainingCheckpoint(out, cfg, head, optimizer, scheduler, resume)
    if ctx.is_main:  # once the checkpoint, if any, was found to be of this config
        write_config(out / "config.json", cfg)
    # The same sample order on both paths: this process's share of each global batch.
    sampler = EpochSampler(len(subset), cfg.seed, start=checkpoint.start * batch, rank=ctx.rank,
                           num_replicas=ctx.world_size)
    if cached is None:
        data = SeededTransform(train_set, probe_train_transform(cfg.img_size, cfg.crop_scale_min), cfg.seed, subset)
        with stop_signals_blocked():  # workers started here ignore the trainer's stop signals
            loader = iter(make_loader(data, micro, device=device, num_workers=workers, sampler=sampler, drop_last=True))
    else:
        order = iter(sampler)
    checkpoint.restore_rng()
    # The frozen encoder stays outside DDP (no gradients); DDP averages the head's gradients.
    trained = DistributedDataParallel(head) if ctx.distributed else head
    criterion = nn.CrossEntropyLoss()
    head.train()

    def step(index: int, micro_step: int) -> dict[str, torch.Tensor]:
        if cached is None:
            images, labels = next(loader)
            feats, labels = encode(encoder, images, device), labels.to(device, non_blocking=True)
        else:
            rows = torch.tensor([next(order)[1] for _ in range(micro)], device=device)
            feats, labels = cached[0][rows], cached[1][rows]
        logits = trained(feats)
        accuracy = (logits.detach().argmax(-1) == labels).float().mean()
        return {"loss": criterion(logits, labels), "train_acc": accuracy}

    train(step, checkpoint, total=total, batch_size=batch, what="linear probing", desc="linear", out=out, ctx=ctx,
          log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, ddp=trained if ctx.distributed else None)
    head.eval()
    with torch.no_grad():
        metrics = topk_metrics(head(val_feats), val_labels, num_classes, ctx)
    return metrics, head


def head_state(head: nn.Module) -> dict[str, torch.Tensor]:
    """The head's state dict on the CPU (tensors only: ``torch.load(weights_only=True)`` reads it)."""
    return {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}


# ----------------------------------------------------------------------------- weighted k-NN


def knn_probe(
    cfg: ProbeConfig, encoder: nn.Module, train_set: Dataset, val_set: Dataset, device: torch.device, out: Path,
    ctx: Context = SINGLE,
) -> dict[str, float]:
    """DINO's weighted k-NN evaluation of the frozen ``encoder``. Metrics ``top1``/``top5`` for
    ``cfg.k``, and ``top1_k10``/``top5_k10`` besides when ``cfg.k`` is not 10. Under torchrun the
    training features (the bank) are gathered on every process and each process classifies its
    share of the validation images; the counts are summed (module docstring)."""
    freeze(encoder)
    workers = resolve_workers(cfg.num_workers, ctx.local_world_size, device)
    num_classes = len(train_set.classes)
    subset = fraction_subset(len(train_set), cfg.train_fraction, cfg.seed, labels=train_set.targets)
    tf = eval_transform(cfg.img_size, cfg.eval_crop)
    train_data, val_data = Transformed(Subset(train_set, subset), tf), Transformed(val_set, tf)
    batch = cfg.batch_size
    train_steps = extraction_steps(len(train_data), batch, ctx)
    log = None
    if ctx.is_main:
        log = RunLog(out / "features.jsonl", train_steps + extraction_steps(len(val_data), batch, ctx), 0,
                     desc="features", every=cfg.log_every)
    try:
        train_feats, train_labels = extract_features(encoder, train_data, batch, device, workers, log, ctx=ctx)
        val_feats, val_labels = extract_features(encoder, val_data, batch, device, workers, log, train_steps,
                                                 ctx=ctx, gather=False)
    finally:
        if log:
            log.close()
    ks = (cfg.k,) if cfg.k == 10 else (cfg.k, 10)
    scores = knn_classify(train_feats, train_labels, val_feats, num_classes, ks, cfg.temperature, cfg.knn_chunk)
    metrics = topk_metrics(scores[cfg.k], val_labels, num_classes, ctx)
    if cfg.k != 10:
        k10 = topk_metrics(scores[10], val_labels, num_classes, ctx)
        metrics.update({f"{name}_k10": value for name, value in k10.items()})
    return metrics


# ----------------------------------------------------------------------------- entry points


def probe(cfg: ProbeConfig, out_dir: str | Path, resume: bool = True) -> dict[str, float]:
    """Runs the probe of ``cfg.mode`` and writes ``out_dir/result.json`` (kind ``linear`` or ``knn``)
    and, for the linear probe, the head's state to ``out_dir/head.pth``; a linear probe started
    again on the same directory resumes from its ``checkpoint.pth`` (``resume``). Under torchrun
    rank 0 alone writes, and returns the metrics (the other processes return ``{}``)."""
    started = time.time()
    validate(cfg)
    out = Path(out_dir)
    device, ctx = start_run(cfg, out, save_config=False)
    train_set, val_set = load_splits(cfg.dataset, cfg.data_root, cfg.eval_split)
    encoder = build_encoder(cfg).to(device)
    # Only once the input is checked (bad input is an error, even where the run is done):
    done = finished(out, RESULT_FILE, cfg, "probe", lambda path: load_result(path)["metrics"], evaluate_again(out))
    if done is not None:
        return done
    # The linear probe writes config.json once its checkpoint, if any, is found to be of this config.
    if cfg.mode == "knn" and ctx.is_main:
        write_config(out / "config.json", cfg)
    if cfg.mode == "linear":
        metrics, head = linear_probe(cfg, encoder, train_set, val_set, device, out, ctx, resume)
        if ctx.is_main:
            torch_save(head_state(head), out / HEAD_FILE)
    else:
        metrics = knn_probe(cfg, encoder, train_set, val_set, device, out, ctx)
    if ctx.is_main:
        write_result(out, cfg.mode, metrics, asdict(cfg), seed=cfg.seed, started=started, checkpoint=cfg.checkpoint)
    barrier(ctx)
    return metrics if ctx.is_main else {}


def main(argv: list[str] | None = None) -> int:
    return stage_main("probe", "Linear probe or weighted k-NN on frozen ViT features.", ProbeConfig, probe,
                      lambda metrics: json.dumps(metrics) if metrics else None, argv)


def estimate(config: dict[str, Any], dataset_sizes: dict[str, int] | None = None, world_size: int | None = None
             ) -> cost.Estimate:
    """FLOPs of the frozen encoder's forward passes: each epoch over the training subset for a
    linear probe with augmentation, once otherwise, plus once over the evaluated split."""
    cfg = config_from_dict(ProbeConfig, {"data_root": "", **config})
    sizes, source = cost.sizes_of(config, dataset_sizes)
    forward = vit_flops(cfg.arch, cfg.img_size, False)
    if "train" not in sizes or "val" not in sizes:
        return cost.unknown("probe", f"number of images unknown ({cost.UNKNOWN_COUNT})")
    subset = sizes["train"] if cfg.train_fraction == 1 else max(1, round(sizes["train"] * cfg.train_fraction))
    passes = cfg.epochs if cfg.mode == "linear" and cfg.augment else 1
    steps = cfg.epochs * max(1, subset // min(cfg.batch_size, subset)) if cfg.mode == "linear" else 0
    notes = ["encoder forward only (frozen)"] + ([source] if source else [])
    est = cost.Estimate("probe", None, None, train_flops=passes * subset * forward, eval_flops=sizes["val"] * forward,
                        steps=steps, train_images=passes * subset, flops_per_image=forward, notes=notes)
    return cost.finish(est)


KIND = register_kind(RunKind(
    "probe", run=lambda config, run_dir: probe(config_from_dict(ProbeConfig, config), run_dir),
    done_file=lambda config: "result.json", command="benchmark.probe", multi_process=True, estimate=estimate,
    metrics={"linear": ("top1",), "knn": ("top1",)}, prepare=lambda config, tags: {**config, "tags": tags},
    timeout_min=24 * 60,
))
