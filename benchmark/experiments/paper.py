"""The paper's artifacts, each written ONCE as abstract comparisons (``Pre`` x ``Eval``): which
method pre-trains on which data (and subset, length, tokenizer), which abstract arch ("s" | "b"),
and which downstream evaluation. A scale (:mod:`~benchmark.experiments.scales`) maps those entries
to concrete runs (:func:`pretrain_run`, :func:`eval_runs`). Where the paper
(../shared/paper/PROTOCOL.md) is silent, a setting is marked "our choice".
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import product
from typing import Any

from benchmark.data.sets import DATA_SETS, DOMAINS, IMAGENET_TRAIN
from benchmark.experiments.datasets import (
    DENSE_LAYOUTS,
    DOWNSTREAMS,
    FORMATS,
    LABELLED,
    TRAIN_IMAGES,
    WRITTEN,
    data,
)
from benchmark.experiments.model import Layout, Run, ref
from benchmark.experiments.scales import SCALE_SPECS, Scale
from benchmark.experiments.smoke import SYNTHETIC, synthetic_data_run
from benchmark.methods import METHODS

# The "small data sets" of the paper: 75% masking there (each method's small_set_args), and a 25%
# largest crop on Stanford Cars.
SMALL_SETS = frozenset({"stanford-cars", *(f"domainnet-{d}" for d in DOMAINS)})
DEFAULT_TOKENIZER = "dall-e"        # BEiT's tokenizer; the paper follows BEiT (our choice for SplitMask too)
BUDGET_EPOCHS = 300                 # ImageNet-100% pre-training: 300 epochs (known)
SMALL_SET_EPOCHS = 5000             # Stanford Cars: 5,000 epochs (known); DomainNet: the same (our choice)
FRACTION_SETS = ("imagenet", "fashion-mnist")  # pre-trained on subsets: the fraction is in their names and tags


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

    def tok(self, default: str = DEFAULT_TOKENIZER) -> str | None:
        """The tokenizer of a method that uses one (BEiT, SplitMask; ``default`` where the comparison names
        none), else None."""
        method = METHODS.get(self.method)
        return (self.tokenizer or default) if method is not None and method.uses_tokenizer else None

    def data_tag(self) -> str:
        """pretrain_data as spelled in tables/paper/reference.csv."""
        return f"{self.data}-{self.fraction * 100:g}%" if self.data in FRACTION_SETS else self.data


@dataclass(frozen=True)
class Eval:
    """One evaluation: ``pre`` (None = random initialisation) on ``downstream`` with arch ``arch``."""
    method: str                     # the method tag (e.g. supervised-deit, random-init)
    pre: Pre | None
    arch: str                       # abstract: "s" (ViT-S/16) | "b" (ViT-B/16)
    downstream: str                 # a key of DOWNSTREAMS
    seeds: tuple[int, ...] | None = None  # the evaluation's seeds; None: the scale's


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


# How the report shows a curve over the pre-training subset (Fig. 2), and the dense legs (Tables 4
# and 5: box and mask AP side by side, a figure grouped by pre-training data).
CURVE_OVER_FRACTION = Layout(columns=("pretrain_data",), figure="curve", x="fraction",
                             x_label="pre-training subset (% of the train images)")
DENSE_LAYOUT = Layout(rows=("method", "pretrain_data"), columns=("metric",), groups=("pretrain_data",))
# artifact -> (title, the comparisons, how the report lays it out)
COMPARISONS: dict[str, tuple[str, Any, Layout]] = {
    # Teaser: COCO detection after pre-training on COCO vs ImageNet (our choice: SplitMask and BEiT, ViT-B).
    "fig1": ("COCO detection: pre-training on COCO vs ImageNet (teaser)",
             lambda: _grid(["beit", "splitmask"], [Pre("*", "coco"), IN100], ["b"], ["coco-maskrcnn"]),
             Layout(columns=("pretrain_data", "metric"), groups=("pretrain_data",))),
    # Arch unknown; ViT-B (our choice).
    "table1": ("iNaturalist-2019 fine-tuning after pre-training on ImageNet 1/10/100% and COCO",
               lambda: _grid(["supervised", *SSL], [Pre("*", "imagenet", f) for f in (0.01, 0.1, 1.0)], ["b"],
                             ["inat2019-finetune"])
               + _grid(SSL, [Pre("*", "coco")], ["b"], ["inat2019-finetune"]), Layout(columns=("pretrain_data",))),
    "fig2": ("ImageNet subset size at a constant number of iterations, fine-tuned on ImageNet", _fig2, CURVE_OVER_FRACTION),
    # Epoch counts: our choice (PROTOCOL: up to about 3k helps, then slight over-fitting).
    "fig3": ("Pre-training length on ImageNet-10%, fine-tuned on ImageNet",
             lambda: _grid(["beit", "splitmask"], [Pre("*", "imagenet", 0.1, e) for e in (300, 1000, 2000, 3000, 5000)], ["b"],
                           ["imagenet-finetune"]),
             Layout(columns=("epochs",), figure="curve", x="epochs", x_label="pre-training epochs on ImageNet-10%")),
    # Pre-training data: ImageNet-100%, evaluation: ImageNet fine-tuning (our choice).
    "tokenizers": ("Tokenizers for BEiT and SplitMask: DALL-E dVAE vs random patches vs k-means",
                   lambda: _grid(["beit", "splitmask"],
                                 [Pre("*", "imagenet", 1.0, None, t) for t in ("dall-e", "random-patches", "kmeans")],
                                 ["b"], ["imagenet-finetune"]), Layout(columns=("tokenizer",))),
    "schedules": ("Schedules: the same iterations on ImageNet 1%, 10%, 100% (30k, 3k, 300 epochs)",
                  lambda: _grid(["beit", "splitmask"], [Pre("*", "imagenet", f) for f in (0.01, 0.1, 1.0)], ["b"],
                                ["imagenet-finetune"]),
                  Layout(columns=("pretrain_data",))),
    # Random init uses the longer detection schedule (configs_mm/mask_rcnn_vit_b_fpn_6x_coco_random_init.py).
    "table4": ("COCO Mask R-CNN, ViT-B: pre-training on COCO vs ImageNet",
               lambda: _grid(SSL, [Pre("*", "coco"), IN100], ["b"], ["coco-maskrcnn"])
               + _grid(["supervised-deit"], [IN100, None], ["b"], ["coco-maskrcnn"]), DENSE_LAYOUT),
    # Arch unknown; ViT-B (our choice, BEiT's ADE20k protocol).
    "table5": ("ADE20k UperNet: random init, supervised / BEiT on ImageNet, BEiT / SplitMask on ADE20k",
               lambda: _grid(["supervised-deit", "beit"], [IN100, None], ["b"], ["ade20k-upernet"])
               + _grid(["beit", "splitmask"], [Pre("*", "ade20k")], ["b"], ["ade20k-upernet"]), DENSE_LAYOUT),
    "table6": ("Small data sets: pre-training on the target data only vs ImageNet, ViT-S and ViT-B",
               lambda: [e for d in ("stanford-cars", *(f"domainnet-{x}" for x in DOMAINS))
                        for e in _grid(["supervised-deit", "beit"], [IN100, None], ["s", "b"], [f"{d}-finetune"])
                        + _grid(["beit", "splitmask"], [Pre("*", d)], ["s", "b"], [f"{d}-finetune"])],
               Layout(rows=("method", "pretrain_data"), target=True)),
    # ViT-S and ViT-B, self-supervised methods fine-tuned on ImageNet (our choice of rows; Table 7 is unknown).
    "table7": ("ImageNet fine-tuning after ImageNet pre-training, ViT-S and ViT-B",
               lambda: _grid(SSL, [IN100], ["s", "b"], ["imagenet-finetune"]), Layout(columns=("arch",))),
    "table8": ("Linear probing vs fine-tuning on ImageNet",
               lambda: _grid(SSL, [IN100], ["b"], ["imagenet-linear", "imagenet-finetune"]), Layout()),
    # Epoch counts: our choice around the known 5,000 (longer hurts sharply); ViT-S.
    "cars_overtraining": ("Stanford Cars: pre-training length vs fine-tuning accuracy (appendix)",
                          lambda: _grid(["splitmask"],
                                        [Pre("*", "stanford-cars", 1.0, e) for e in (1000, 2500, 5000, 10000, 20000)],
                                        ["s"], ["stanford-cars-finetune"]),
                          Layout(columns=("epochs",), figure="curve", x="epochs",
                                 x_label="pre-training epochs on Stanford Cars")),
}


# Where each data set lives at the synthetic scale (refs into the synthetic-smoke run).
_SMOKE_PRETRAIN_IMAGES = {"coco": "coco/train2017", "ade20k": "ade20k/images/training"}  # else classification/train


def _pretrain_images(scale: Scale, pre: Pre) -> Any:
    if pre.data in WRITTEN:  # a folder that a data run of the plan writes
        return ref(*WRITTEN[pre.data])
    if pre.data in FORMATS:  # read through its own format (PretrainConfig.dataset): its train split
        return data(pre.data)
    if scale.synthetic:
        return ref(SYNTHETIC, _SMOKE_PRETRAIN_IMAGES.get(pre.data, "classification/train"))
    record = DATA_SETS[pre.data]
    # no folder of train images (DomainNet's domains): its reader's train split (PretrainConfig.dataset)
    return data(record.root, record.pretrain_images or "")


def _fmt(x: Fraction | float) -> str:
    x = Fraction(x) if not isinstance(x, Fraction) else x
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.6g}"


def pretrain_run(scale: Scale, pre: Pre, arch: str, seed: int = 0) -> Run:
    """The concrete pre-training of ``pre`` with abstract arch ``arch`` at ``scale`` and ``seed``."""
    concrete = scale.archs[arch]
    steps = pretrain_steps(scale, pre)
    method_args = deepcopy(scale.method_args[pre.method])
    tok = pre.tok(scale.tokenizer)
    if tok is not None:
        method_args["tokenizer"] = tok
        method_args["vocab_size"] = 8192 if tok == "dall-e" else scale.vocab_size
        if tok == "dall-e" and not scale.synthetic:  # synthetic: a randomly initialised dVAE (a warning says so)
            method_args["tokenizer_weights"] = data("dall-e", "dalle_encoder.safetensors")
    if pre.data in SMALL_SETS:
        method_args.update(METHODS[pre.method].small_set_args)
    config: dict[str, Any] = {
        "data_root": _pretrain_images(scale, pre), "method": pre.method, "method_args": method_args,
        "arch": concrete, "img_size": scale.img_size, "fraction": float(pre.fraction), "steps": steps,
        "batch_size": scale.pretrain_batch, "warmup_steps": max(1, round(steps / 30)),  # BEiT: 10 of 300 epochs
        **deepcopy(scale.pretrain), **deepcopy(scale.pretrain_by_method.get(pre.method, {})), "seed": seed,
    }
    record = DATA_SETS[pre.data]
    # read through its reader: a set in a format of its own, at every scale; a set with no folder of
    # train images (DomainNet's domains: their train lists), where the data are real
    if record.own_format or (record.reader and not record.pretrain_images and not scale.synthetic):
        config["dataset"] = record.reader
    if pre.data == "stanford-cars":
        config["crop_scale_max"] = 0.25         # largest crop 25% on Stanford Cars (known)
        # a scale whose smallest crop is larger (smoke: 0.3) keeps the range non-empty
        config["crop_scale_min"] = min(config.get("crop_scale_min", 0.08), 0.25)
    frac = f"-{pre.fraction * 100:g}pct" if pre.data in FRACTION_SETS else ""
    tok_part = f"-{tok}" if tok not in (None, scale.tokenizer) else ""
    # The miniature names its lengths in steps: its "300 ImageNet epochs" are a budget of iterations.
    length = f"s{steps}" if scale.miniature else f"ep{_fmt(pre.length())}"
    name = f"pretrain-{pre.method}-{pre.data}{frac}-{concrete}-{length}{tok_part}{f'-p{seed}' if seed else ''}"
    return Run(name, "pretrain", config, tags={"method": pre.method, "pretrain_data": pre.data_tag(), "arch": concrete})


def pretrain_steps(scale: Scale, pre: Pre) -> int:
    """The optimiser steps of ``pre`` at ``scale``: its budget in ImageNet epochs, scaled."""
    return max(scale.min_steps, round(pre.budget() * scale.steps_per_budget_epoch))


def epochs_at(scale: Scale, pre: Pre) -> float:
    """The ``epochs`` tag: the paper's epochs over the subset, or, in the miniature, the passes its
    steps make over its subset."""
    if not scale.miniature:
        return float(pre.length())
    return round(pretrain_steps(scale, pre) * scale.pretrain_batch / float(pre.images()), 3)


def _eval_data(scale: Scale, name: str, kind: str) -> Any:
    if name in FORMATS:
        return data(name)
    if name in WRITTEN:  # written by a data run of the plan: the dense kind's layout in it
        return ref(WRITTEN[name][0], DENSE_LAYOUTS[kind])
    if scale.synthetic:
        return ref(SYNTHETIC, {"coco": "coco", "ade20k": "ade20k"}.get(name, "classification"))
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
        tags.update(fraction=float(ev.pre.fraction), epochs=epochs_at(scale, ev.pre))
        if ev.pre.tok(scale.tokenizer) is not None:
            tags["tokenizer"] = ev.pre.tok(scale.tokenizer)
    stem = f"{ev.downstream}-{pre_run.name.removeprefix('pretrain-') if pre_run else f'{ev.method}-{concrete}'}"
    runs = [pre_run] if pre_run else []
    sweep = (sweep_runs(scale, scale.swept[ev.downstream], ev.method if ev.method in scale.sweep_by_init else None)
             if kind == "finetune" and ev.downstream in scale.swept else [])
    runs += [Run(r.name, r.kind, r.config, tags={**r.tags, "dependency": True}) for r in sweep]
    for seed in ev.seeds if ev.seeds is not None else scale.seeds:
        seed_checkpoint = checkpoint
        if pre_run is not None and seed and scale.seeded_pretraining:  # this seed's own pre-training
            seeded = pretrain_run(scale, ev.pre, ev.arch, seed)
            runs.append(seeded)
            seed_checkpoint = ref(seeded.name, "encoder.safetensors")
        if kind == "pixels":
            config = {"data_root": _eval_data(scale, data_name, kind), "dataset": FORMATS.get(data_name, "imagefolder"),
                      "classifier": fmt, **deepcopy(scale.pixels)}
        elif kind in ("finetune", "probe"):
            config = {"data_root": _eval_data(scale, data_name, kind),
                      "dataset": FORMATS.get(data_name, fmt if kind == "finetune" and not scale.synthetic else "imagefolder"),
                      "checkpoint": seed_checkpoint, "arch": concrete, "img_size": scale.img_size}
            if kind == "finetune":
                epochs, batch = scale.finetune_len[ev.downstream]
                config.update(deepcopy(scale.finetune), epochs=epochs, batch_size=batch)
                config.update(deepcopy(scale.finetune_by_downstream.get(ev.downstream, {})))
                if sweep:  # the swept settings, as chosen on val (the select run's choice.json)
                    config["hparams_from"] = ref(sweep[-1].name, "choice.json")
            else:
                config.update(deepcopy(scale.probe), mode=fmt)
        else:
            table = scale.detect if kind == "detect" else scale.segment
            mm_config, options = table[ev.arch if pre_run else f"random-init-{ev.arch}"]
            config = {"ckpt": seed_checkpoint, "config": mm_config, "data_root": _eval_data(scale, data_name, kind),
                      "cfg_options": deepcopy(options)}
            if not pre_run:  # no checkpoint to name the backbone: the plan's arch and size, as the checkpoints have
                config["cfg_options"].update({"model.backbone.arch": concrete, "model.backbone.img_size": scale.img_size})
        if ev.downstream in LABELLED:
            config["train_fraction"] = LABELLED[ev.downstream] / TRAIN_IMAGES[data_name]
        config["seed"] = seed
        runs.append(Run(f"{stem}-s{seed}", kind, config, tags=dict(tags)))
    return runs


def sweep_runs(scale: Scale, downstream: str, method: str | None = None) -> list[Run]:
    """The val sweep of a fine-tuning downstream at ``scale`` and, last, the select run choosing
    the setting with the best mean: every setting of ``scale.sweep`` for every initialisation of
    ``scale.sweep_inits``, or, given a ``method`` of ``scale.sweep_by_init``, every setting of its
    own grid for it alone (seed 0, on the val split)."""
    _, data_name, _ = DOWNSTREAMS[downstream]
    sweep, inits = (scale.sweep_by_init[method], (method,)) if method else (scale.sweep, scale.sweep_inits)
    at_val = replace(scale, seeds=(0,), swept={}, finetune={**scale.finetune, "eval_split": "val"})
    grid = [dict(zip(sweep, values)) for values in product(*sweep.values())]
    runs: list[Run] = []
    for init in inits:
        pre = None if init == "random-init" else Pre(_pre_method(init), data_name)
        for values in grid:
            setting = ",".join(f"{k}={v:g}" for k, v in values.items())
            at = replace(at_val, finetune={**at_val.finetune, **values})
            for run in eval_runs(at, Eval(init, pre, "s", downstream)):
                if run.kind == "pretrain":
                    runs.append(Run(run.name, run.kind, run.config, tags=run.tags))
                    continue
                runs.append(Run(f"sweep-{run.name.removesuffix('-s0')}-{setting.replace('=', '')}", run.kind, run.config,
                                tags={**run.tags, "downstream": f"{downstream}-val", "hparams": setting}))
    candidates = [r for r in runs if r.kind == "finetune"]
    select = Run(f"select-{downstream}{f'-{method}' if method else ''}-{scale.name}", "select", {
        "metric": "top1",
        "candidates": [{"result": ref(r.name, "result.json"), "values": {k: r.config[k] for k in sweep}}
                       for r in candidates],
    }, tags={"method": "select", "pretrain_data": "none", "arch": scale.archs["s"], "downstream": f"{downstream}-val",
             "swept_inits": ", ".join(inits)})
    return [*runs, select]


def artifact_runs(name: str, scale_name: str, comparisons: dict[str, tuple[str, Any, Layout]] | None = None
                  ) -> list[Run]:
    """The runs of the artifact ``name`` (of ``comparisons``, the paper's by default) at ``scale_name``."""
    scale = SCALE_SPECS[scale_name]
    _, evals, _layout = (comparisons or COMPARISONS)[name]
    runs = [synthetic_data_run()] if scale.synthetic else []
    for ev in evals():
        runs.extend(eval_runs(scale, ev))
    return runs
