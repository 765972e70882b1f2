"""The smoke chain: synthetic data in the real formats, SplitMask pre-training on the images of
the classification set (labels unused), then every downstream leg, plus random init; a CPU runs
it in minutes (``--subset smoke``)."""

from __future__ import annotations

from copy import deepcopy

from benchmark.experiments.model import Run, ref

SMOKE_ARCH, SMOKE_IMG = "vit-smoke", 64
SYNTHETIC = "synthetic-smoke"  # the data run the smoke scale reads every data set from


def synthetic_data_run() -> Run:
    return Run(SYNTHETIC, "data", {"generator": "synthetic", "scale": "smoke", "seed": 0})


def smoke_tags(method: str, pretrain_data: str, downstream: str | None = None) -> dict[str, str]:
    tags = {"method": method, "pretrain_data": pretrain_data, "arch": SMOKE_ARCH}
    return {**tags, "downstream": downstream} if downstream else tags


def smoke_runs() -> list[Run]:
    runs = [synthetic_data_run()]
    runs.append(Run(
        "pretrain-splitmask-smoke", "pretrain",
        {
            "data_root": ref(SYNTHETIC, "classification/train"),
            "method": "splitmask",
            "method_args": {"vocab_size": 256, "keep_ratio": 0.5, "decoder_depth": 2, "temperature": 0.2,
                            "contrastive_weight": 1.0},
            "arch": SMOKE_ARCH, "img_size": SMOKE_IMG, "steps": 400, "batch_size": 32, "blr": 4e-3,
            "warmup_steps": 20, "drop_path": 0.0, "crop_scale_min": 0.3, "checkpoint_every": 100, "seed": 0,
        },
        tags=smoke_tags("splitmask", "synthetic-classification"),
    ))
    finetune = {
        "data_root": ref(SYNTHETIC, "classification"),
        "arch": SMOKE_ARCH, "img_size": SMOKE_IMG, "epochs": 40, "batch_size": 32, "blr": 2e-3,
        "warmup_epochs": 2.0, "layer_decay": 0.75, "drop_path": 0.0, "rand_augment": None,
        "mixup": 0.0, "cutmix": 0.0, "smoothing": 0.1, "seed": 0,
    }
    for method, checkpoint in [("splitmask", ref("pretrain-splitmask-smoke", "encoder.safetensors")), ("random-init", None)]:
        pretrain_data = "none" if checkpoint is None else "synthetic-classification"
        runs.append(Run(
            f"finetune-{method}-smoke", "finetune", {**deepcopy(finetune), "checkpoint": checkpoint},
            tags=smoke_tags(method, pretrain_data, "synthetic-cls-finetune"),
        ))
    ckpt = ref("pretrain-splitmask-smoke", "encoder.safetensors")
    runs.append(Run(
        "detect-splitmask-smoke", "detect",
        {"ckpt": ckpt, "config": "configs_mm/mask_rcnn_vit_fpn_smoke.py", "data_root": ref(SYNTHETIC, "coco"), "seed": 0,
         "cfg_options": {"train_cfg.max_epochs": 12, "train_cfg.val_interval": 12}},
        tags=smoke_tags("splitmask", "synthetic-classification", "synthetic-coco-maskrcnn"),
    ))
    runs.append(Run(
        "segment-splitmask-smoke", "segment",
        {"ckpt": ckpt, "config": "configs_mm/upernet_vit_smoke.py", "data_root": ref(SYNTHETIC, "ade20k"), "seed": 0,
         "cfg_options": {"train_cfg.max_iters": 160, "train_cfg.val_interval": 160, "param_scheduler.1.end": 160}},
        tags=smoke_tags("splitmask", "synthetic-classification", "synthetic-ade20k-upernet"),
    ))
    return runs
