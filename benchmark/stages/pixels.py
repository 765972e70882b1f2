"""The trivial floors: classifiers on raw pixels, with the labels and splits a fine-tuning sees.

    python -m benchmark.pixels --config CONFIG.json --out RUN_DIR

A learned representation that does not beat a classifier on the raw pixels of the same labelled
images has not learned the task, so every table of the miniature shows these rows beside the
ViTs (``../shared/paper/SMALL_DATA.md``):

- ``classifier="logistic"``: scikit-learn's multinomial logistic regression (L-BFGS) on the pixels
  scaled to [0, 1];
- ``classifier="knn"``: scikit-learn's k-nearest-neighbour classifier (Euclidean distance).

Both see the class-balanced ``train_fraction`` of the train split that fine-tuning and probing see
(the same subset for the same seed: :func:`benchmark.data.folders.fraction_subset`). Their one
setting (the inverse regularisation ``C``, or ``k``) is chosen on the ``val`` split from a grid,
and the classifier with that setting is scored on ``eval_split``; ``result.json`` (kind
``pixels``) records the grid, every val score and the choice, and says when the choice lies at
an edge of the grid that a wider grid could move (:func:`at_edge`). Images are read at
``img_size`` (resized where they are another size), greyscale with ``grey``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch.utils.data import Dataset

from benchmark.data.classification import READERS, load_classification
from benchmark.data.folders import fraction_subset
from benchmark.errors import ConfigError
from benchmark.stages import cost
from benchmark.stages.cli import stage_main
from benchmark.stages.kinds import RunKind, register_kind
from benchmark.training.config import Rule, at_least, config_from_dict, in_unit, one_of, validate, write_config
from benchmark.utils.results import write_result

CLASSIFIERS = ("logistic", "knn")
DEFAULT_GRIDS = {"logistic": (0.001, 0.01, 0.1, 1.0, 10.0), "knn": (1, 3, 5, 10, 20)}


@dataclass
class PixelsConfig:
    data_root: str
    dataset: str = "imagefolder"         # the data set's format (benchmark.data.classification.READERS)
    classifier: str = "logistic"         # "logistic" | "knn"
    grid: list = field(default_factory=list)  # C (logistic) or k (knn) values tried on val; [] = DEFAULT_GRIDS
    train_fraction: float = 1.0          # class-balanced subset of the train labels, as fine-tuning's
    eval_split: str = "val"              # the split result.json reports: "val", or "test"
    img_size: int = 28                   # pixels per side the images are read at
    grey: bool = True                    # one channel (the luminance) instead of three
    max_iter: int = 1000                 # L-BFGS iterations of the logistic regression
    seed: int = 0
    tags: dict = field(default_factory=dict)

    RULES: ClassVar = {
        "dataset": one_of(READERS), "classifier": one_of(CLASSIFIERS),
        "grid": Rule(lambda v: all(isinstance(x, (int, float)) and x > 0 for x in v), "positive numbers"),
        "train_fraction": in_unit(), "eval_split": one_of(["val", "test"]), "img_size": at_least(1),
        "max_iter": at_least(1), "seed": at_least(0),
    }

    def relations(self) -> list[str]:
        if self.classifier == "knn" and any(float(k) != int(k) for k in self.grid):
            return [f"grid = {self.grid}: k must be whole numbers"]
        return []

    def settings(self) -> list[float]:
        return [float(x) for x in (self.grid or DEFAULT_GRIDS[self.classifier])]


def pixels_of(dataset: Dataset, indices: list[int] | None, img_size: int, grey: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N, pixels) float32 in [0, 1] and (N,) labels of the items ``indices`` (all when None)."""
    rows = range(len(dataset)) if indices is None else indices
    feats, labels = [], []
    for i in rows:
        image, label = dataset[i]
        image = image.convert("L" if grey else "RGB")
        if image.size != (img_size, img_size):
            image = image.resize((img_size, img_size))
        feats.append(np.asarray(image, dtype=np.float32).reshape(-1) / 255.0)
        labels.append(label)
    return np.stack(feats), np.asarray(labels)


def make_classifier(kind: str, setting: float, cfg: PixelsConfig) -> Any:
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=setting, max_iter=cfg.max_iter)
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=int(setting))


def top1(classifier: Any, feats: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float((classifier.predict(feats) == labels).mean())


def pixel_floor(cfg: PixelsConfig, out_dir: str | Path, resume: bool = True) -> dict[str, Any]:
    """Chooses the setting on val, scores it on ``eval_split``, writes ``result.json``; returns the metrics."""
    del resume  # a run of seconds: nothing to resume
    started = time.time()
    validate(cfg)
    out = Path(out_dir)
    train = load_classification(cfg.dataset, cfg.data_root, "train")
    val = load_classification(cfg.dataset, cfg.data_root, "val")
    held_out = val if cfg.eval_split == "val" else load_classification(cfg.dataset, cfg.data_root, cfg.eval_split)
    subset = fraction_subset(len(train), cfg.train_fraction, cfg.seed, labels=train.targets)
    settings = cfg.settings()
    if cfg.classifier == "knn" and max(settings) > len(subset):
        raise ConfigError(f"PixelsConfig.grid: k = {max(settings):g} is more than the {len(subset)} labelled images")
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "config.json", cfg)
    x_train, y_train = pixels_of(train, subset, cfg.img_size, cfg.grey)
    x_val, y_val = pixels_of(val, None, cfg.img_size, cfg.grey)
    val_scores = []
    for setting in settings:
        val_scores.append(top1(make_classifier(cfg.classifier, setting, cfg).fit(x_train, y_train), x_val, y_val))
    best = int(np.argmax(val_scores))  # the first of equals
    chosen = make_classifier(cfg.classifier, settings[best], cfg).fit(x_train, y_train)
    if held_out is val:
        metrics = {"top1": val_scores[best]}
    else:
        x_eval, y_eval = pixels_of(held_out, None, cfg.img_size, cfg.grey)
        metrics = {"top1": top1(chosen, x_eval, y_eval)}
    setting = "C" if cfg.classifier == "logistic" else "k"
    record = {**asdict(cfg), "choice": {"setting": setting, "grid": settings, "val_top1": val_scores,
                                        "chosen": settings[best], "at_edge": at_edge(setting, settings[best], settings),
                                        "labelled_images": len(subset)}}
    write_result(out, "pixels", metrics, record, seed=cfg.seed, started=started)
    return metrics


def at_edge(setting: str, chosen: float, grid: list[float]) -> bool:
    """Whether ``chosen``, the value of ``setting`` chosen from ``grid``, lies at an edge of the grid
    that a wider grid could move (any swept setting: the report's grids gate asks it of each): k = 1
    is the smallest k there is, so a k-NN choice of 1 at the grid's bottom is not at an open edge."""
    if len(grid) < 2 or chosen not in (min(grid), max(grid)):
        return False
    return not (setting == "k" and chosen == min(grid) == 1)


def estimate(config: dict[str, Any], dataset_sizes: dict[str, int] | None = None, world_size: int | None = None
             ) -> cost.Estimate:
    """No network: a CPU job of seconds to minutes (scikit-learn), no FLOPs on an accelerator."""
    return cost.finish(cost.Estimate("pixels", None, None, train_flops=0.0, eval_flops=0.0, steps=0))


def main(argv: list[str] | None = None) -> int:
    return stage_main("pixels", "A floor: logistic regression or k-NN on raw pixels, the setting chosen on val.",
                      PixelsConfig, pixel_floor, lambda metrics: json.dumps(metrics), argv)


KIND = register_kind(RunKind(
    "pixels", run=lambda config, run_dir: pixel_floor(config_from_dict(PixelsConfig, config), run_dir),
    done_file=lambda config: "result.json", command="benchmark.pixels", estimate=estimate,
    metrics={"pixels": ("top1",)}, timeout_min=60,
))
