"""The experiment registry: which runs each artifact of the paper needs, written as data.

A *run* is one step of the pipeline (``data``, ``pretrain``, ``finetune``, ``detect``,
``segment``) with a plain-dict config. Configs may point at another run's output with
``{"ref": "<run name>", "file": "<file in its directory>"}``; the driver resolves these to
paths and orders runs so that every run comes after the runs it refers to. A run's identity
is a hash of its kind and resolved config, so a pre-training that several artifacts use is
run once, and a run whose outputs exist is skipped.

Each artifact lists its runs per scale. ``smoke`` is synthetic data on a CPU in minutes; later
scales (``mini``, ``small``, ``paper``) change sizes and lengths, never the comparisons.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Run:
    name: str                       # unique within a plan; used for refs and directory names
    kind: str                       # data | pretrain | finetune | detect | segment
    config: dict[str, Any]
    tags: dict[str, Any] = field(default_factory=dict)  # what the report groups by

    def refs(self) -> list[str]:
        return sorted(set(_find_refs(self.config)))


def _find_refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        if set(value) == {"ref", "file"}:
            return [value["ref"]]
        return [r for v in value.values() for r in _find_refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _find_refs(v)]
    return []


def ref(run: str, file: str = "") -> dict[str, str]:
    return {"ref": run, "file": file}


# --------------------------------------------------------------------------- smoke scale
# The smoke chain: synthetic data in the real formats, SplitMask pre-training on the images of
# the classification set (labels unused), then every downstream leg, plus random init.
SMOKE_ARCH, SMOKE_IMG = "vit-smoke", 64


def _smoke_tags(method: str, pretrain_data: str, downstream: str | None = None) -> dict[str, str]:
    tags = {"method": method, "pretrain_data": pretrain_data, "arch": SMOKE_ARCH}
    return {**tags, "downstream": downstream} if downstream else tags


def _smoke_runs() -> list[Run]:
    runs = [Run("synthetic-smoke", "data", {"generator": "synthetic", "scale": "smoke", "seed": 0})]
    runs.append(Run(
        "pretrain-splitmask-smoke", "pretrain",
        {
            "data_root": ref("synthetic-smoke", "classification/train"),
            "method": "splitmask",
            "method_args": {"vocab_size": 256, "keep_ratio": 0.5, "decoder_depth": 2, "temperature": 0.2, "contrastive_weight": 1.0},
            "arch": SMOKE_ARCH, "img_size": SMOKE_IMG, "steps": 400, "batch_size": 32, "blr": 4e-3,
            "warmup_steps": 20, "drop_path": 0.0, "crop_scale_min": 0.3, "checkpoint_every": 100, "seed": 0,
        },
        tags=_smoke_tags("splitmask", "synthetic-classification"),
    ))
    finetune = {
        "data_root": ref("synthetic-smoke", "classification"),
        "arch": SMOKE_ARCH, "img_size": SMOKE_IMG, "epochs": 40, "batch_size": 32, "blr": 2e-3,
        "warmup_epochs": 2.0, "layer_decay": 0.75, "drop_path": 0.0, "rand_augment": None,
        "mixup": 0.0, "cutmix": 0.0, "smoothing": 0.1, "seed": 0,
    }
    for method, checkpoint in [("splitmask", ref("pretrain-splitmask-smoke", "encoder.safetensors")), ("random-init", None)]:
        pretrain_data = "none" if checkpoint is None else "synthetic-classification"
        runs.append(Run(
            f"finetune-{method}-smoke", "finetune", {**deepcopy(finetune), "checkpoint": checkpoint},
            tags=_smoke_tags(method, pretrain_data, "synthetic-cls-finetune"),
        ))
    ckpt = ref("pretrain-splitmask-smoke", "encoder.safetensors")
    runs.append(Run(
        "detect-splitmask-smoke", "detect",
        {"ckpt": ckpt, "config": "configs_mm/mask_rcnn_vit_fpn_smoke.py", "data_root": ref("synthetic-smoke", "coco"), "seed": 0,
         "cfg_options": {"train_cfg.max_epochs": 12, "train_cfg.val_interval": 12}},
        tags=_smoke_tags("splitmask", "synthetic-classification", "synthetic-coco-maskrcnn"),
    ))
    runs.append(Run(
        "segment-splitmask-smoke", "segment",
        {"ckpt": ckpt, "config": "configs_mm/upernet_vit_smoke.py", "data_root": ref("synthetic-smoke", "ade20k"), "seed": 0,
         "cfg_options": {"train_cfg.max_iters": 160, "train_cfg.val_interval": 160, "param_scheduler.1.end": 160}},
        tags=_smoke_tags("splitmask", "synthetic-classification", "synthetic-ade20k-upernet"),
    ))
    return runs


@dataclass
class Artifact:
    name: str
    title: str
    scales: dict[str, Any]          # scale -> a function returning the runs


ARTIFACTS: dict[str, Artifact] = {
    "smoke": Artifact("smoke", "The whole chain at smoke scale (synthetic data)", {"smoke": _smoke_runs}),
}

# Named groups of artifacts for --subset.
SUBSETS: dict[str, list[str]] = {"smoke": ["smoke"], "all": sorted(ARTIFACTS)}
SCALES = ("smoke", "mini", "small", "paper")


def plan_runs(subset: str, scale: str) -> list[Run]:
    """The distinct runs (by name) the artifacts of ``subset`` need at ``scale``."""
    if subset not in SUBSETS and subset not in ARTIFACTS:
        raise KeyError(f"unknown subset {subset!r}; expected one of {sorted(set(SUBSETS) | set(ARTIFACTS))}")
    names = SUBSETS.get(subset, [subset])
    runs: dict[str, Run] = {}
    for artifact in (ARTIFACTS[n] for n in names):
        if scale not in artifact.scales:
            raise KeyError(f"artifact {artifact.name!r} has no {scale!r} scale yet (it has {sorted(artifact.scales)})")
        for run in artifact.scales[scale]():
            run.tags = {"artifact": artifact.name, "scale": scale, **run.tags}
            runs.setdefault(run.name, run)
    return list(runs.values())
