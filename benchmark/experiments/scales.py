"""The scales: each maps the paper's abstract comparisons (:mod:`~benchmark.experiments.paper`)
to concrete configs (archs, image size, batch sizes, lengths, data locations), and changes sizes
and lengths only, never which comparisons are made. The paper's protocol is written out once
(:data:`PAPER`); every other scale is a delta from it (``dataclasses.replace``). Settings the paper
does not give are marked "our choice".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from benchmark.data.sets import DOMAINS, IMAGENET_TRAIN
from benchmark.experiments.datasets import DOWNSTREAMS, TRAIN_IMAGES, data
from benchmark.experiments.smoke import SMOKE_ARCH, SMOKE_IMG


@dataclass(frozen=True)
class Scale:
    name: str
    archs: dict[str, str]                   # abstract arch -> models.vit.ARCHS name
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
    pixels: dict[str, Any] = field(default_factory=dict)      # PixelsConfig fields (the floors)
    # Settings of the fine-tunings chosen on the val split: each a grid, swept for every
    # initialisation of sweep_inits (seed 0) on a downstream; the best mean wins
    # (benchmark.stages.select). swept: downstream -> the downstream whose sweep chooses for it.
    sweep: dict[str, tuple[float, ...]] = field(default_factory=dict)
    sweep_inits: tuple[str, ...] = ()
    # initialisation -> a grid of its own: swept for it alone, and its fine-tunings take its own choice
    sweep_by_init: dict[str, dict[str, tuple[float, ...]]] = field(default_factory=dict)
    swept: dict[str, str] = field(default_factory=dict)
    tokenizer: str = "dall-e"               # BEiT's and SplitMask's, where a comparison names none
    # downstream -> FinetuneConfig fields of its own, over the shared ``finetune`` (a warm-up for runs
    # shorter than the shared one, a learning rate chosen for it alone); a field set here is not swept
    finetune_by_downstream: dict[str, dict[str, Any]] = field(default_factory=dict)
    # method -> PretrainConfig fields of its own, over the shared ``pretrain`` (a recipe such as
    # DeiT's learning rate, not the method's arguments)
    pretrain_by_method: dict[str, dict[str, Any]] = field(default_factory=dict)
    # True: an evaluation at seed s fine-tunes a pre-training of seed s (each seed its own pre-training,
    # named ``...-p<s>`` beyond seed 0); False: every seed fine-tunes the seed-0 pre-training
    seeded_pretraining: bool = False
    # A scale that claims trained models (its report gates them): every pre-training's online k-NN
    # gains less than flat_within points over the last fifth of its steps, the ceiling reaches ceiling_min.
    flat_within: float | None = None
    ceiling_min: float | None = None
    # Every data set is the synthetic chain's (benchmark.data.synthetic): no downloads, no tokenizer weights.
    synthetic: bool = False
    # The paper in miniature (Fashion-MNIST): plans the mini_* artifacts rather than the paper's, names
    # its lengths in steps (its "300 ImageNet epochs" are a budget of iterations) and tags each
    # pre-training with the passes its steps make over its subset.
    miniature: bool = False
    # (train, val) scenes of several items that the miniature's Table 1 pre-trains on (benchmark.data.scenes)
    scenes: tuple[int, int] | None = None
    # The scale the driver runs instead where a GPU is visible and no --scale is given (None: this one)
    on_gpu: str | None = None

    @property
    def converged(self) -> bool:
        return self.flat_within is not None and self.ceiling_min is not None


_PAPER_PRETRAIN = {"blr": 1.5e-3, "min_lr": 1e-5, "weight_decay": 0.05, "drop_path": 0.1, "clip_grad": 3.0,
                   "crop_scale_min": 0.08, "checkpoint_every": 2000, "num_workers": 10}  # BEiT's values (our choice)
_PAPER_METHOD_ARGS = {
    "splitmask": {"decoder_depth": 2, "temperature": 0.2, "contrastive_weight": 1.0},  # weight unknown: 1.0 (our choice)
    "beit": {},  # BEiT's 75 of 196 patches (methods.beit.BEIT_MASK_RATIO)
    "dino": {},
    "supervised": {},
}
_PAPER_FINETUNE = {"blr": 5e-4, "warmup_epochs": 5.0, "layer_decay": 0.65, "drop_path": 0.1, "num_workers": 10}

# The paper's protocol: ViT-S/B at 224, batch 2048 (BEiT), 300 ImageNet epochs' worth of iterations.
PAPER = Scale(
    name="paper", archs={"s": "vit-s16", "b": "vit-b16"}, img_size=224, pretrain_batch=2048,
    steps_per_budget_epoch=Fraction(IMAGENET_TRAIN, 2048), min_steps=1, vocab_size=8192,
    pretrain=_PAPER_PRETRAIN, method_args=_PAPER_METHOD_ARGS, finetune=_PAPER_FINETUNE,
    pretrain_by_method={"dino": {"blr": 5e-4}, "supervised": {"blr": 5e-4}},  # DINO / DeiT base lr (our choice)
    # Fine-tuning lengths are unknown (our choice): MAE/BEiT's 100 ImageNet epochs; DeiT-style 1000 on Cars.
    finetune_len={"imagenet-finetune": (100, 1024), "inat2019-finetune": (100, 512), "stanford-cars-finetune": (1000, 256),
                  **{f"domainnet-{d}-finetune": (100, 256) for d in DOMAINS}},
    probe={"epochs": 90, "batch_size": 4096, "blr": 0.1, "warmup_epochs": 10.0, "num_workers": 10},  # MAE's linear probe
    detect={"s": ("configs_mm/mask_rcnn_vit_s_fpn_3x_coco.py", {}), "b": ("configs_mm/mask_rcnn_vit_b_fpn_3x_coco.py", {}),
            "random-init-b": ("configs_mm/mask_rcnn_vit_b_fpn_6x_coco_random_init.py", {}),
            "random-init-s": ("configs_mm/mask_rcnn_vit_s_fpn_3x_coco.py",  # the 6x schedule on ViT-S (our choice)
                              {"train_cfg.max_epochs": 72, "param_scheduler.1.end": 72, "param_scheduler.1.milestones": [63, 69],
                               "optim_wrapper.paramwise_cfg.layer_decay_rate": 1.0})},
    segment={"s": ("configs_mm/upernet_vit_s_512x512_160k_ade20k.py", {}),
             "b": ("configs_mm/upernet_vit_b_512x512_160k_ade20k.py", {}),
             "random-init-s": ("configs_mm/upernet_vit_s_512x512_160k_ade20k.py", {}),
             "random-init-b": ("configs_mm/upernet_vit_b_512x512_160k_ade20k.py", {})},
)

# One GPU, hours per run: ViT-S only ("b" -> ViT-S, so ViT-B rows merge with ViT-S ones), batch
# 256, 1/30 of the paper's lengths (300 ImageNet epochs -> 10), 1x detection, 16k segmentation.
SMALL = replace(
    PAPER, name="small", archs={"s": "vit-s16", "b": "vit-s16"}, pretrain_batch=256,
    steps_per_budget_epoch=Fraction(IMAGENET_TRAIN, 256 * 30),
    pretrain={**PAPER.pretrain, "checkpoint_every": 1000, "num_workers": 8},
    finetune={**PAPER.finetune, "num_workers": 8},
    finetune_len={"imagenet-finetune": (10, 256), "inat2019-finetune": (10, 256), "stanford-cars-finetune": (100, 256),
                  **{f"domainnet-{d}-finetune": (10, 256) for d in DOMAINS}},
    probe={"epochs": 10, "batch_size": 1024, "blr": 0.1, "warmup_epochs": 1.0, "num_workers": 8},
    # "b" is ViT-S here, so its entries are ViT-S's.
    detect={k: ("configs_mm/mask_rcnn_vit_s_fpn_3x_coco.py",
                {"train_cfg.max_epochs": 12, "param_scheduler.1.end": 12, "param_scheduler.1.milestones": [9, 11]})
            for k in "sb"}
    | {f"random-init-{k}": ("configs_mm/mask_rcnn_vit_s_fpn_3x_coco.py",  # 2x the 1x schedule (our choice)
                            {"train_cfg.max_epochs": 24, "param_scheduler.1.end": 24, "param_scheduler.1.milestones": [21, 23],
                             "optim_wrapper.paramwise_cfg.layer_decay_rate": 1.0}) for k in "sb"},
    segment={k: ("configs_mm/upernet_vit_s_512x512_160k_ade20k.py",
                 {"train_cfg.max_iters": 16000, "train_cfg.val_interval": 16000, "param_scheduler.1.end": 16000})
             for k in ("s", "b", "random-init-s", "random-init-b")},
)

# Synthetic data on a CPU: every data set maps to the synthetic layouts, 100 steps per 300
# ImageNet epochs, the smoke chain's fine-tuning and mm settings.
SMOKE = replace(
    PAPER, name="smoke", archs={"s": SMOKE_ARCH, "b": SMOKE_ARCH}, img_size=SMOKE_IMG, pretrain_batch=32, pretrain_by_method={},
    steps_per_budget_epoch=Fraction(1, 3), min_steps=4, vocab_size=256, synthetic=True,
    pretrain={"blr": 4e-3, "drop_path": 0.0, "crop_scale_min": 0.3, "checkpoint_every": 100},
    method_args={"splitmask": {"decoder_depth": 2, "temperature": 0.2, "contrastive_weight": 1.0},
                 "beit": {"mask_ratio": 0.4, "min_mask_patches": 2},
                 "dino": {"out_dim": 256, "head_hidden": 128, "head_bottleneck": 64, "local_crops": 2},
                 "supervised": {}},
    finetune={"blr": 2e-3, "warmup_epochs": 1.0, "layer_decay": 0.75, "drop_path": 0.0, "rand_augment": None,
              "mixup": 0.0, "cutmix": 0.0, "smoothing": 0.1},
    finetune_len={d: (10, 32) for d in DOWNSTREAMS if DOWNSTREAMS[d][0] == "finetune"},
    probe={"epochs": 5, "batch_size": 32, "blr": 0.1, "warmup_epochs": 1.0},
    detect={k: ("configs_mm/mask_rcnn_vit_fpn_smoke.py", {"train_cfg.max_epochs": n, "train_cfg.val_interval": n})
            for k, n in (("s", 12), ("b", 12), ("random-init-s", 24), ("random-init-b", 24))},
    segment={k: ("configs_mm/upernet_vit_smoke.py",
                 {"train_cfg.max_iters": 160, "train_cfg.val_interval": 160, "param_scheduler.1.end": 160})
             for k in ("s", "b", "random-init-s", "random-init-b")},
)

# The paper in miniature: every data set is Fashion-MNIST (benchmark.data.fashion_mnist), a 6-block
# ViT of width 128 on 32 px images (8x8 patches), 2 CPU cores. "300 ImageNet epochs" of iterations
# become MINI_STEPS pre-training steps at batch MINI_BATCH whatever the subset (the paper holds
# iterations constant); the evaluations see 1,000 labels (100 per class) and report the official test
# split. Lengths: what half an hour on 2 cores affords (the budget is spent before the curves flatten:
# REPORT.md shows the online k-NN curves); the fine-tuning learning rate is swept on val by
# mini_hparams. The same images in twice the steps: at 1,000 steps of 64, DINO's online k-NN ended
# below random-init features and its teacher near uniform; at 2,000 steps of 32 it rose (val:
# 51.6 -> 60.2, teacher entropy 5.6 of ln 1024 = 6.9) and SplitMask's rose further too. The
# trials behind these choices (val, seed 0) are in docs/mini.md.
MINI_STEPS, MINI_BATCH = 2000, 32
# Evaluations keep the whole 28 px item, as the pixel floors do: timm's ImageNet centre crop (0.875
# of the side) cut the items' edges off and cost the fine-tunings 2-5 points on val (docs/mini.md).
WHOLE = 1.0
_MINI_METHOD_ARGS: dict[str, dict[str, Any]] = {
    # k-means tokens (the paper's ablation finds them as good as the dVAE; no weights to download).
    "splitmask": {"tokenizer": "kmeans", "vocab_size": 256, "keep_ratio": 0.5, "decoder_depth": 2},
    "beit": {"tokenizer": "kmeans", "vocab_size": 256, "mask_ratio": 0.4, "min_mask_patches": 2},
    "mae": {"mask_ratio": 0.75, "decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4},
    "dino": {"out_dim": 1024, "head_hidden": 512, "head_bottleneck": 128, "local_crops": 2, "local_size": 16,
             "momentum_teacher": 0.99},
    "byol": {"proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512},
    # DeiT's heavy recipe (Mixup/CutMix, RandAugment, erasing) does not learn in this budget: the light one.
    "supervised": {"mixup": 0.0, "cutmix": 0.0, "rand_augment": None, "random_erase": 0.0},
}
# The dense legs on the scenes (mini_dense): the first `scenes` train scenes for `epochs` (detection)
# or `iters` (segmentation), evaluated on every val scene (mmdet's CocoMetric scores every image of
# its annotation file, so a subset of them would count the others as misses); random init trains
# twice as long, as the paper's 6x schedule against 3x (Table 4). The mini's lengths are what the subset's
# half hour affords on 2 cores (two runs at once, one core each: Mask R-CNN about 8 scenes/s, UperNet about
# 24); their learning rates (in the mini configs) were chosen on held-out train scenes (docs/mini.md).
_MINI_DETECT, _MINI_SEGMENT = "configs_mm/mask_rcnn_vit_fpn_mini.py", "configs_mm/upernet_vit_mini.py"


def _dense_lengths(epochs: int, iters: int, scenes: int) -> dict[str, dict[str, tuple[str, dict[str, Any]]]]:
    subsets = {"train_dataloader.dataset.indices": scenes}
    detect = {k: (_MINI_DETECT, {"train_cfg.max_epochs": n, "train_cfg.val_interval": n, **subsets})
              for k, n in (("s", epochs), ("random-init-s", 2 * epochs))}
    segment = {k: (_MINI_SEGMENT, {"train_cfg.max_iters": n, "train_cfg.val_interval": n, "param_scheduler.1.end": n,
                                   **subsets})
               for k, n in (("s", iters), ("random-init-s", 2 * iters))}
    return {"detect": detect, "segment": segment}


MINI = replace(
    PAPER, name="mini", archs={"s": "vit-mini", "b": "vit-mini"}, img_size=32, pretrain_batch=MINI_BATCH,
    # Supervised pre-training learns the labels faster from crops of at least 80% (val, docs/mini.md:
    # smallest crop 0.4 / 0.8 / 1.0 -> fine-tuned 76.1 / 76.3 / 74.7, linear probe 76.5 / 80.8 / -);
    # the self-supervised methods keep the shared 0.4, which their views need. BYOL at the shared
    # rate did not learn in 2,000 steps on the full set; its best on val was a quarter of it (online
    # k-NN at the end 56.8 / 57.6 / 55.0 / 51.1 at blr 3e-4 / 1e-3 / 2e-3 / 4e-3; docs/mini.md).
    pretrain_by_method={"supervised": {"crop_scale_min": 0.8}, "byol": {"blr": 1e-3}},
    steps_per_budget_epoch=Fraction(MINI_STEPS, 300), min_steps=1, vocab_size=256,
    pretrain={"blr": 4e-3, "min_lr": 1e-5, "weight_decay": 0.05, "drop_path": 0.0, "clip_grad": 3.0, "crop_scale_min": 0.4,
              "checkpoint_every": 400, "log_every": 100, "monitor_every": 200,
              "monitor_root": data("fashion-mnist"), "monitor_dataset": "fashion-mnist", "monitor_crop": WHOLE},
    method_args=_MINI_METHOD_ARGS,
    # Light augmentation (crops of at least 80%): in this budget the fine-tunings underfit. LP-FT (the
    # head first fitted to the frozen features): fine-tuning from a random head lost what pre-trained
    # features had (val, at the best blr tried for each: random init 72.7 -> 74.4, SplitMask 75.1 -> 77.0,
    # supervised 76.8 -> 79.7; docs/mini.md).
    finetune={"warmup_epochs": 3.0, "weight_decay": 0.05, "layer_decay": 0.75, "drop_path": 0.0, "rand_augment": None,
              "mixup": 0.0, "cutmix": 0.0, "smoothing": 0.1, "crop_scale_min": 0.8, "eval_crop": WHOLE, "eval_split": "test",
              "head_init": "linear-probe", "log_every": 50},
    finetune_len={"fashion-mnist-1k-finetune": (20, 32), "fashion-mnist-all-finetune": (1, 64)},
    finetune_by_downstream={"fashion-mnist-all-finetune": {"warmup_epochs": 0.2}},  # one epoch of 781 steps: 156 of warm-up
    # The probe's blr: MAE's 0.1 is for LARS at batch 16,384; at batch 100 it leaves a head near chance.
    probe={"epochs": 100, "batch_size": 100, "blr": 10.0, "warmup_epochs": 5.0, "augment": False, "eval_crop": WHOLE,
           "eval_split": "test"},
    pixels={"eval_split": "test", "img_size": 28, "grey": True},
    **_dense_lengths(epochs=2, iters=300, scenes=1000), seeds=(0,),
    # Swept on random init: it needs no pre-training, so the sweep runs beside the pre-trainings
    # (with LP-FT, the trials in docs/mini.md found SplitMask's and BEiT's best at the same value,
    # 3e-2). Supervised pre-training's features already classify and a high rate loses them (its
    # best on val was 3e-3: 80.6 / 80.8 / 80.2 at 1e-3 / 3e-3 / 1e-2; docs/mini.md), so it has a
    # grid and a choice of its own.
    sweep={"blr": (1e-2, 3e-2, 1e-1)}, sweep_inits=("random-init",),
    sweep_by_init={"supervised": {"blr": (1e-3, 3e-3, 1e-2)}},
    # the ceiling takes the learning rate chosen for 1,000 labels
    swept={"fashion-mnist-1k-finetune": "fashion-mnist-1k-finetune", "fashion-mnist-all-finetune": "fashion-mnist-1k-finetune"},
    tokenizer="kmeans", miniature=True, on_gpu="mini-gpu",
    # As many train scenes as train items (Table 1 compares image types, not set sizes; pre-training
    # holds iterations constant either way): two minutes and 870 MB on one core here. The val scenes
    # (from the test split) are for the dense legs.
    scenes=(TRAIN_IMAGES["fashion-mnist-scenes"], 2_000),
)
# A few steps, every record of a run's log still written (the quick scales' pre-trainings)
_QUICK_STEPS = Fraction(6, 300)
_QUICK_PRETRAIN = {"checkpoint_every": 3, "log_every": 3, "monitor_every": 3, "monitor_bank": 200, "monitor_queries": 200}
# The same plan with a few steps and one seed (CI runs it end to end).
MINI_QUICK = replace(
    MINI, name="mini-quick", steps_per_budget_epoch=_QUICK_STEPS, pretrain={**MINI.pretrain, **_QUICK_PRETRAIN},
    finetune_len={"fashion-mnist-1k-finetune": (1, 32), "fashion-mnist-all-finetune": (1, 512)},
    finetune_by_downstream={d: {"warmup_epochs": 0.2} for d in ("fashion-mnist-1k-finetune", "fashion-mnist-all-finetune")},
    probe={**MINI.probe, "epochs": 2, "warmup_epochs": 0.5}, seeds=(0,), sweep={"blr": (1e-2, 3e-2)},
    sweep_by_init={"supervised": {"blr": (3e-3, 1e-2)}},
    **_dense_lengths(epochs=1, iters=8, scenes=32),  # segmentation: past its 5 warm-up steps
    scenes=(128, 16), on_gpu=None,  # two batches of 64: a pre-training refuses fewer images than one batch
)


# The miniature on one GPU, trained until its curves flatten: the same comparisons, images and
# model as MINI, the images held on the GPU with each batch's views made there (images_on_device:
# the per-image loader fed a GPU a fraction of what the model takes), eight times the batch and
# several runs sharing the device (the driver's --jobs). Table 6's seeds are pre-training seeds too.
# Settings not yet chosen on val on a GPU are marked "our choice" (docs/mini.md has the trials).
GPU_STEPS, GPU_BATCH = 2000, 256  # 10 passes over the 50,000 train images at every fraction (our choice)
MINI_GPU = replace(
    MINI, name="mini-gpu", pretrain_batch=GPU_BATCH, steps_per_budget_epoch=Fraction(GPU_STEPS, 300),
    # blr 1.5e-3 (BEiT's official base rate): the CPU's learning rate grown with the square root of the batch (our
    # choice). Tried on val (CPU, seed 0, fine-tuned on 1,000 labels; docs/mini.md): SplitMask at 7.5e-4 / 1.5e-3 / 3e-3
    # 83.02 / 83.20 / 83.40 (online k-NN 74.3 / 76.1 / 74.3), within the noise of single runs; over pre-training seeds
    # 0-1, 1.5e-3 / 3e-3 83.18 / 83.00 (seeds 0-2 at 1.5e-3: 83.22): kept. DINO at 5e-4 (its reference's rate) / 1.5e-3
    # / 3e-3 82.32 / 82.38 / 82.06 at seed 0: kept, interior; at pre-training seeds 0-2, 1.5e-3 81.98 (mean; one run's
    # sd about 0.4). BEiT at 1.5e-3 / 3e-3 / 6e-3 82.71 / 83.49 / 81.46 at seed 0; at pre-training seeds 0-2, 1.5e-3 /
    # 3e-3 82.98 / 83.27 (mean; one run's sd about 0.3; with seeds 1-2 run again on two threads, 3e-3's five runs
    # 83.06): its own 3e-3, interior, the higher mean, within the noise. BYOL at 5e-4, the CPU scale's 1e-3 halved as
    # the shared rate was lowered (our choice); at pre-training seeds 0-1, 5e-4 / 1e-3 82.33 / 82.37 (mean; one run's
    # sd about 0.4), 2.5e-4 / 2e-3 82.08 / 82.21 at seed 0: kept, interior. On a second draw of the 1,000 labels
    # the methods keep their order (docs/mini.md).
    pretrain={**MINI.pretrain, "blr": 1.5e-3, "images_on_device": True, "checkpoint_every": 2000, "log_every": 100,
              "monitor_every": GPU_STEPS // 20, "monitor_bank": 5000, "monitor_queries": 10_000},
    pretrain_by_method={"supervised": {"crop_scale_min": 0.8}, "byol": {"blr": 5e-4}, "beit": {"blr": 3e-3}},
    # every 2 epochs the top-1 on val (the fine-tuned gate: has val stopped rising?)
    finetune={**MINI.finetune, "images_on_device": True, "warmup_epochs": 5.0, "log_every": 100, "monitor_every": 2},
    # Lengths until val stops rising (val, CPU, seed 0; docs/mini.md): random init on 1,000 labels at blr 3e-2
    # reached 77.9 / 81.1 / 81.5 at 50 / 100 / 200 epochs, gaining 0.9 ± 0.6 / 1.15 ± 0.17 / -0.05 ± 0.11 over the
    # last fifth (the gate's line; seed 1: 80.1 / 81.7 at 100 / 200, gaining 0.33 / 0.19), hence 200. SplitMask's,
    # BEiT's and DINO's starting points (this scale's pre-trainings, run on the CPU) gain under 0.5 at 200 too.
    finetune_len={"fashion-mnist-1k-finetune": (200, 64), "fashion-mnist-all-finetune": (120, 256)},
    # The ceiling's own rate, not the 1,000 labels' (val, CPU, 15 epochs, one seed; docs/mini.md): layer decay
    # 0.75 at blr 1e-3 / 3e-3 / 1e-2 / 3e-2 -> 82.2 / 85.4 / 87.3 / 81.5 (the last on test), none (1.0) at
    # 3e-3 / 1e-2 / 3e-2 -> 86.9 / 85.5 / 87.5: the best values within about 2 points, unordered, one seed;
    # the interior best kept. Its own length: at 40 / 60 epochs (val, CPU, one seed) it reached 90.2 / 91.1,
    # still gaining 1.15 / 1.09 points over its last fifth read from two points (0.99 ± 0.13 at 60 from the gate's
    # line: no margin); 1,000 labels went from 1.15 to -0.05 when their length doubled, hence 120: on the CPU it
    # reached 92.45, gaining 0.74 ± 0.08 over its last fifth (val, seed 0).
    finetune_by_downstream={"fashion-mnist-all-finetune": {"warmup_epochs": 1.0, "blr": 1e-2}},
    swept={"fashion-mnist-1k-finetune": "fashion-mnist-1k-finetune"},
    # random init's choice was the top of 3e-3 / 1e-2 / 3e-2 on the H200; MINI's grid (inherited), one step higher,
    # gave 77.0 / 77.9 / 63.3 at 1e-2 / 3e-2 / 1e-1 (val, CPU, 50 epochs, seed 0): an interior best
    sweep_by_init={"supervised": {"blr": (3e-4, 1e-3, 3e-3)}},
    seeded_pretraining=True, flat_within=1.0, ceiling_min=90.0, on_gpu=None,
)
# mini-gpu's plan with a few steps, for a CPU: every run kind, setting and report section of the GPU
# scale (images held in memory, each seed's pre-training, the val curves, the ceiling's own rate) is
# checked here before a GPU's minutes are spent on it (--subset mini-all: about 25 min on 2 cores).
# Its models learn nothing, so its gates fail.
MINI_GPU_QUICK = replace(
    MINI_GPU, name="mini-gpu-quick", steps_per_budget_epoch=_QUICK_STEPS, pretrain={**MINI_GPU.pretrain, **_QUICK_PRETRAIN},
    finetune_len={"fashion-mnist-1k-finetune": (2, 64), "fashion-mnist-all-finetune": (1, 512)},  # one val check each
    finetune_by_downstream={"fashion-mnist-1k-finetune": {"warmup_epochs": 0.2},
                            "fashion-mnist-all-finetune": {**MINI_GPU.finetune_by_downstream["fashion-mnist-all-finetune"],
                                                           "warmup_epochs": 0.2}},
    probe=MINI_QUICK.probe, sweep=MINI_QUICK.sweep, sweep_by_init={"supervised": {"blr": (1e-3, 3e-3)}},
    detect=MINI_QUICK.detect, segment=MINI_QUICK.segment,
    scenes=(2 * GPU_BATCH, 16),  # a pre-training refuses fewer images than one batch
)

# In the order --scale lists them.
SCALE_SPECS: dict[str, Scale] = {scale.name: scale for scale in (SMOKE, MINI, MINI_QUICK, MINI_GPU, MINI_GPU_QUICK, SMALL,
                                                                  PAPER)}
MINI_SCALES = tuple(name for name, scale in SCALE_SPECS.items() if scale.miniature)
PAPER_SCALES = tuple(name for name, scale in SCALE_SPECS.items() if not scale.miniature)
