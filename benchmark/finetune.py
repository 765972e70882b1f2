"""Classification fine-tuning of a (pre-trained or random) ViT.

    python -m benchmark.finetune --config CONFIG.json --out RUN_DIR [--resume auto|never]
    torchrun --nproc_per_node 8 -m benchmark.finetune --config CONFIG.json --out RUN_DIR

The data set is read in its official format (``dataset``: see :mod:`benchmark.data.classification`;
``imagefolder`` by default: ``train/<class>/*`` and ``val/<class>/*``). The recipe is built from timm's
parts: AdamW with layer-wise learning-rate decay, drop path, label smoothing, optional
RandAugment and Mixup/CutMix, warm-up then cosine. Writes ``RUN_DIR/result.json`` with top-1
(and top-5 with at least 10 classes) on the validation split. Training checkpoints
(``checkpoint.pth``, every ``checkpoint_every`` steps) let an interrupted run resume exactly;
SIGTERM (or SIGUSR2) makes it write one after the current step and exit with code 75
(docs/faults.md). Bad input is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from benchmark.convert import CheckpointError, adapt_state_dict, read_checkpoint
from benchmark.data.classification import Transformed, load_splits
from benchmark.select import apply_choice
from benchmark.data.folders import (
    CORRUPT_POLICIES,
    DataError,
    EpochSampler,
    SeededTransform,
    fraction_subset,
    mix_seed,
    set_corrupt_policy,
    skipped_images,
)
from benchmark.data.loader import make_loader, resolve_workers
from benchmark.distributed import barrier, mean_across, shutdown
from benchmark.engine import (
    EXIT_PREEMPTED,
    ConfigError,
    NonFiniteLoss,
    Preempted,
    RunLog,
    StopSignal,
    autocast,
    build_optimizer,
    build_scheduler,
    FiniteGuard,
    config_from_dict,
    error_line,
    restore_training,
    rng_state,
    save_state,
    set_rng_state,
    start_run,
    stop_signals_blocked,
    stopped_message,
    write_config,
)
from benchmark.models import create_vit, downstream_kwargs
from benchmark.results import write_result
from benchmark.utils.io import DiskFull

CHECKPOINT = "checkpoint.pth"
SKIPPED = "skipped_images.txt"  # the corrupt images a run skipped (benchmark.data.folders.SkipCorrupt)



@dataclass
class FinetuneConfig:
    data_root: str
    dataset: str = "imagefolder"         # the data set's format (benchmark.data.classification.READERS)
    checkpoint: str | None = None        # an encoder export; None = random initialisation
    arch: str = "vit-s16"
    img_size: int = 224
    train_fraction: float = 1.0          # class-balanced subset of the training labels
    eval_split: str = "val"              # the split result.json reports: "val", or "test" (ImageFolder)
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
    seed: int = 0
    num_workers: int = -1                # -1: default_workers() (0 on a CPU; on a GPU, per core)
    log_every: int = 10
    checkpoint_every: int = 1000         # steps between training checkpoints (resume with --resume auto)
    device: str = "auto"
    tags: dict = field(default_factory=dict)   # free-form labels for the report (method, data, ...)


def load_pretrained(model: nn.Module, checkpoint: str | Path, arch: str) -> None:
    """Loads an encoder export (or mm backbone checkpoint) into a classifier ViT; only the
    classifier head may be missing, and nothing may be left over."""
    state, spec, _ = read_checkpoint(checkpoint)
    if spec["arch"] != arch:
        raise CheckpointError(f"{checkpoint}: holds a {spec['arch']} encoder, the config asks for {arch}")
    for note in adapt_state_dict(state, model):  # position embedding / BEiT tables to this model
        print(f"[checkpoint] {note}", file=sys.stderr)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint}: missing keys {missing}, unexpected keys {unexpected}")


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int) -> dict[str, float]:
    model.eval()
    correct1 = correct5 = total = 0
    for images, labels in loader:
        with autocast(device):
            logits = model(images.to(device))
        labels = labels.to(device)
        top = logits.float().topk(min(5, num_classes), dim=-1).indices
        correct1 += int((top[:, 0] == labels).sum())
        correct5 += int((top == labels[:, None]).any(-1).sum())
        total += labels.numel()
    metrics = {"top1": 100.0 * correct1 / total}
    if num_classes >= 10:
        metrics["top5"] = 100.0 * correct5 / total
    return metrics


def finetune(cfg: FinetuneConfig, out_dir: str | Path, resume: bool = True) -> dict[str, float]:
    """Fine-tunes (or resumes, from ``checkpoint.pth``) and evaluates; returns the metrics.

    Under torchrun each process trains on its share of every global batch (DDP); rank 0 alone
    writes the log, the checkpoints, evaluates and writes ``result.json``.
    """
    started = time.time()
    out = Path(out_dir)
    if cfg.hparams_from:
        cfg = apply_choice(cfg, cfg.hparams_from)
    # The data first: bad input stops the run before it writes anything.
    train_set, val_set = load_splits(cfg.dataset, cfg.data_root, cfg.eval_split)
    device, ctx = start_run(cfg, out, save_config=False)
    workers = resolve_workers(cfg.num_workers, ctx.local_world_size, device)
    num_classes = len(train_set.classes)

    # beit-*: one relative position table per block downstream, as BEiT fine-tunes.
    model = create_vit(cfg.arch, cfg.img_size, num_classes=num_classes, drop_path_rate=cfg.drop_path,
                       **downstream_kwargs(cfg.arch))
    if cfg.checkpoint:
        load_pretrained(model, cfg.checkpoint, cfg.arch)
    model.to(device)

    subset = fraction_subset(len(train_set), cfg.train_fraction, cfg.seed, labels=train_set.targets)
    batch = min(cfg.batch_size, len(subset))  # global
    if batch % ctx.world_size:
        raise ConfigError(f"batch size {batch} is not divisible by the {ctx.world_size} processes")
    micro = batch // ctx.world_size
    steps_per_epoch = max(1, len(subset) // batch)
    total = cfg.epochs * steps_per_epoch

    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing, num_classes=num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    else:
        criterion = LabelSmoothingCrossEntropy(cfg.smoothing) if cfg.smoothing > 0 else nn.CrossEntropyLoss()
    lr = cfg.blr * batch / 256
    optimizer = build_optimizer(model, lr=lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    scheduler = build_scheduler(optimizer, total, int(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr)

    ckpt_path = out / CHECKPOINT
    state = restore_training(ckpt_path, cfg, model, optimizer, scheduler) if resume and ckpt_path.is_file() else None
    start = int(state["step"]) if state else 0
    if ctx.is_main:  # once the checkpoint, if any, was found to be of this config
        write_config(out / "config.json", cfg)
    if state:
        print(f"[finetune] resuming {out} at step {start}/{total}", file=sys.stderr)

    train_tf = create_transform(
        input_size=cfg.img_size, is_training=True, auto_augment=cfg.rand_augment, re_prob=0.0, hflip=cfg.hflip,
        scale=(cfg.crop_scale_min, 1.0),
        color_jitter=0.4 if cfg.rand_augment is None else None,
    )
    data = SeededTransform(train_set, train_tf, cfg.seed, subset, skip_log=out / SKIPPED)
    sampler = EpochSampler(len(data), cfg.seed, start=start * batch, rank=ctx.rank, num_replicas=ctx.world_size)
    with stop_signals_blocked():  # workers started here ignore the trainer's stop signals
        loader = iter(make_loader(data, micro, device=device, num_workers=workers, sampler=sampler, drop_last=True))
    if state is not None:  # after the loader's iterator drew from the global RNG, as at the start
        set_rng_state(state["rng"])
    ddp = DistributedDataParallel(model) if ctx.distributed else model
    log = RunLog(out / "log.jsonl", total, start, desc="finetune", every=cfg.log_every) if ctx.is_main else None
    guard = FiniteGuard(ckpt_path)
    model.train()
    stop = StopSignal().install()
    try:
        for step in range(start, total):
            images, labels = next(loader)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if mixup is not None:
                # timm's Mixup draws from numpy's global RNG: one seed per step and process, so a
                # resumed run mixes exactly as the uninterrupted one.
                np.random.seed(mix_seed(cfg.seed, step, ctx.rank) % 2**32)
                images, labels = mixup(images, labels)
            with autocast(device):
                loss = criterion(ddp(images), labels)
            guard.watch(loss, step)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step_update(step + 1)
            logging = (step + 1) % cfg.log_every == 0 or step + 1 == total
            checkpointing = (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total
            stopping = stop.requested(ctx, sync=logging or checkpointing) and step + 1 < total
            if logging or checkpointing or stopping:
                guard.check()
            if logging:
                values = mean_across({"loss": float(loss.detach())}, ctx)
                if log:
                    log.step(step, batch, lr=optimizer.param_groups[-1]["lr"], **values)
            elif log:
                log.step(step, batch)
            if ctx.is_main and (checkpointing or stopping):
                save_state(ckpt_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                           scheduler=scheduler.state_dict(), step=step + 1, rng=rng_state(), config=asdict(cfg))
            if stopping:
                raise Preempted(stopped_message("fine-tuning", stop, step + 1, total, ckpt_path))
    finally:
        stop.restore()
        if log:
            log.close()
    metrics: dict[str, float] = {}
    if ctx.is_main:
        val_set = Transformed(val_set, create_transform(input_size=cfg.img_size, is_training=False), skip_log=out / SKIPPED)
        val_loader = make_loader(val_set, micro, device=device, num_workers=workers)
        metrics = evaluate(model, val_loader, device, num_classes)
        skipped = skipped_images(out / SKIPPED)
        if skipped:
            print(f"[finetune] {len(skipped)} corrupt images skipped, listed in {out / SKIPPED}", file=sys.stderr)
        write_result(out, "finetune", metrics, asdict(cfg), seed=cfg.seed, started=started, checkpoint=cfg.checkpoint)
    barrier(ctx)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.finetune", description="Fine-tune a ViT classifier.")
    parser.add_argument("--config", required=True, help="a JSON file of FinetuneConfig fields")
    parser.add_argument("--out", required=True, help="the run directory")
    parser.add_argument("--resume", choices=["auto", "never"], default="auto")
    parser.add_argument("--corrupt-images", choices=CORRUPT_POLICIES, default="skip",
                        help="a corrupt or truncated image: skip it (counted in the log) or stop the run")
    args = parser.parse_args(argv)
    try:
        set_corrupt_policy(args.corrupt_images)
        cfg = config_from_dict(FinetuneConfig, json.loads(Path(args.config).read_text()))
        metrics = finetune(cfg, args.out, resume=args.resume == "auto")
    except Preempted as err:
        print(f"[finetune] {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    except (ConfigError, DataError, CheckpointError, NonFiniteLoss, DiskFull, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2
    finally:
        shutdown()
    if metrics:
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
