"""Classification fine-tuning of a (pre-trained or random) ViT.

    python -m benchmark.finetune --config CONFIG.json --out RUN_DIR [--resume auto|never]
    torchrun --nproc_per_node 8 -m benchmark.finetune --config CONFIG.json --out RUN_DIR

The data set is read in its official format (``dataset``: see :mod:`benchmark.data.classification`;
``imagefolder`` by default: ``train/<class>/*`` and ``val/<class>/*``). The recipe is built from timm's
parts: AdamW with layer-wise learning-rate decay, drop path, label smoothing, optional
RandAugment and Mixup/CutMix, warm-up then cosine; optionally LP-FT (``head_init="linear-probe"``:
the head starts as a logistic regression on the frozen features, :func:`fit_head`). Writes
``RUN_DIR/result.json`` with top-1 (and top-5 with at least 10 classes) on the validation split.
Training checkpoints (``checkpoint.pth``, every ``checkpoint_every`` steps) let an interrupted run
resume exactly; SIGTERM (or SIGUSR2) makes it write one after the current step and exit with code
75 (docs/faults.md). Bad input is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset

from benchmark.data.augment import EVAL_CROP, Augmentation, eval_transform, single_crop_spec
from benchmark.data.batch_views import BatchViews, DeviceBatches, DeviceImages
from benchmark.data.classification import READERS, Transformed, load_splits
from benchmark.data.folders import SKIPPED, EpochSampler, SeededTransform, fraction_subset, mix_seed, skipped_images
from benchmark.data.loader import make_loader, resolve_workers
from benchmark.errors import ConfigError
from benchmark.models.checkpoints.export import checkpoint_pool_kwargs, load_pretrained
from benchmark.models.flops import vit_flops
from benchmark.models.vit import ARCHS, create_vit, downstream_kwargs, patch_size
from benchmark.stages import cost
from benchmark.stages.cli import stage_main
from benchmark.stages.kinds import RunKind, register_kind
from benchmark.training.checkpoint import TrainingCheckpoint, evaluate_again, finished
from benchmark.training.config import (
    apply_choice,
    at_least,
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
from benchmark.training.distributed import Context, barrier
from benchmark.training.features import extract_features, topk_counts, topk_from_counts
from benchmark.training.loop import train
from benchmark.training.monitor import VAL_IMAGES, ValMonitor
from benchmark.training.optim import build_optimizer, build_scheduler
from benchmark.training.runtime import autocast, start_run
from benchmark.training.stop import stop_signals_blocked
from benchmark.utils.results import RESULT_FILE, load_result, write_result

HEAD_INITS = ("random", "linear-probe")


@dataclass
class FinetuneConfig:
    data_root: str
    dataset: str = "imagefolder"         # the data set's format (benchmark.data.classification.READERS)
    checkpoint: str | None = None        # an encoder export; None = random initialisation
    arch: str = "vit-s16"
    img_size: int = 224
    train_fraction: float = 1.0          # class-balanced subset of the training labels
    eval_split: str = "val"              # the split result.json reports: "val", or "test" (classification.WITH_TEST_SPLIT)
    hparams_from: str | None = None      # a select run's choice.json: its chosen fields replace these
    epochs: int = 100
    batch_size: int = 256
    blr: float = 5e-4                    # lr = blr * batch_size / 256
    min_lr: float = 1e-6
    warmup_epochs: float = 5.0
    weight_decay: float = 0.05
    layer_decay: float = 0.65
    drop_path: float = 0.1
    smoothing: float = 0.1
    rand_augment: str | None = "rand-m9-mstd0.5-inc1"
    mixup: float = 0.8
    cutmix: float = 1.0
    clip_grad: float = 0.0
    hflip: float = 0.5                   # horizontal flip probability (0 where a flip changes the class)
    crop_scale_min: float = 0.08         # RandomResizedCrop scale = (crop_scale_min, 1), timm's default
    eval_crop: float = EVAL_CROP         # evaluation: the centre crop's share of the image side (1.0: whole)
    head_init: str = "random"            # "linear-probe": LP-FT, the head first fitted to the frozen features (fit_head)
    seed: int = 0
    num_workers: int = -1                # -1: default_workers() (0 on a CPU; on a GPU, per core)
    images_on_device: bool = False       # the labelled training images held on the training device, each batch's
                                         # crops made there (benchmark.data.batch_views): small sets on a GPU
    log_every: int = 10
    monitor_every: int = 0               # epochs between checks of the top-1 on val during training (log.jsonl's
                                         # val_top1, benchmark.training.monitor.ValMonitor; 0: none)
    checkpoint_every: int = 1000         # steps between training checkpoints (resume with --resume auto)
    device: str = "auto"
    tags: dict = field(default_factory=dict)   # free-form labels for the report (method, data, ...)

    RULES: ClassVar = {
        "dataset": one_of(READERS), "arch": one_of(ARCHS), "img_size": at_least(1), "train_fraction": in_unit(),
        "eval_split": one_of(["val", "test"]), "epochs": at_least(1), "batch_size": at_least(1), "blr": positive(),
        "min_lr": at_least(0), "warmup_epochs": at_least(0), "weight_decay": at_least(0),
        "layer_decay": optional(in_unit()), "drop_path": in_unit(zero=True, one=False),
        "smoothing": in_unit(zero=True, one=False), "mixup": at_least(0), "cutmix": at_least(0), "clip_grad": at_least(0),
        "hflip": in_unit(zero=True), "crop_scale_min": in_unit(), "eval_crop": in_unit(),
        "head_init": one_of(HEAD_INITS), "seed": at_least(0), "num_workers": workers(),
        "log_every": at_least(1), "monitor_every": at_least(0), "checkpoint_every": at_least(1), "device": device_name(),
    }

    def relations(self) -> list[str]:
        problems = []
        if self.img_size % patch_size(self.arch):
            problems.append(f"img_size = {self.img_size} is not a multiple of {self.arch}'s patch size {patch_size(self.arch)}")
        if self.images_on_device and self.rand_augment is not None:
            problems.append(f"images_on_device has no batched RandAugment: set rand_augment to null (got {self.rand_augment!r})")
        return problems


HEAD_FIT_ITERS = 1000  # LP-FT's logistic regression: L-BFGS iterations at most


def fit_head(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, ctx: Context,
             num_workers: int = 0) -> float:
    """LP-FT's first step (Kumar et al., 2022: fine-tuning from a random head distorts the
    pre-trained features): the classifier head becomes a multinomial logistic regression
    (scikit-learn, L-BFGS, C = 1) fitted to the frozen encoder's pooled features of ``dataset``
    (the labelled images, evaluation transform); fine-tuning then starts from a head that fits the
    features. Every process fits the same head on the gathered features. Returns the fit's top-1
    on ``dataset``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    was_training = model.training
    model.eval()
    features, labels = extract_features(model, dataset, batch_size, device, num_workers, ctx=ctx)
    x, y = features.cpu().numpy(), labels.cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # said in one line below, not scikit-learn's eight
        fit = LogisticRegression(C=1.0, max_iter=HEAD_FIT_ITERS).fit(x, y)
    if ctx.is_main and int(np.max(fit.n_iter_)) >= HEAD_FIT_ITERS:
        print(f"[finetune] the head's logistic regression used all its {HEAD_FIT_ITERS} L-BFGS iterations without "
              "converging; fine-tuning goes on from that head", file=sys.stderr)
    num_classes = model.head.weight.shape[0]
    if len(fit.classes_) != num_classes:
        raise ConfigError(f"head_init = linear-probe: the labelled images hold {len(fit.classes_)} of the "
                          f"{num_classes} classes; a logistic regression cannot fit the others")
    weight, bias = fit.coef_, fit.intercept_
    if num_classes == 2:  # one logit, of class 1 against class 0: the same softmax as logits (0, logit)
        weight, bias = np.concatenate([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(weight))
        model.head.bias.copy_(torch.as_tensor(bias))
    model.train(was_training)
    return 100.0 * float(fit.score(x, y))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int) -> dict[str, float]:
    model.eval()
    counts = [0, 0, 0]
    for images, labels in loader:
        with autocast(device):
            logits = model(images.to(device))
        counts = [a + b for a, b in zip(counts, topk_counts(logits.float(), labels, num_classes))]
    return topk_from_counts(counts, num_classes)


def finetune(cfg: FinetuneConfig, out_dir: str | Path, resume: bool = True) -> dict[str, float]:
    """Fine-tunes (or resumes, from ``checkpoint.pth``) and evaluates; returns the metrics.

    Under torchrun each process trains on its share of every global batch (DDP); rank 0 alone
    writes the log, the checkpoints, evaluates and writes ``result.json``.
    """
    started = time.time()
    out = Path(out_dir)
    # ============ checking the input: the chosen settings, the data ============
    if cfg.hparams_from:
        cfg = apply_choice(cfg, cfg.hparams_from)
    validate(cfg)
    # The data first: bad input stops the run before it writes anything.
    train_set, val_set = load_splits(cfg.dataset, cfg.data_root, cfg.eval_split)
    device, ctx = start_run(cfg, out, save_config=False)
    workers = resolve_workers(cfg.num_workers, ctx.local_world_size, device)
    num_classes = len(train_set.classes)

    # ============ the model, from its pre-trained encoder ============
    # beit-*: one relative position table per block downstream, as BEiT fine-tunes.
    model = create_vit(cfg.arch, cfg.img_size, num_classes=num_classes, drop_path_rate=cfg.drop_path,
                       **downstream_kwargs(cfg.arch), **checkpoint_pool_kwargs(cfg.checkpoint))
    if cfg.checkpoint:
        load_pretrained(model, cfg.checkpoint, cfg.arch)
    model.to(device)
    # Only once the input is checked (bad input is an error, even where the run is done):
    done = finished(out, RESULT_FILE, cfg, "finetune", lambda path: load_result(path)["metrics"], evaluate_again(out))
    if done is not None:
        return done

    # ============ the labelled subset and the schedule ============
    subset = fraction_subset(len(train_set), cfg.train_fraction, cfg.seed, labels=train_set.targets)
    batch = min(cfg.batch_size, len(subset))  # global
    if batch % ctx.world_size:
        raise ConfigError(f"batch size {batch} is not divisible by the {ctx.world_size} processes")
    micro = batch // ctx.world_size
    steps_per_epoch = max(1, len(subset) // batch)
    total = cfg.epochs * steps_per_epoch

    # ============ the loss and the optimizer ============
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing, num_classes=num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    else:
        criterion = LabelSmoothingCrossEntropy(cfg.smoothing) if cfg.smoothing > 0 else nn.CrossEntropyLoss()
    lr = cfg.blr * batch / 256
    optimizer = build_optimizer(model, lr=lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    scheduler = build_scheduler(optimizer, total, int(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr)

    # ============ resuming, or fitting the head (LP-FT) ============
    checkpoint = TrainingCheckpoint(out, cfg, model, optimizer, scheduler, resume)
    if ctx.is_main:  # once the checkpoint, if any, was found to be of this config
        write_config(out / "config.json", cfg)
    if checkpoint.resumed:
        print(f"[finetune] resuming {out} at step {checkpoint.start}/{total}", file=sys.stderr)
    elif cfg.head_init == "linear-probe":  # a resumed run has its head in the checkpoint
        labelled = Transformed(Subset(train_set, subset), eval_transform(cfg.img_size, cfg.eval_crop), skip_log=out / SKIPPED)
        fitted = fit_head(model, labelled, batch, device, ctx, workers)
        print(f"[finetune] head fitted to the frozen features (LP-FT): top-1 {fitted:.1f} on the "
              f"{len(subset)} labelled images", file=sys.stderr)

    # ============ the data stream ============
    # timm's training transform without RandAugment: the single crop of pre-training, with its jitter
    train_aug = Augmentation(cfg.img_size, (cfg.crop_scale_min, 1.0), 0.4 if cfg.rand_augment is None else 0.0, cfg.hflip)
    start = checkpoint.start * batch
    if cfg.images_on_device:
        held = DeviceImages.from_dataset(train_set, subset, device, workers=workers, skip_log=out / SKIPPED)
        next_batch = DeviceBatches(held, BatchViews(single_crop_spec(train_aug), labels=True), cfg.seed, micro,
                                   start=start, rank=ctx.rank, num_replicas=ctx.world_size)
    else:
        train_tf = create_transform(
            input_size=cfg.img_size, is_training=True, auto_augment=cfg.rand_augment, re_prob=0.0, hflip=cfg.hflip,
            scale=train_aug.crop_scale, color_jitter=train_aug.color_jitter if cfg.rand_augment is None else None,
        )
        data = SeededTransform(train_set, train_tf, cfg.seed, subset, skip_log=out / SKIPPED)
        sampler = EpochSampler(len(data), cfg.seed, start=start, rank=ctx.rank, num_replicas=ctx.world_size)
        with stop_signals_blocked():  # workers started here ignore the trainer's stop signals
            loader = iter(make_loader(data, micro, device=device, num_workers=workers, sampler=sampler, drop_last=True))

        def next_batch(index: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
            images, labels = next(loader)
            return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    # ============ training ============
    checkpoint.restore_rng()  # after the loader's iterator drew from the global RNG, as at the start
    ddp = DistributedDataParallel(model) if ctx.distributed else model
    model.train()

    def step(index: int, micro_step: int) -> dict[str, torch.Tensor]:
        images, labels = next_batch(index, micro_step)
        if mixup is not None:
            # timm's Mixup draws from numpy's global RNG: one seed per step and process, so a
            # resumed run mixes exactly as the uninterrupted one.
            np.random.seed(mix_seed(cfg.seed, index, ctx.rank) % 2**32)
            images, labels = mixup(images, labels)
        with autocast(device):
            return {"loss": criterion(ddp(images), labels)}

    def clip(index: int) -> None:
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)

    monitor = None
    if cfg.monitor_every and ctx.is_main:  # deterministic, no random draw: the run trains as an unmonitored one
        on_val = ValMonitor(cfg.data_root, cfg.dataset, cfg.img_size, cfg.eval_crop, seed=cfg.seed)
        monitor = lambda: on_val(model)  # noqa: E731
    train(step, checkpoint, total=total, batch_size=batch, what="fine-tuning", desc="finetune", out=out, ctx=ctx,
          log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, ddp=ddp if ctx.distributed else None,
          before_update=clip, monitor=monitor, monitor_every=cfg.monitor_every * steps_per_epoch)
    # ============ evaluating ============
    metrics: dict[str, float] = {}
    if ctx.is_main:
        val_set = Transformed(val_set, eval_transform(cfg.img_size, cfg.eval_crop), skip_log=out / SKIPPED)
        val_loader = make_loader(val_set, micro, device=device, num_workers=workers)
        metrics = evaluate(model, val_loader, device, num_classes)
        skipped = skipped_images(out / SKIPPED)
        if skipped:
            print(f"[finetune] {len(skipped)} corrupt images skipped, listed in {out / SKIPPED}", file=sys.stderr)
        write_result(out, "finetune", metrics, asdict(cfg), seed=cfg.seed, started=started, checkpoint=cfg.checkpoint)
    barrier(ctx)
    return metrics


def main(argv: list[str] | None = None) -> int:
    return stage_main("finetune", "Fine-tune a ViT classifier.", FinetuneConfig, finetune,
                      lambda metrics: json.dumps(metrics) if metrics else None, argv)


def estimate(config: dict[str, Any], dataset_sizes: dict[str, int] | None = None, world_size: int | None = None
             ) -> cost.Estimate:
    """FLOPs of the whole run: forward+backward of the classifier on every training image of
    every epoch, plus one forward over the evaluated split, plus the monitor's forwards over at most
    :data:`~benchmark.training.monitor.VAL_IMAGES` images at each of its checks (the evaluated
    split's size standing in for the val split's)."""
    cfg = config_from_dict(FinetuneConfig, {"data_root": "", **config})
    sizes, source = cost.sizes_of(config, dataset_sizes)
    per_image = vit_flops(cfg.arch, cfg.img_size, True, 1000)
    if "train" not in sizes or "val" not in sizes:
        return cost.unknown("finetune", f"number of images unknown ({cost.UNKNOWN_COUNT})",
                            flops_per_image=per_image)
    subset = sizes["train"] if cfg.train_fraction == 1 else max(1, round(sizes["train"] * cfg.train_fraction))
    batch = min(cfg.batch_size, subset)
    steps = cfg.epochs * max(1, subset // batch)
    checks = 1 + cfg.epochs // cfg.monitor_every + bool(cfg.epochs % cfg.monitor_every) if cfg.monitor_every else 0
    evaluated = sizes["val"] + checks * min(VAL_IMAGES, sizes["val"])
    est = cost.Estimate("finetune", None, None, train_flops=steps * batch * per_image,
                        eval_flops=evaluated * vit_flops(cfg.arch, cfg.img_size, False, 1000), steps=steps,
                        train_images=steps * batch, flops_per_image=per_image, notes=[source] if source else [])
    return cost.finish(est)


KIND = register_kind(RunKind(
    "finetune", run=lambda config, run_dir: finetune(config_from_dict(FinetuneConfig, config), run_dir),
    done_file=lambda config: "result.json", command="benchmark.finetune", multi_process=True, estimate=estimate,
    metrics={"finetune": ("top1",)}, prepare=lambda config, tags: {**config, "tags": tags}, timeout_min=48 * 60,
))
