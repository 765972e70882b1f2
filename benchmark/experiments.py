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
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any


@dataclass
class Run:
    name: str                       # unique within a plan; used for refs and directory names
    kind: str                       # data | pretrain | finetune | probe | detect | segment
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


# =========================================================================== the paper's artifacts
# Each artifact is written ONCE, as abstract comparisons (``Pre`` x ``Eval``): which method
# pre-trains on which data (and subset, length, tokenizer), which abstract arch ("s" | "b"), and
# which downstream evaluation. A ``Scale`` (data, below) maps those entries to concrete configs:
# archs, image size, batch sizes, step counts, data locations. A scale changes sizes and lengths,
# never which comparisons are made. Where the paper (../shared/paper/PROTOCOL.md) is silent, a
# setting is marked "our choice".

IMAGENET_TRAIN = 1_281_167
# Training images of each pre-training data set (the official train splits), used to turn
# epochs into iterations. DomainNet: the official <domain>_train.txt lists.
TRAIN_IMAGES: dict[str, int] = {
    "imagenet": IMAGENET_TRAIN, "coco": 118_287, "ade20k": 20_210, "stanford-cars": 8_144,
    "domainnet-clipart": 33_525, "domainnet-sketch": 48_212, "domainnet-painting": 50_416,
}
DOMAINS = ("clipart", "sketch", "painting")
# The "small data sets" of the paper: 75% masking there (SplitMask keep_ratio 0.25, BEiT
# mask_ratio 0.75), and a 25% largest crop on Stanford Cars.
SMALL_SETS = frozenset({"stanford-cars", *(f"domainnet-{d}" for d in DOMAINS)})
DEFAULT_TOKENIZER = "dall-e"        # BEiT's tokenizer; the paper follows BEiT (our choice for SplitMask too)
BUDGET_EPOCHS = 300                 # ImageNet-100% pre-training: 300 epochs (known)
SMALL_SET_EPOCHS = 5000             # Stanford Cars: 5,000 epochs (known); DomainNet: the same (our choice)


# --------------------------------------------------------------------------- data sets by name
def data(name: str, path: str = "") -> dict[str, str]:
    """A marker for the real data set ``name`` (a key of DATASETS), ``path`` below its root."""
    return {"data": name, "path": path}


# name -> (the expected layout in one line, the relative paths that must exist below DATA_ROOT/<name>)
DATASETS: dict[str, tuple[str, list[str]]] = {
    "imagenet": ("ImageFolder of ILSVRC-2012: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (val sorted into class folders)",
                 ["train", "val"]),
    "inat2019": ("iNaturalist 2019 as distributed: train2019.json, val2019.json, train_val2019/<supercategory>/<id>/*.jpg",
                 ["train2019.json", "val2019.json", "train_val2019"]),
    "coco": ("COCO 2017: train2017/, val2017/, annotations/instances_{train,val}2017.json",
             ["train2017", "val2017", "annotations/instances_train2017.json", "annotations/instances_val2017.json"]),
    "ade20k": ("the ADEChallengeData2016 folder itself: images/{training,validation}/*.jpg, annotations/{training,validation}/*.png",
               ["images/training", "images/validation", "annotations/training", "annotations/validation"]),
    "stanford-cars": ("Stanford Cars as distributed: cars_train/, cars_test/, devkit/{cars_meta,cars_train_annos}.mat, "
                      "cars_test_annos_withlabels.mat (here or in devkit/)",
                      ["cars_train", "cars_test", "devkit/cars_meta.mat", "devkit/cars_train_annos.mat"]),
    "domainnet": ("DomainNet as distributed, one root for all domains: <domain>/<class>/*.jpg, <domain>_{train,test}.txt "
                  f"for {', '.join(DOMAINS)}",
                  [p for d in DOMAINS for p in (d, f"{d}_train.txt", f"{d}_test.txt")]),
    "dall-e": ("the DALL-E dVAE encoder converted once with `python -m benchmark.tokenizers convert-dalle encoder.pkl "
               "dalle_encoder.safetensors --trust-pickle`", ["dalle_encoder.safetensors"]),
}


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"data", "path"}


def data_markers(value: Any) -> list[tuple[str, str]]:
    """``(name, path)`` of every data marker in ``value`` (a config), in order, with repeats."""
    if _is_marker(value):
        return [(value["data"], value["path"])]
    if isinstance(value, dict):
        return [m for v in value.values() for m in data_markers(v)]
    if isinstance(value, list):
        return [m for v in value for m in data_markers(v)]
    return []


def find_data(value: Any) -> list[str]:
    """The data set names of every marker in ``value`` (a config), in order, with repeats."""
    return [name for name, _ in data_markers(value)]


def resolve_data(config: Any, data_root: str | Path) -> Any:
    """``config`` with every data marker replaced by the path ``data_root/<name>/<path>``."""
    if _is_marker(config):
        path = Path(data_root) / config["data"]
        return str(path / config["path"]) if config["path"] else str(path)
    if isinstance(config, dict):
        return {k: resolve_data(v, data_root) for k, v in config.items()}
    if isinstance(config, list):
        return [resolve_data(v, data_root) for v in config]
    return config


def missing_datasets(runs: list[Run], data_root: str | Path) -> dict[str, tuple[str, list[str]]]:
    """The data sets the runs need that are not (completely) below ``data_root``: name -> (the
    expected layout, the sorted names of the runs it blocks, those that refer to a blocked run
    included). Empty when everything is in place."""
    root = Path(data_root)
    needed: dict[str, set[str]] = {}
    for run in runs:
        for marker_name in find_data(run.config):
            needed.setdefault(marker_name, set()).add(run.name)
    missing: dict[str, tuple[str, list[str]]] = {}
    for name in sorted(needed):
        if name not in DATASETS:
            raise KeyError(f"data set {name!r} is not in DATASETS (expected one of {sorted(DATASETS)})")
        layout, paths = DATASETS[name]
        if all((root / name / p).exists() for p in paths):
            continue
        blocked = set(needed[name])
        changed = True
        while changed:  # the runs that refer (transitively) to a blocked run are blocked too
            changed = False
            for run in runs:
                if run.name not in blocked and blocked.intersection(run.refs()):
                    blocked.add(run.name)
                    changed = True
        missing[name] = (layout, sorted(blocked))
    return missing


# --------------------------------------------------------------------------- abstract comparisons
@dataclass(frozen=True)
class Pre:
    """A pre-training, abstractly. ``epochs`` are passes over the (subset of the) data; None is
    the data's default schedule."""
    method: str                     # splitmask | beit | dino | supervised
    data: str                       # imagenet | coco | ade20k | stanford-cars | domainnet-<domain>
    fraction: float = 1.0           # ImageNet subsets only
    epochs: float | None = None
    tokenizer: str | None = None    # beit / splitmask; None = DEFAULT_TOKENIZER

    def length(self) -> Fraction:
        """Epochs over the subset, exactly (so that equal schedules give equal names)."""
        if self.epochs is not None:
            return Fraction(str(self.epochs))
        if self.data in SMALL_SETS:
            return Fraction(SMALL_SET_EPOCHS)
        # The number of iterations is held constant (known for ImageNet subsets: 100% 300 epochs,
        # 10% 3k, 1% 30k); COCO and ADE20k get the same iterations too (our choice).
        return Fraction(BUDGET_EPOCHS * IMAGENET_TRAIN) / self.images()

    def images(self) -> Fraction:
        return TRAIN_IMAGES[self.data] * Fraction(str(self.fraction))

    def budget(self) -> Fraction:
        """The length in full-ImageNet epochs (images seen / ImageNet's train size)."""
        return self.length() * self.images() / IMAGENET_TRAIN

    def tok(self) -> str | None:
        return (self.tokenizer or DEFAULT_TOKENIZER) if self.method in ("beit", "splitmask") else None

    def data_tag(self) -> str:
        """pretrain_data as spelled in tables/paper/reference.csv."""
        return f"imagenet-{self.fraction * 100:g}%" if self.data == "imagenet" else self.data


@dataclass(frozen=True)
class Eval:
    """One evaluation: ``pre`` (None = random initialisation) on ``downstream`` with arch ``arch``."""
    method: str                     # the method tag (e.g. supervised-deit, random-init)
    pre: Pre | None
    arch: str                       # abstract: "s" (ViT-S/16) | "b" (ViT-B/16)
    downstream: str                 # a key of DOWNSTREAMS


# downstream tag -> (run kind, data set, reader format / probe mode)
DOWNSTREAMS: dict[str, tuple[str, str, str]] = {
    "imagenet-finetune": ("finetune", "imagenet", "imagefolder"),
    "imagenet-linear": ("probe", "imagenet", "linear"),
    "inat2019-finetune": ("finetune", "inat2019", "inat2019"),
    "stanford-cars-finetune": ("finetune", "stanford-cars", "stanford-cars"),
    **{f"domainnet-{d}-finetune": ("finetune", "domainnet", f"domainnet-{d}") for d in DOMAINS},
    "coco-maskrcnn": ("detect", "coco", ""),
    "ade20k-upernet": ("segment", "ade20k", ""),
}


def _grid(methods: list[str], pres: list[Pre | None], archs: list[str], downstreams: list[str]) -> list[Eval]:
    """Every method x pre-training x arch x downstream; ``pres`` entries are templates whose
    method is replaced (None = random init, method tag "random-init")."""
    out = []
    for pre in pres:
        for method in (methods if pre is not None else ["random-init"]):
            for arch in archs:
                for downstream in downstreams:
                    p = None if pre is None else Pre(_pre_method(method), pre.data, pre.fraction, pre.epochs, pre.tokenizer)
                    out.append(Eval(method, p, arch, downstream))
    return out


def _pre_method(method_tag: str) -> str:
    return "supervised" if method_tag == "supervised-deit" else method_tag


IN100 = Pre("*", "imagenet")
SSL = ["dino", "beit", "splitmask"]


def _fig2() -> list[Eval]:
    # Methods: the denoising autoencoders vs DINO (our choice); 0.1% is SplitMask only (known).
    evals = _grid(SSL, [Pre("*", "imagenet", f) for f in (0.01, 0.05, 0.1, 0.25, 1.0)], ["b"], ["imagenet-finetune"])
    return [Eval("splitmask", Pre("splitmask", "imagenet", 0.001), "b", "imagenet-finetune"), *evals]


# artifact -> (title, the comparisons, the tags it varies beyond method/data/arch/downstream)
COMPARISONS: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    # Teaser: COCO detection after pre-training on COCO vs ImageNet (our choice: SplitMask and BEiT, ViT-B).
    "fig1": ("COCO detection: pre-training on COCO vs ImageNet (teaser)",
             lambda: _grid(["beit", "splitmask"], [Pre("*", "coco"), IN100], ["b"], ["coco-maskrcnn"]), ()),
    # Arch unknown; ViT-B (our choice).
    "table1": ("iNaturalist-2019 fine-tuning after pre-training on ImageNet 1/10/100% and COCO",
               lambda: _grid(["supervised", *SSL], [Pre("*", "imagenet", f) for f in (0.01, 0.1, 1.0)], ["b"], ["inat2019-finetune"])
               + _grid(SSL, [Pre("*", "coco")], ["b"], ["inat2019-finetune"]), ("fraction",)),
    "fig2": ("ImageNet subset size at a constant number of iterations, fine-tuned on ImageNet", _fig2, ("fraction",)),
    # Epoch counts: our choice (PROTOCOL: up to about 3k helps, then slight over-fitting).
    "fig3": ("Pre-training length on ImageNet-10%, fine-tuned on ImageNet",
             lambda: _grid(["beit", "splitmask"], [Pre("*", "imagenet", 0.1, e) for e in (300, 1000, 2000, 3000, 5000)], ["b"],
                           ["imagenet-finetune"]), ("epochs",)),
    # Pre-training data: ImageNet-100%, evaluation: ImageNet fine-tuning (our choice).
    "tokenizers": ("Tokenizers for BEiT and SplitMask: DALL-E dVAE vs random patches vs k-means",
                   lambda: _grid(["beit", "splitmask"], [Pre("*", "imagenet", 1.0, None, t) for t in ("dall-e", "random-patches", "kmeans")],
                                 ["b"], ["imagenet-finetune"]), ("tokenizer",)),
    "schedules": ("Schedules: the same iterations on ImageNet 1%, 10%, 100% (30k, 3k, 300 epochs)",
                  lambda: _grid(["beit", "splitmask"], [Pre("*", "imagenet", f) for f in (0.01, 0.1, 1.0)], ["b"], ["imagenet-finetune"]),
                  ("fraction", "epochs")),
    # Random init uses the longer detection schedule (configs_mm/mask_rcnn_vit_b_fpn_6x_coco_random_init.py).
    "table4": ("COCO Mask R-CNN, ViT-B: pre-training on COCO vs ImageNet",
               lambda: _grid(SSL, [Pre("*", "coco"), IN100], ["b"], ["coco-maskrcnn"])
               + _grid(["supervised-deit"], [IN100, None], ["b"], ["coco-maskrcnn"]), ()),
    # Arch unknown; ViT-B (our choice, BEiT's ADE20k protocol).
    "table5": ("ADE20k UperNet: random init, supervised / BEiT on ImageNet, BEiT / SplitMask on ADE20k",
               lambda: _grid(["supervised-deit", "beit"], [IN100, None], ["b"], ["ade20k-upernet"])
               + _grid(["beit", "splitmask"], [Pre("*", "ade20k")], ["b"], ["ade20k-upernet"]), ()),
    "table6": ("Small data sets: pre-training on the target data only vs ImageNet, ViT-S and ViT-B",
               lambda: [e for d in ("stanford-cars", *(f"domainnet-{x}" for x in DOMAINS))
                        for e in _grid(["supervised-deit", "beit"], [IN100, None], ["s", "b"], [f"{d}-finetune"])
                        + _grid(["beit", "splitmask"], [Pre("*", d)], ["s", "b"], [f"{d}-finetune"])], ()),
    # ViT-S and ViT-B, self-supervised methods fine-tuned on ImageNet (our choice of rows; Table 7 is unknown).
    "table7": ("ImageNet fine-tuning after ImageNet pre-training, ViT-S and ViT-B",
               lambda: _grid(SSL, [IN100], ["s", "b"], ["imagenet-finetune"]), ()),
    "table8": ("Linear probing vs fine-tuning on ImageNet",
               lambda: _grid(SSL, [IN100], ["b"], ["imagenet-linear", "imagenet-finetune"]), ()),
    # Epoch counts: our choice around the known 5,000 (longer hurts sharply); ViT-S.
    "cars_overtraining": ("Stanford Cars: pre-training length vs fine-tuning accuracy (appendix)",
                          lambda: _grid(["splitmask"], [Pre("*", "stanford-cars", 1.0, e) for e in (1000, 2500, 5000, 10000, 20000)],
                                        ["s"], ["stanford-cars-finetune"]), ("epochs",)),
}


# --------------------------------------------------------------------------- scales, as data
@dataclass(frozen=True)
class Scale:
    name: str
    archs: dict[str, str]                   # abstract arch -> models.ARCHS name
    img_size: int
    pretrain_batch: int
    steps_per_budget_epoch: Fraction        # pre-training steps per full-ImageNet epoch of images
    min_steps: int
    vocab_size: int                         # codebook tokenizers (the dVAE's is always 8192)
    pretrain: dict[str, Any]                # shared PretrainConfig fields
    method_args: dict[str, dict[str, Any]]  # per method, shared by every data set
    finetune: dict[str, Any]                # shared FinetuneConfig fields
    finetune_len: dict[str, tuple[int, int]]  # downstream -> (epochs, batch)
    probe: dict[str, Any]                   # ProbeConfig fields
    detect: dict[str, tuple[str, dict[str, Any]]]   # "s"/"b"/"random-init-<arch>" -> (mm config, cfg_options)
    segment: dict[str, tuple[str, dict[str, Any]]]
    seeds: tuple[int, ...] = (0,)


_PAPER_PRETRAIN = {"blr": 1.5e-3, "min_lr": 1e-5, "weight_decay": 0.05, "drop_path": 0.1, "clip_grad": 3.0,
                   "crop_scale_min": 0.08, "checkpoint_every": 2000, "num_workers": 10}  # BEiT's values (our choice)
_PAPER_METHOD_ARGS = {
    "splitmask": {"decoder_depth": 2, "temperature": 0.2, "contrastive_weight": 1.0},  # weight unknown: 1.0 (our choice)
    "beit": {},  # BEiT's 75 of 196 patches (methods.beit.BEIT_MASK_RATIO)
    "dino": {},
    "supervised": {},
}
_PAPER_FINETUNE = {"blr": 5e-4, "warmup_epochs": 5.0, "layer_decay": 0.65, "drop_path": 0.1, "num_workers": 10}

SCALE_SPECS: dict[str, Scale] = {
    # The paper's protocol: ViT-S/B at 224, batch 2048 (BEiT), 300 ImageNet epochs' worth of iterations.
    "paper": Scale(
        "paper", {"s": "vit-s16", "b": "vit-b16"}, 224, 2048, Fraction(IMAGENET_TRAIN, 2048), 1, 8192,
        _PAPER_PRETRAIN, _PAPER_METHOD_ARGS, _PAPER_FINETUNE,
        # Fine-tuning lengths are unknown (our choice): MAE/BEiT's 100 ImageNet epochs; DeiT-style 1000 on Cars.
        {"imagenet-finetune": (100, 1024), "inat2019-finetune": (100, 512), "stanford-cars-finetune": (1000, 256),
         **{f"domainnet-{d}-finetune": (100, 256) for d in DOMAINS}},
        {"epochs": 90, "batch_size": 4096, "blr": 0.1, "warmup_epochs": 10.0, "num_workers": 10},  # MAE's linear probe
        {"s": ("configs_mm/mask_rcnn_vit_s_fpn_3x_coco.py", {}), "b": ("configs_mm/mask_rcnn_vit_b_fpn_3x_coco.py", {}),
         "random-init-b": ("configs_mm/mask_rcnn_vit_b_fpn_6x_coco_random_init.py", {}),
         "random-init-s": ("configs_mm/mask_rcnn_vit_s_fpn_3x_coco.py",  # the 6x schedule on ViT-S (our choice)
                           {"train_cfg.max_epochs": 72, "param_scheduler.1.end": 72, "param_scheduler.1.milestones": [63, 69],
                            "optim_wrapper.paramwise_cfg.layer_decay_rate": 1.0})},
        {"s": ("configs_mm/upernet_vit_s_512x512_160k_ade20k.py", {}), "b": ("configs_mm/upernet_vit_b_512x512_160k_ade20k.py", {}),
         "random-init-s": ("configs_mm/upernet_vit_s_512x512_160k_ade20k.py", {}),
         "random-init-b": ("configs_mm/upernet_vit_b_512x512_160k_ade20k.py", {})},
    ),
    # One GPU, hours per run: ViT-S only ("b" -> ViT-S, so ViT-B rows merge with ViT-S ones), batch
    # 256, 1/30 of the paper's lengths (300 ImageNet epochs -> 10), 1x detection, 16k segmentation.
    "small": Scale(
        "small", {"s": "vit-s16", "b": "vit-s16"}, 224, 256, Fraction(IMAGENET_TRAIN, 256 * 30), 1, 8192,
        {**_PAPER_PRETRAIN, "checkpoint_every": 1000, "num_workers": 8}, _PAPER_METHOD_ARGS,
        {**_PAPER_FINETUNE, "num_workers": 8},
        {"imagenet-finetune": (10, 256), "inat2019-finetune": (10, 256), "stanford-cars-finetune": (100, 256),
         **{f"domainnet-{d}-finetune": (10, 256) for d in DOMAINS}},
        {"epochs": 10, "batch_size": 1024, "blr": 0.1, "warmup_epochs": 1.0, "num_workers": 8},
        # "b" is ViT-S here, so its entries are ViT-S's.
        {k: ("configs_mm/mask_rcnn_vit_s_fpn_3x_coco.py",
             {"train_cfg.max_epochs": 12, "param_scheduler.1.end": 12, "param_scheduler.1.milestones": [9, 11]}) for k in "sb"}
        | {f"random-init-{k}": ("configs_mm/mask_rcnn_vit_s_fpn_3x_coco.py",  # 2x the 1x schedule (our choice)
                                {"train_cfg.max_epochs": 24, "param_scheduler.1.end": 24, "param_scheduler.1.milestones": [21, 23],
                                 "optim_wrapper.paramwise_cfg.layer_decay_rate": 1.0}) for k in "sb"},
        {k: ("configs_mm/upernet_vit_s_512x512_160k_ade20k.py",
             {"train_cfg.max_iters": 16000, "train_cfg.val_interval": 16000, "param_scheduler.1.end": 16000})
         for k in ("s", "b", "random-init-s", "random-init-b")},
    ),
    # Synthetic data on a CPU: every data set maps to the synthetic layouts, 100 steps per 300
    # ImageNet epochs, the smoke chain's fine-tuning and mm settings.
    "smoke": Scale(
        "smoke", {"s": SMOKE_ARCH, "b": SMOKE_ARCH}, SMOKE_IMG, 32, Fraction(1, 3), 4, 256,
        {"blr": 4e-3, "drop_path": 0.0, "crop_scale_min": 0.3, "checkpoint_every": 100},
        {"splitmask": {"decoder_depth": 2, "temperature": 0.2, "contrastive_weight": 1.0},
         "beit": {"mask_ratio": 0.4, "min_mask_patches": 2},
         "dino": {"out_dim": 256, "head_hidden": 128, "head_bottleneck": 64, "local_crops": 2},
         "supervised": {}},
        {"blr": 2e-3, "warmup_epochs": 1.0, "layer_decay": 0.75, "drop_path": 0.0, "rand_augment": None,
         "mixup": 0.0, "cutmix": 0.0, "smoothing": 0.1},
        {d: (10, 32) for d in DOWNSTREAMS if DOWNSTREAMS[d][0] == "finetune"},
        {"epochs": 5, "batch_size": 32, "blr": 0.1, "warmup_epochs": 1.0},
        {k: ("configs_mm/mask_rcnn_vit_fpn_smoke.py", {"train_cfg.max_epochs": n, "train_cfg.val_interval": n})
         for k, n in (("s", 12), ("b", 12), ("random-init-s", 24), ("random-init-b", 24))},
        {k: ("configs_mm/upernet_vit_smoke.py", {"train_cfg.max_iters": 160, "train_cfg.val_interval": 160, "param_scheduler.1.end": 160})
         for k in ("s", "b", "random-init-s", "random-init-b")},
    ),
}

# Where each data set lives at the synthetic scale (refs into the synthetic-smoke run).
_SYNTHETIC = "synthetic-smoke"
_SMOKE_PRETRAIN_IMAGES = {"coco": "coco/train2017", "ade20k": "ade20k/images/training"}  # else classification/train


def _synthetic_data_run() -> Run:
    return Run(_SYNTHETIC, "data", {"generator": "synthetic", "scale": "smoke", "seed": 0})


def _pretrain_images(scale: Scale, pre: Pre) -> Any:
    if scale.name == "smoke":
        return ref(_SYNTHETIC, _SMOKE_PRETRAIN_IMAGES.get(pre.data, "classification/train"))
    if pre.data.startswith("domainnet-"):
        return data("domainnet")  # the domain's train list (PretrainConfig.dataset), never its test images
    return data(pre.data, {"imagenet": "train", "coco": "train2017", "ade20k": "images/training",
                           "stanford-cars": "cars_train"}[pre.data])


def _fmt(x: Fraction | float) -> str:
    x = Fraction(x) if not isinstance(x, Fraction) else x
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.6g}"


def pretrain_run(scale: Scale, pre: Pre, arch: str) -> Run:
    """The concrete pre-training of ``pre`` with abstract arch ``arch`` at ``scale``."""
    concrete = scale.archs[arch]
    steps = max(scale.min_steps, round(pre.budget() * scale.steps_per_budget_epoch))
    method_args = deepcopy(scale.method_args[pre.method])
    tok = pre.tok()
    if tok is not None:
        method_args["tokenizer"] = tok
        method_args["vocab_size"] = 8192 if tok == "dall-e" else scale.vocab_size
        if tok == "dall-e" and scale.name != "smoke":  # smoke: a randomly initialised dVAE (a warning says so)
            method_args["tokenizer_weights"] = data("dall-e", "dalle_encoder.safetensors")
    small = pre.data in SMALL_SETS
    if small and pre.method == "splitmask":
        method_args["keep_ratio"] = 0.25        # 75% masking on the small sets (known)
    if small and pre.method == "beit":
        method_args["mask_ratio"] = 0.75
    config: dict[str, Any] = {
        "data_root": _pretrain_images(scale, pre), "method": pre.method, "method_args": method_args,
        "arch": concrete, "img_size": scale.img_size, "fraction": float(pre.fraction), "steps": steps,
        "batch_size": scale.pretrain_batch, "warmup_steps": max(1, round(steps / 30)),  # BEiT: 10 of 300 epochs
        **deepcopy(scale.pretrain), "seed": 0,
    }
    if pre.method in ("dino", "supervised"):
        config["blr"] = 5e-4 if scale.name != "smoke" else config["blr"]  # DINO / DeiT base lr (our choice)
    if pre.data.startswith("domainnet-") and scale.name != "smoke":
        config["dataset"] = pre.data
    if pre.data == "stanford-cars":
        config["crop_scale_max"] = 0.25         # largest crop 25% on Stanford Cars (known)
    frac = f"-{pre.fraction * 100:g}pct" if pre.data == "imagenet" else ""
    tok_part = f"-{tok}" if tok not in (None, DEFAULT_TOKENIZER) else ""
    name = f"pretrain-{pre.method}-{pre.data}{frac}-{concrete}-ep{_fmt(pre.length())}{tok_part}"
    return Run(name, "pretrain", config, tags={"method": pre.method, "pretrain_data": pre.data_tag(), "arch": concrete})


def _eval_data(scale: Scale, name: str) -> Any:
    if scale.name == "smoke":
        return ref(_SYNTHETIC, {"coco": "coco", "ade20k": "ade20k"}.get(name, "classification"))
    return data(name)


def eval_runs(scale: Scale, ev: Eval) -> list[Run]:
    """The pre-training (if any) and the evaluation runs (one per seed) of ``ev`` at ``scale``."""
    kind, data_name, fmt = DOWNSTREAMS[ev.downstream]
    concrete = scale.archs[ev.arch]
    pre_run = pretrain_run(scale, ev.pre, ev.arch) if ev.pre is not None else None
    checkpoint = ref(pre_run.name, "encoder.safetensors") if pre_run else None
    tags: dict[str, Any] = {"method": ev.method, "pretrain_data": ev.pre.data_tag() if ev.pre else "none",
                            "arch": concrete, "downstream": ev.downstream}
    if ev.pre is not None:  # tags an artifact varies; always present so that shared runs agree
        tags.update(fraction=float(ev.pre.fraction), epochs=float(ev.pre.length()))
        if ev.pre.tok() is not None:
            tags["tokenizer"] = ev.pre.tok()
    stem = f"{ev.downstream}-{pre_run.name.removeprefix('pretrain-') if pre_run else f'random-init-{concrete}'}"
    runs = [pre_run] if pre_run else []
    for seed in scale.seeds:
        if kind in ("finetune", "probe"):
            config: dict[str, Any] = {"data_root": _eval_data(scale, data_name),
                                      "dataset": "imagefolder" if scale.name == "smoke" else (fmt if kind == "finetune" else "imagefolder"),
                                      "checkpoint": checkpoint, "arch": concrete, "img_size": scale.img_size}
            if kind == "finetune":
                epochs, batch = scale.finetune_len[ev.downstream]
                config.update(deepcopy(scale.finetune), epochs=epochs, batch_size=batch)
            else:
                config.update(deepcopy(scale.probe), mode=fmt)
        else:
            table = scale.detect if kind == "detect" else scale.segment
            mm_config, options = table[ev.arch if pre_run else f"random-init-{ev.arch}"]
            config = {"ckpt": checkpoint, "config": mm_config, "data_root": _eval_data(scale, data_name),
                      "cfg_options": deepcopy(options)}
        config["seed"] = seed
        runs.append(Run(f"{stem}-s{seed}", kind, config, tags=dict(tags)))
    return runs


def _artifact_runs(name: str, scale_name: str) -> list[Run]:
    scale = SCALE_SPECS[scale_name]
    _, comparisons, _varies = COMPARISONS[name]
    runs = [_synthetic_data_run()] if scale_name == "smoke" else []
    for ev in comparisons():
        runs.extend(eval_runs(scale, ev))
    return runs


# =========================================================================== the mini scale
# The paper's questions in miniature, on real images that ship inside scikit-learn: the
# handwritten digits (benchmark.data.digits; 1,000 train / 297 val / 500 test images of 10
# classes). Pre-training sees the task's own train images (labels unused); fine-tuning and linear
# probing see 10% of their labels (100 images); the tables report the held-out test split; the
# one fine-tuning setting that is swept (the learning rate) is chosen on the val split, shared
# by every initialisation. The detection and segmentation legs run on the synthetic COCO and
# ADE20k sets (tagged "synthetic"). Sized for 2 CPU cores in under half an hour (`mini`);
# `mini-quick` is the same plan with a few steps and one seed (CI).
MINI_ARCH, MINI_IMG = "vit-mini", 32
MINI_SSL = ["splitmask", "beit", "mae", "dino", "byol"]
MINI_LABELS = 0.1                        # fraction of the train labels that fine-tuning / probing see
MINI_FRACTIONS = (1.0, 0.1)              # Fig. 2 in miniature: pre-training subsets, constant iterations
MINI_BLR_GRID = (3e-3, 1e-2, 3e-2)       # fine-tuning base learning rates swept on val (our choice)
_MINI_DATA = "digits"


@dataclass(frozen=True)
class MiniSpec:
    seeds: tuple[int, ...]
    pretrain_steps: int
    finetune_epochs: int
    probe_epochs: int
    detect_epochs: int
    segment_iters: int


MINI_SPECS = {
    "mini": MiniSpec(seeds=(0, 1, 2), pretrain_steps=150, finetune_epochs=40, probe_epochs=300, detect_epochs=12, segment_iters=160),
    "mini-quick": MiniSpec(seeds=(0,), pretrain_steps=6, finetune_epochs=2, probe_epochs=5, detect_epochs=1, segment_iters=8),
}
# Fine-tuning: one recipe for every initialisation, random init included, with BEiT's layer-wise
# lr decay (0.75; on 100 labels it also helped random init in our trials: 62% vs 46% val).
# Pre-training, shared by every method (our choice): no flips (a mirrored digit is another
# glyph), crops of at least 40% (an 8x8 digit has little to spare); at 150 steps the teacher
# EMAs move faster than at the paper's length (momentum 0.99).
_MINI_PRETRAIN = {"arch": MINI_ARCH, "img_size": MINI_IMG, "batch_size": 64, "blr": 4e-3, "min_lr": 1e-5,
                  "warmup_steps": 10, "weight_decay": 0.05, "drop_path": 0.0, "clip_grad": 3.0, "crop_scale_min": 0.4,
                  "hflip": 0.0, "checkpoint_every": 50, "log_every": 25}
_MINI_METHOD_ARGS: dict[str, dict[str, Any]] = {
    # k-means tokens (the paper's ablation finds them as good as the dVAE; no weights to download).
    "splitmask": {"tokenizer": "kmeans", "vocab_size": 256, "keep_ratio": 0.5, "decoder_depth": 2},
    "beit": {"tokenizer": "kmeans", "vocab_size": 256, "mask_ratio": 0.4, "min_mask_patches": 2},
    "mae": {"mask_ratio": 0.75, "decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4},
    "dino": {"out_dim": 1024, "head_hidden": 512, "head_bottleneck": 128, "local_crops": 2, "local_size": 16,
             "momentum_teacher": 0.99},
    "byol": {"proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512},
    # DeiT's recipe (Mixup/CutMix, RandAugment, erasing) left the loss at ln 10 after 150 steps:
    # the light recipe (crops, smoothing) learns.
    "supervised": {"mixup": 0.0, "cutmix": 0.0, "rand_augment": None, "random_erase": 0.0},
}
_MINI_FINETUNE = {"dataset": "imagefolder", "arch": MINI_ARCH, "img_size": MINI_IMG, "train_fraction": MINI_LABELS,
                  "batch_size": 16, "warmup_epochs": 3.0, "weight_decay": 0.05, "layer_decay": 0.75, "drop_path": 0.0,
                  "rand_augment": None, "mixup": 0.0, "cutmix": 0.0, "smoothing": 0.1, "hflip": 0.0, "crop_scale_min": 0.4,
                  "log_every": 50}
_MINI_PROBE = {"dataset": "imagefolder", "arch": MINI_ARCH, "img_size": MINI_IMG, "mode": "linear", "train_fraction": MINI_LABELS,
               "batch_size": 100, "blr": 10.0, "warmup_epochs": 5.0, "augment": False}
# The probe's blr: MAE's 0.1 is for LARS at batch 16,384; at batch 100 it left every head near
# chance (15-19% val top-1). 10.0 was the best of (0.1, 10.0) in a val trial (52-66%; our choice).


def _mini_pretrain(scale: str, method: str, fraction: float = 1.0) -> Run:
    spec = MINI_SPECS[scale]
    data_tag = "digits-train-labelled" if method == "supervised" else f"digits-{fraction * 100:g}%"
    config = {**deepcopy(_MINI_PRETRAIN), "data_root": ref(_MINI_DATA, "digits/train"), "method": method,
              "method_args": deepcopy(_MINI_METHOD_ARGS[method]), "fraction": fraction, "steps": spec.pretrain_steps, "seed": 0}
    return Run(f"pretrain-{method}-digits-{fraction * 100:g}pct-{scale}", "pretrain", config,
               tags={"method": method, "pretrain_data": data_tag, "arch": MINI_ARCH})


def _mini_init(scale: str, method: str, fraction: float = 1.0) -> tuple[Run | None, Any, str]:
    """(the pre-training run or None, its checkpoint ref, the pretrain_data tag)."""
    if method == "random-init":
        return None, None, "none"
    pre = _mini_pretrain(scale, method, fraction)
    return pre, ref(pre.name, "encoder.safetensors"), pre.tags["pretrain_data"]


def _mini_finetune(scale: str, method: str, fraction: float, seed: int, eval_split: str, blr: float | None) -> Run:
    pre, ckpt, data_tag = _mini_init(scale, method, fraction)
    config = {**deepcopy(_MINI_FINETUNE), "data_root": ref(_MINI_DATA, "digits"), "checkpoint": ckpt,
              "epochs": MINI_SPECS[scale].finetune_epochs, "eval_split": eval_split, "seed": seed}
    tags = {"method": method, "pretrain_data": data_tag, "arch": MINI_ARCH}
    if blr is None:  # the swept setting, from the val sweep's choice
        config["hparams_from"] = ref(f"select-finetune-digits-{scale}", "choice.json")
        return Run(f"finetune-digits-{method}-{_mini_stem(data_tag)}-{scale}-s{seed}", "finetune", config,
                   tags={**tags, "downstream": "digits-10%-labels-finetune"})
    config["blr"] = blr
    return Run(f"sweep-finetune-digits-{method}-blr{blr:g}-{scale}-s{seed}", "finetune", config,
               tags={**tags, "downstream": "digits-10%-labels-finetune-val", "hparams": f"blr={blr:g}"})


def _mini_stem(data_tag: str) -> str:
    """A pretrain_data tag as a run-name part: none, train-labelled, 100pct, 10pct."""
    return data_tag.removeprefix("digits-").replace("%", "pct")


MINI_INITS = ["random-init", "supervised", *MINI_SSL]


def _mini_sweep(scale: str) -> list[Run]:
    sweep = [_mini_finetune(scale, m, 1.0, 0, "val", blr) for blr in MINI_BLR_GRID for m in MINI_INITS]
    select = Run(f"select-finetune-digits-{scale}", "select", {
        "metric": "top1",
        "candidates": [{"result": ref(r.name, "result.json"), "values": {"blr": r.config["blr"]}} for r in sweep],
    }, tags={"method": "select", "pretrain_data": "none", "arch": MINI_ARCH})
    return [*sweep, select]


def _mini_table6(scale: str) -> list[Run]:
    seeds = MINI_SPECS[scale].seeds
    return [_mini_finetune(scale, m, 1.0, s, "test", None) for m in MINI_INITS for s in seeds]


def _mini_fig2(scale: str) -> list[Run]:
    seeds = MINI_SPECS[scale].seeds
    return [_mini_finetune(scale, m, f, s, "test", None) for m in MINI_SSL for f in MINI_FRACTIONS for s in seeds]


def _mini_table8(scale: str) -> list[Run]:
    runs = _mini_table6(scale)
    for method in MINI_INITS:
        pre, ckpt, data_tag = _mini_init(scale, method)
        for seed in MINI_SPECS[scale].seeds:
            config = {**deepcopy(_MINI_PROBE), "data_root": ref(_MINI_DATA, "digits"), "checkpoint": ckpt,
                      "epochs": MINI_SPECS[scale].probe_epochs, "eval_split": "test", "seed": seed}
            runs.append(Run(f"linear-digits-{method}-{_mini_stem(data_tag)}-{scale}-s{seed}", "probe", config,
                            tags={"method": method, "pretrain_data": data_tag, "arch": MINI_ARCH,
                                  "downstream": "digits-10%-labels-linear"}))
    return runs


def _mini_dense(scale: str) -> list[Run]:
    """Detection and segmentation on the synthetic sets: SplitMask pre-trained on the synthetic
    images (the smoke chain's pre-training) vs random initialisation; one seed."""
    spec = MINI_SPECS[scale]
    smoke = _smoke_runs()
    data, pre = smoke[0], smoke[1]
    if scale != "mini":  # the quick plan: a short pre-training of its own
        pre = Run(f"pretrain-splitmask-smoke-{scale}", "pretrain", {**deepcopy(pre.config), "steps": spec.pretrain_steps},
                  tags=dict(pre.tags))
    runs = [data, pre]
    for kind, downstream, config, options in (
        ("detect", "synthetic-coco-maskrcnn", "configs_mm/mask_rcnn_vit_fpn_smoke.py",
         {"train_cfg.max_epochs": spec.detect_epochs, "train_cfg.val_interval": spec.detect_epochs}),
        ("segment", "synthetic-ade20k-upernet", "configs_mm/upernet_vit_smoke.py",
         {"train_cfg.max_iters": spec.segment_iters, "train_cfg.val_interval": spec.segment_iters,
          "param_scheduler.1.end": spec.segment_iters}),
    ):
        for method, ckpt in (("splitmask", ref(pre.name, "encoder.safetensors")), ("random-init", None)):
            # Named apart from the smoke chain's evaluations (the same configs at scale "mini"), so
            # that each run directory's run.json names the scale whose table it belongs to.
            name = f"{kind}-{method}-synthetic-{scale}"
            runs.append(Run(name, kind, {"ckpt": ckpt, "config": config, "data_root": ref(data.name, kind == "detect" and "coco" or "ade20k"),
                                         "seed": 0, "cfg_options": dict(options)},
                            tags=_smoke_tags(method, "synthetic-classification" if ckpt else "none", downstream)))
    return runs


def _mini_plan(fn: Any, scale: str) -> list[Run]:
    """The artifact's own runs, preceded by the runs they need (the digits, the pre-trainings, the
    val sweep and its choice), those tagged ``dependency``: an artifact's table shows its own runs."""
    runs = fn(scale)
    if fn is _mini_dense:
        return runs
    providers = {r.name: r for r in [Run(_MINI_DATA, "data", {"generator": "digits", "seed": 0}), *_mini_sweep(scale),
                                     *(_mini_pretrain(scale, m, f) for m in MINI_SSL for f in MINI_FRACTIONS),
                                     _mini_pretrain(scale, "supervised")]}
    planned = {r.name for r in runs}
    needed: list[Run] = []

    def add(run: Run) -> None:
        for name in run.refs():
            if name not in planned:
                planned.add(name)
                dep = providers[name]
                add(dep)
                needed.append(Run(dep.name, dep.kind, dep.config, tags={**dep.tags, "dependency": True}))

    for run in runs:
        add(run)
    return needed + runs


MINI_ARTIFACTS: dict[str, tuple[str, Any]] = {
    "mini_hparams": ("Digits: the fine-tuning learning rate, chosen on the val split (seed 0), shared by every initialisation",
                     _mini_sweep),
    "mini_table6": ("Digits: does pre-training on the task's own 1,000 images help fine-tuning on 100 labels? (Table 6 in miniature)",
                    _mini_table6),
    "mini_fig2": ("Digits: pre-training on 100% and 10% of the train images at a constant number of iterations (Fig. 2 in miniature)",
                  _mini_fig2),
    "mini_table8": ("Digits: linear probing vs fine-tuning on 100 labels (Table 8 in miniature)", _mini_table8),
    "mini_dense": ("Synthetic COCO / ADE20k: Mask R-CNN and UperNet after SplitMask pre-training vs random init", _mini_dense),
}


@dataclass
class Artifact:
    name: str
    title: str
    scales: dict[str, Any]          # scale -> a function returning the runs


ARTIFACTS: dict[str, Artifact] = {
    "smoke": Artifact("smoke", "The whole chain at smoke scale (synthetic data)", {"smoke": _smoke_runs}),
    **{name: Artifact(name, title, {s: partial(_artifact_runs, name, s) for s in ("smoke", "small", "paper")})
       for name, (title, _, _) in COMPARISONS.items()},
    **{name: Artifact(name, title, {s: partial(_mini_plan, fn, s) for s in MINI_SPECS})
       for name, (title, fn) in MINI_ARTIFACTS.items()},
}
# The tags each artifact varies beyond method / pretrain_data / arch / downstream (for plots).
VARIES: dict[str, tuple[str, ...]] = {name: varies for name, (_, _, varies) in COMPARISONS.items()} | {"mini_fig2": ("fraction",)}

# Named groups of artifacts for --subset: each artifact alone, "all" (every paper artifact) and "smoke".
SUBSETS: dict[str, list[str]] = {"smoke": ["smoke"], "mini": list(MINI_ARTIFACTS), "all": list(COMPARISONS),
                                 **{n: [n] for n in COMPARISONS}, **{n: [n] for n in MINI_ARTIFACTS}}
SCALES = ("smoke", "mini", "mini-quick", "small", "paper")


def plan_runs(subset: str, scale: str) -> list[Run]:
    """The distinct runs (by name) the artifacts of ``subset`` need at ``scale``.

    A run that several artifacts need (same name) appears once, with ``tags["artifact"]`` the
    first of them and ``tags["artifacts"]`` all of them. The same name with another config (or
    other tags) is a registry bug and raises ValueError.
    """
    if subset not in SUBSETS and subset not in ARTIFACTS:
        raise KeyError(f"unknown subset {subset!r}; expected one of {sorted(set(SUBSETS) | set(ARTIFACTS))}")
    names = SUBSETS.get(subset, [subset])
    runs: dict[str, Run] = {}
    for artifact in (ARTIFACTS[n] for n in names):
        if scale not in artifact.scales:
            hint = f"; at the mini scales the paper's questions are the mini_* artifacts (--subset mini)" if scale.startswith("mini") else ""
            raise KeyError(f"artifact {artifact.name!r} has no {scale!r} scale (it has {sorted(artifact.scales)}){hint}")
        for run in artifact.scales[scale]():
            # A run planned only because another needs it (tag "dependency") is not one of the
            # artifact's own: its results do not appear in the artifact's table.
            member = [] if run.tags.pop("dependency", False) else [artifact.name]
            run.tags = {"artifact": artifact.name, "artifacts": member, "scale": scale, **run.tags}
            seen = runs.get(run.name)
            if seen is None:
                runs[run.name] = run
                continue
            same_tags = {k: v for k, v in seen.tags.items() if k not in ("artifact", "artifacts")} == \
                        {k: v for k, v in run.tags.items() if k not in ("artifact", "artifacts")}
            if seen.kind != run.kind or seen.config != run.config or not same_tags:
                raise ValueError(f"run name {run.name!r} is planned twice with different kinds, configs or tags "
                                 f"(artifacts {seen.tags['artifacts']} and {artifact.name!r})")
            if member and artifact.name not in seen.tags["artifacts"]:
                seen.tags["artifacts"].append(artifact.name)
    return list(runs.values())
