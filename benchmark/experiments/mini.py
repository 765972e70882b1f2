"""The paper's questions in miniature, on Fashion-MNIST (:mod:`benchmark.data.fashion_mnist`):
ordinary comparisons of the registry (``Pre`` x ``Eval``, as the paper's artifacts are written),
made concrete by the ``mini`` scale (:data:`~benchmark.experiments.scales.MINI`: sizes and lengths)
and its reduced ``mini-quick`` (CI); ``mini-gpu`` trains further on a GPU (its reduced
``mini-gpu-quick`` checks that plan on a CPU).

Pre-training sees the 50,000 train images without labels; every evaluation sees 1,000 of their
labels (100 per class, a draw per seed), settings are chosen on the val split (10,000 images
carved from train), and the tables report the official test split. Table 1's question, the type of
the pre-training images, pits the single items against scenes of 2-5 items on one canvas
(:mod:`benchmark.data.scenes`, COCO's role), written by a data run of the plan. Beside every learned
representation stand its floors on the same labels and splits (logistic regression and k-NN on
raw pixels, random initialisation with the same recipe) and its ceiling (supervised training with
all 50,000 labels). The dense legs (``mini_dense`` and ``mini_dense_beit``: Fig. 1, Tables 4 and 5) are
Mask R-CNN and UperNet on the scenes' own COCO instances and ADE20k layout.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from benchmark.data.fashion_mnist import CLASSES as FASHION_CLASSES
from benchmark.experiments.datasets import WRITTEN, data
from benchmark.experiments.model import Layout, Run
from benchmark.experiments.paper import CURVE_OVER_FRACTION, DENSE_LAYOUT, Eval, Pre, _grid, artifact_runs, sweep_runs
from benchmark.experiments.scales import MINI_SCALES, SCALE_SPECS

CORE = ["splitmask", "beit", "dino"]         # the paper's core comparison: the denoising autoencoders vs DINO
MORE = ["mae", "byol"]                        # asked by mini_more (its own subset: longer than the default plan)
FRACTIONS = (0.01, 0.1, 1.0)                  # Fig. 2 in miniature: pre-training subsets, constant iterations
SEEDS = (0, 1, 2)                             # mini_seeds: Table 6 at three seeds (the default plan has seed 0)
FASHION = Pre("*", "fashion-mnist")
SCENES = Pre("*", "fashion-mnist-scenes")     # mini_table1: scenes of several items (benchmark.data.scenes)
FINETUNE, LINEAR, KNN = "fashion-mnist-1k-finetune", "fashion-mnist-1k-linear", "fashion-mnist-1k-knn"
FLOORS = [Eval("pixels-logistic", None, "s", "fashion-mnist-1k-pixels-logistic"),
          Eval("pixels-knn", None, "s", "fashion-mnist-1k-pixels-knn")]
CEILING = Eval("supervised-all-labels", None, "s", "fashion-mnist-all-finetune")
DETECT, SEGMENT = "fashion-mnist-scenes-maskrcnn", "fashion-mnist-scenes-upernet"
DENSE_ARTIFACTS = ("mini_dense", "mini_dense_beit")


def _table1() -> list[Eval]:
    return _grid(CORE, [FASHION, SCENES, None], ["s"], [FINETUNE]) + FLOORS


def _table6() -> list[Eval]:
    return _grid([*CORE, "supervised"], [FASHION, None], ["s"], [FINETUNE]) + FLOORS + [CEILING]


def _table6_seeds() -> list[Eval]:
    # Seed 0's runs are mini_table6's own; the pre-trainings are shared by every seed.
    return [replace(ev, seeds=SEEDS) for ev in _table6()]


def _fig2() -> list[Eval]:
    return _grid(CORE, [Pre("*", "fashion-mnist", f) for f in FRACTIONS], ["s"], [FINETUNE]) + FLOORS


def _table8() -> list[Eval]:
    return _grid([*CORE, "supervised"], [FASHION, None], ["s"], [FINETUNE, LINEAR, KNN]) + FLOORS


def _more() -> list[Eval]:
    return (_grid(MORE, [Pre("*", "fashion-mnist", f) for f in FRACTIONS], ["s"], [FINETUNE])
            + _grid(MORE, [FASHION], ["s"], [LINEAR, KNN]) + FLOORS)


def _dense() -> list[Eval]:
    # As Fig. 1 and Tables 4-5: SplitMask pre-trained on the scenes themselves (the target data,
    # COCO's role) vs on the single items (the miniature's ImageNet), supervised pre-training on the
    # labelled items, random init with a longer schedule (the scale's "random-init-s" entries).
    # Random init first: the driver starts ready runs of unknown cost in plan order, and its runs are
    # the longest (last in the plan, at --jobs 2 they would be left to run alone at the end).
    return (_grid(["supervised"], [None], ["s"], [DETECT, SEGMENT])
            + _grid(["splitmask"], [SCENES, FASHION], ["s"], [DETECT, SEGMENT])
            + _grid(["supervised"], [FASHION], ["s"], [DETECT, SEGMENT]))


def _dense_beit() -> list[Eval]:
    # BEiT's dense legs, beside random init's (shared with mini_dense): an artifact of their own, since
    # with them the dense legs took 36 minutes on 2 cores, past the half hour a subset may take.
    return _grid(["beit"], [None, SCENES, FASHION], ["s"], [DETECT, SEGMENT])


# artifact -> (title, the comparisons, how the report lays it out); the paper artifact each stands for
MINI_COMPARISONS: dict[str, tuple[str, Any, Layout]] = {
    "mini_table1": ("Fashion-MNIST: pre-training on the single items vs on scenes of 2-5 items (not object-centric, as "
                    "COCO) at the same number of iterations, denoising autoencoders vs DINO, fine-tuned on 1,000 labels "
                    "of the items, with random init and the floors (Table 1 in miniature)", _table1,
                    Layout(columns=("pretrain_data",))),
    "mini_table6": ("Fashion-MNIST: pre-training on the task's own 50,000 unlabelled images vs random init vs supervised, "
                    "fine-tuned on 1,000 labels, with the floors and the ceiling (Table 6 in miniature)", _table6, Layout()),
    "mini_seeds": ("Fashion-MNIST: Table 6 in miniature at three seeds (each seed its own 1,000 labels and fine-tuning "
                   "order; the pre-trainings are shared, except at mini-gpu, where each seed pre-trains too)",
                   _table6_seeds, Layout()),
    "mini_fig2": ("Fashion-MNIST: pre-training on 100%, 10% and 1% of the train images at a constant number of iterations, "
                  "denoising autoencoders vs DINO (Fig. 2 in miniature)", _fig2, CURVE_OVER_FRACTION),
    "mini_table8": ("Fashion-MNIST: linear probing and k-NN beside fine-tuning, 1,000 labels (Table 8 in miniature)",
                    _table8, Layout()),
    "mini_dense": ("Fashion-MNIST scenes: Mask R-CNN (box and mask AP) and UperNet (mIoU) after pre-training on the "
                   "scenes themselves vs on the single items, supervised pre-training, and random init with a longer "
                   "schedule (Fig. 1, Tables 4 and 5 in miniature)", _dense, DENSE_LAYOUT),
    "mini_dense_beit": ("Fashion-MNIST scenes: the dense legs of mini_dense after BEiT pre-trained on the scenes vs on the "
                        "single items, beside random init (Fig. 1, Tables 4 and 5 in miniature)", _dense_beit, DENSE_LAYOUT),
    "mini_more": ("Fashion-MNIST: MAE and BYOL at the miniature's fractions, fine-tuned and probed (beyond the default plan)",
                  _more, Layout(columns=("downstream", "pretrain_data"), figure="curve", x="fraction",
                                x_label=CURVE_OVER_FRACTION.x_label)),
}
# the pre-trained initialisations of the dense legs (their findings rest on these pre-trainings' gates)
DENSE_METHODS = frozenset(ev.method for name in DENSE_ARTIFACTS for ev in MINI_COMPARISONS[name][1]() if ev.pre)
MINIATURE_OF = {"table6": "mini_table6", "fig2": "mini_fig2", "table8": "mini_table8"}


def scenes_data_run(scale: str) -> Run:
    """The data run that writes the scenes: items of Fashion-MNIST's train split in the train
    scenes, of its test split in the val scenes (:mod:`benchmark.data.scenes`), as many as the
    scale's ``scenes``."""
    train, val = SCALE_SPECS[scale].scenes
    return Run(WRITTEN[SCENES.data][0], "data", {"generator": "scenes", "seed": 0, "data_root": data("fashion-mnist"),
                                                   "train_scenes": train, "val_scenes": val, "size": 64})


def mini_artifact_runs(name: str, scale: str) -> list[Run]:
    """The runs of the miniature's artifact ``name`` at ``scale``, with the data runs that write
    the pre-training images they read."""
    runs = artifact_runs(name, scale, MINI_COMPARISONS)
    if any(WRITTEN[SCENES.data][0] in run.refs() for run in runs):
        runs.insert(0, scenes_data_run(scale))
    return runs


def hparams_runs(scale: str) -> list[Run]:
    """The fine-tuning sweeps on val and their choices (``mini_hparams``): the shared one, and one
    per initialisation with a grid of its own."""
    spec = SCALE_SPECS[scale]
    return [run for method in (None, *spec.sweep_by_init) for run in sweep_runs(spec, FINETUNE, method)]


# scale -> (arch, image size, batch, method_args by method) of its pre-trainings (python -m benchmark.perf --scale);
# supervised pre-training's head has Fashion-MNIST's classes (the stage reads them from the data)
SCALE_PRETRAININGS: dict[str, tuple[str, int, int, dict[str, dict[str, Any]]]] = {
    name: (SCALE_SPECS[name].archs["s"], SCALE_SPECS[name].img_size, SCALE_SPECS[name].pretrain_batch,
           {**SCALE_SPECS[name].method_args,
            "supervised": {**SCALE_SPECS[name].method_args["supervised"], "num_classes": len(FASHION_CLASSES)}})
    for name in MINI_SCALES}
