"""Classification fine-tuning of a (pre-trained or random) ViT on an ImageFolder data set.

    python -m benchmark.finetune --config CONFIG.json --out RUN_DIR

The data root holds ``train/<class>/*`` and ``val/<class>/*``. The recipe is built from timm's
parts: AdamW with layer-wise learning-rate decay, drop path, label smoothing, optional
RandAugment and Mixup/CutMix, warm-up then cosine. Writes ``RUN_DIR/result.json`` with top-1
(and top-5 with at least 10 classes) on the validation split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch.utils.data import DataLoader

from benchmark.convert import CheckpointError, fit_pos_embed, read_checkpoint
from benchmark.data.classification import Transformed, load_classification
from benchmark.data.folders import (
    DataError,
    EpochSampler,
    SeededTransform,
    fraction_subset,
    one_thread_worker,
)
from benchmark.engine import (
    ConfigError,
    NonFiniteLoss,
    RunLog,
    autocast,
    build_optimizer,
    build_scheduler,
    check_finite,
    config_from_dict,
    pick_device,
    seed_everything,
    write_config,
)
from benchmark.models import create_vit
from benchmark.results import write_result



@dataclass
class FinetuneConfig:
    data_root: str
    dataset: str = "imagefolder"         # the data set's format (benchmark.data.classification.READERS)
    checkpoint: str | None = None        # an encoder export; None = random initialisation
    arch: str = "vit-s16"
    img_size: int = 224
    train_fraction: float = 1.0          # class-balanced subset of the training labels
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
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    device: str = "auto"
    tags: dict = field(default_factory=dict)   # free-form labels for the report (method, data, ...)


def load_pretrained(model: nn.Module, checkpoint: str | Path, arch: str) -> None:
    """Loads an encoder export (or mm backbone checkpoint) into a classifier ViT; only the
    classifier head may be missing, and nothing may be left over."""
    state, spec, _ = read_checkpoint(checkpoint)
    if spec["arch"] != arch:
        raise CheckpointError(f"{checkpoint}: holds a {spec['arch']} encoder, the config asks for {arch}")
    fit_pos_embed(state, model)
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


def finetune(cfg: FinetuneConfig, out_dir: str | Path) -> dict[str, float]:
    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "config.json", cfg)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    root = Path(cfg.data_root)
    train_set = load_classification(cfg.dataset, root, "train")
    val_set = load_classification(cfg.dataset, root, "val")
    num_classes = len(train_set.classes)
    if val_set.classes != train_set.classes:
        raise DataError(f"{root}: the train and val splits have different classes")

    model = create_vit(cfg.arch, cfg.img_size, num_classes=num_classes, drop_path_rate=cfg.drop_path)
    if cfg.checkpoint:
        load_pretrained(model, cfg.checkpoint, cfg.arch)
    model.to(device)

    subset = fraction_subset(len(train_set), cfg.train_fraction, cfg.seed, labels=train_set.targets)
    batch = min(cfg.batch_size, len(subset))
    steps_per_epoch = max(1, len(subset) // batch)
    total = cfg.epochs * steps_per_epoch
    train_tf = create_transform(
        input_size=cfg.img_size, is_training=True, auto_augment=cfg.rand_augment, re_prob=0.0, hflip=0.5,
        color_jitter=0.4 if cfg.rand_augment is None else None,
    )
    data = SeededTransform(train_set, train_tf, cfg.seed, subset)
    loader = iter(DataLoader(data, batch_size=batch, sampler=EpochSampler(len(data), cfg.seed),
                             num_workers=cfg.num_workers, worker_init_fn=one_thread_worker, drop_last=True))
    val_set = Transformed(val_set, create_transform(input_size=cfg.img_size, is_training=False))
    val_loader = DataLoader(val_set, batch_size=batch, num_workers=cfg.num_workers, worker_init_fn=one_thread_worker)

    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing, num_classes=num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    else:
        criterion = LabelSmoothingCrossEntropy(cfg.smoothing) if cfg.smoothing > 0 else nn.CrossEntropyLoss()
    lr = cfg.blr * batch / 256
    optimizer = build_optimizer(model, lr=lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    scheduler = build_scheduler(optimizer, total, int(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr)
    log = RunLog(out / "log.jsonl", total, 0, desc="finetune", every=cfg.log_every)
    model.train()
    try:
        for step in range(total):
            images, labels = next(loader)
            images, labels = images.to(device), labels.to(device)
            if mixup is not None:
                images, labels = mixup(images, labels)
            with autocast(device):
                loss = criterion(model(images), labels)
            check_finite(loss, step, out)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step_update(step + 1)
            log.step(step, batch, loss=float(loss.detach()), lr=optimizer.param_groups[-1]["lr"])
    finally:
        log.close()
    metrics = evaluate(model, val_loader, device, num_classes)
    write_result(out, "finetune", metrics, asdict(cfg), seed=cfg.seed, started=started, checkpoint=cfg.checkpoint)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.finetune", description="Fine-tune a ViT classifier.")
    parser.add_argument("--config", required=True, help="a JSON file of FinetuneConfig fields")
    parser.add_argument("--out", required=True, help="the run directory")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_dict(FinetuneConfig, json.loads(Path(args.config).read_text()))
        metrics = finetune(cfg, args.out)
    except (ConfigError, DataError, CheckpointError, NonFiniteLoss, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
