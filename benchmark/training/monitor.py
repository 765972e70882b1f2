"""The online monitor of pre-training: does the encoder learn while it trains?

Every ``monitor_every`` steps (and before the first, where the encoder is still its random
initialisation) pre-training scores the current encoder with the weighted k-NN of the probe
(:func:`benchmark.training.features.knn_classify`, DINO's): the pooled features of a fixed, class-balanced
set of labelled train images (the bank) classify a fixed, class-balanced set of val images, and
the top-1 goes to ``log.jsonl`` as ``{"step": S, "knn_top1": ...}``. No gradients, no randomness
(the images are transformed once, deterministically, at the start), so a monitored run trains
exactly as an unmonitored one; a few seconds per call at the miniature's size.

Fine-tuning's monitor (:class:`ValMonitor`, its ``monitor_every`` epochs) asks the same of a
classifier, whatever split its result reports: its top-1 on fixed val images, ``val_top1`` in its
log, so that a scale claiming trained models can show that val stopped rising (the report's gates).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from benchmark.data.augment import EVAL_CROP, eval_transform
from benchmark.data.classification import load_classification
from benchmark.data.folders import fraction_subset
from benchmark.training.features import encode, knn_classify, topk_metrics
from benchmark.training.runtime import autocast

MONITOR_BATCH = 256
VAL_IMAGES = 10_000  # fine-tuning's monitor: at most this many val images (class-balanced), held as tensors


def balanced(dataset: Dataset, count: int, seed: int) -> list[int]:
    """About ``count`` class-balanced indices of ``dataset``, fixed for ``seed``."""
    return fraction_subset(len(dataset), min(1.0, count / max(1, len(dataset))), seed, labels=dataset.targets)


def transformed(data: Dataset, indices: list[int], transform) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of ``data`` at ``indices``, transformed once, as one tensor, and their labels."""
    items = [data[i] for i in indices]
    return torch.stack([transform(image) for image, _ in items]), torch.tensor([label for _, label in items])


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class KnnMonitor:
    """The k-NN top-1 of an encoder on fixed labelled images (module docstring)."""

    def __init__(self, root: str, dataset: str, img_size: int, bank: int, queries: int, k: int = 20,
                 temperature: float = 0.07, crop: float = EVAL_CROP, seed: int = 0) -> None:
        train, val = load_classification(dataset, root, "train"), load_classification(dataset, root, "val")
        self.num_classes = len(train.classes)
        self.k, self.temperature = k, temperature
        transform = eval_transform(img_size, crop)
        self.bank, self.bank_labels = transformed(train, balanced(train, bank, seed), transform)
        self.queries, self.query_labels = transformed(val, balanced(val, queries, seed), transform)

    def features(self, encoder: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        return torch.cat([encode(encoder, chunk, device) for chunk in images.split(MONITOR_BATCH)])

    def __call__(self, encoder: nn.Module) -> dict[str, float]:
        device = next(encoder.parameters()).device
        with evaluating(encoder):
            bank, queries = self.features(encoder, self.bank, device), self.features(encoder, self.queries, device)
        scores = knn_classify(bank, self.bank_labels.to(device), queries, self.num_classes, (self.k,), self.temperature)
        return {"knn_top1": topk_metrics(scores[self.k], self.query_labels, self.num_classes)["top1"]}


class ValMonitor:
    """A classifier's top-1 on fixed, class-balanced val images (at most :data:`VAL_IMAGES`), as
    ``{"val_top1": ...}``: fine-tuning's monitor (module docstring)."""

    def __init__(self, root: str, dataset: str, img_size: int, crop: float = EVAL_CROP, seed: int = 0) -> None:
        val = load_classification(dataset, root, "val")
        self.num_classes = len(val.classes)
        self.images, self.labels = transformed(val, balanced(val, VAL_IMAGES, seed), eval_transform(img_size, crop))

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        with evaluating(model), autocast(device):
            logits = torch.cat([model(chunk.to(device)).float() for chunk in self.images.split(MONITOR_BATCH)])
        return {"val_top1": topk_metrics(logits, self.labels, self.num_classes)["top1"]}
