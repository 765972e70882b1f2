"""The online monitor of pre-training: does the encoder learn while it trains?

Every ``monitor_every`` steps (and before the first, where the encoder is still its random
initialisation) pre-training scores the current encoder with the weighted k-NN of the probe
(:func:`benchmark.training.features.knn_classify`, DINO's): the pooled features of a fixed, class-balanced
set of labelled train images (the bank) classify a fixed, class-balanced set of val images, and
the top-1 goes to ``log.jsonl`` as ``{"step": S, "knn_top1": ...}``. No gradients, no randomness
(the images are transformed once, deterministically, at the start), so a monitored run trains
exactly as an unmonitored one; a few seconds per call at the miniature's size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from benchmark.data.augment import EVAL_CROP, eval_transform
from benchmark.data.classification import load_classification
from benchmark.data.folders import fraction_subset
from benchmark.training.features import encode, knn_classify, topk_metrics

MONITOR_BATCH = 256


def balanced(dataset: Dataset, count: int, seed: int) -> list[int]:
    """About ``count`` class-balanced indices of ``dataset``, fixed for ``seed``."""
    return fraction_subset(len(dataset), min(1.0, count / max(1, len(dataset))), seed, labels=dataset.targets)


class KnnMonitor:
    """The k-NN top-1 of an encoder on fixed labelled images (module docstring)."""

    def __init__(self, root: str, dataset: str, img_size: int, bank: int, queries: int, k: int = 20,
                 temperature: float = 0.07, crop: float = EVAL_CROP, seed: int = 0) -> None:
        train, val = load_classification(dataset, root, "train"), load_classification(dataset, root, "val")
        self.num_classes = len(train.classes)
        self.k, self.temperature = k, temperature
        transform = eval_transform(img_size, crop)

        def tensors(data: Dataset, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            items = [data[i] for i in indices]
            return torch.stack([transform(image) for image, _ in items]), torch.tensor([label for _, label in items])

        self.bank, self.bank_labels = tensors(train, balanced(train, bank, seed))
        self.queries, self.query_labels = tensors(val, balanced(val, queries, seed))

    def features(self, encoder: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        return torch.cat([encode(encoder, chunk, device) for chunk in images.split(MONITOR_BATCH)])

    def __call__(self, encoder: nn.Module) -> dict[str, float]:
        device = next(encoder.parameters()).device
        was_training = encoder.training
        encoder.eval()
        try:
            bank, queries = self.features(encoder, self.bank, device), self.features(encoder, self.queries, device)
        finally:
            encoder.train(was_training)
        scores = knn_classify(bank, self.bank_labels.to(device), queries, self.num_classes, (self.k,), self.temperature)
        return {"knn_top1": topk_metrics(scores[self.k], self.query_labels, self.num_classes)["top1"]}
