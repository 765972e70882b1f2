"""Frozen features: a ViT's pooled features of a data set, on one process or gathered in order
over a process group, and what is computed on them (top-k accuracy, DINO's weighted k-NN).
Shared by the probes, fine-tuning's head fit and the pre-training monitor.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from benchmark.data.loader import make_loader
from benchmark.models.vit import pooled_features
from benchmark.training.distributed import Context
from benchmark.training.log import RunLog
from benchmark.training.runtime import autocast

KNN_BANK_CHUNK = 32768  # training features per similarity block
SINGLE = Context()      # one process, no process group


def freeze(encoder: nn.Module) -> nn.Module:
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder


def encode(encoder: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The frozen encoder's pooled features of a batch, in float32 (bf16 autocast on GPUs)."""
    with torch.no_grad(), autocast(device):
        return pooled_features(encoder, images.to(device, non_blocking=True)).float()


def share(num_items: int, ctx: Context) -> list[int]:
    """This process's items of ``num_items``: every ``world_size``-th from ``rank`` (all of them
    on one process)."""
    return list(range(ctx.rank, num_items, ctx.world_size))


def extraction_steps(num_items: int, batch_size: int, ctx: Context = SINGLE) -> int:
    """Batches of :func:`extract_features` on rank 0 (the largest share)."""
    return -(-len(share(num_items, ctx)) // per_process_batch(batch_size, ctx))


def per_process_batch(batch_size: int, ctx: Context) -> int:
    """Each process's extraction batch: the global ``batch_size`` over the processes (rounded up)."""
    return -(-batch_size // ctx.world_size)


def extract_features(
    encoder: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, num_workers: int = 0,
    log: RunLog | None = None, step0: int = 0, ctx: Context = SINGLE, gather: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (N, D) and labels (N,) of every item of ``dataset``, in order, on ``device``.

    Under torchrun each process encodes its share (:func:`share`) in batches of ``batch_size``
    over the processes; with ``gather`` the features and labels of all items are then gathered,
    in order, on every process; without, the process's share alone is returned."""
    mine = share(len(dataset), ctx)
    part = dataset if len(mine) == len(dataset) else Subset(dataset, mine)
    loader = make_loader(part, per_process_batch(batch_size, ctx), device=device, num_workers=num_workers)
    feats, labels = [], []
    for i, (images, targets) in enumerate(loader):
        feats.append(encode(encoder, images, device))
        labels.append(targets.to(device))
        if log is not None:
            log.step(step0 + i, len(targets))
    if feats:
        feats_t, labels_t = torch.cat(feats), torch.cat(labels)
    else:  # more processes than items
        feats_t = torch.zeros(0, encoder.num_features, device=device)
        labels_t = torch.zeros(0, dtype=torch.long, device=device)
    if gather and ctx.distributed:
        feats_t, labels_t = gather_in_order(feats_t, len(dataset), ctx), gather_in_order(labels_t, len(dataset), ctx)
    return feats_t, labels_t


def gather_in_order(part: torch.Tensor, num_items: int, ctx: Context) -> torch.Tensor:
    """The rows of all items, in order, from each process's rows of its :func:`share`, on every
    process. Shares are padded to the same length for ``all_gather`` (nccl gathers GPU tensors,
    gloo CPU ones: ``part`` stays on its device)."""
    if not ctx.distributed:
        return part
    length = -(-num_items // ctx.world_size)
    padded = part.new_zeros((length, *part.shape[1:]))
    padded[:len(part)] = part
    pieces = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(pieces, padded.contiguous())
    # Item j * world_size + r is row j of rank r; the padding falls past num_items.
    return torch.stack(pieces, 1).flatten(0, 1)[:num_items]


def topk_counts(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[int]:
    """``[items, correct top-1, correct top-5]`` of class ``scores`` (N, C): exact integers, which
    add up over batches and processes."""
    top = scores.topk(min(5, num_classes), dim=-1).indices
    labels = labels.to(top.device)
    return [labels.numel(), int((top[:, 0] == labels).sum()), int((top == labels[:, None]).any(-1).sum())]


def topk_from_counts(counts: list[int], num_classes: int) -> dict[str, float]:
    """Top-1 (and top-5 with more than five classes) accuracy in percent, from :func:`topk_counts`."""
    total = max(1, counts[0])
    metrics = {"top1": 100.0 * counts[1] / total}
    if num_classes > 5:
        metrics["top5"] = 100.0 * counts[2] / total
    return metrics


def topk_metrics(scores: torch.Tensor, labels: torch.Tensor, num_classes: int, ctx: Context = SINGLE) -> dict[str, float]:
    """Top-1 (and top-5 with more than five classes) accuracy in percent of class ``scores`` (N, C).

    Under torchrun ``scores`` and ``labels`` are this process's share of the items: the counts of
    correct predictions and of items are summed over the processes (exact integers), so every
    process returns the metrics of all items."""
    counts = topk_counts(scores, labels, num_classes)
    if ctx.distributed:
        device = scores.device if dist.get_backend() == "nccl" else torch.device("cpu")
        summed = torch.tensor(counts, dtype=torch.int64, device=device)
        dist.all_reduce(summed)
        counts = summed.tolist()
    return topk_from_counts(counts, num_classes)


def nearest_neighbours(
    bank: torch.Tensor, queries: torch.Tensor, k: int, query_chunk: int = 256, bank_chunk: int = KNN_BANK_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and indices (Q, k), best first, of each query's ``k`` nearest rows
    of ``bank``. Computed in blocks of ``query_chunk`` x ``bank_chunk`` similarities, keeping a
    running top-k, so the full (Q, N) matrix is never held."""
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    k = min(k, bank.shape[0])
    sims_out, index_out = [], []
    for q0 in range(0, queries.shape[0], query_chunk):
        q = queries[q0:q0 + query_chunk]
        best_s = best_i = None
        for b0 in range(0, bank.shape[0], bank_chunk):
            s = q @ bank[b0:b0 + bank_chunk].T
            s, i = s.topk(min(k, s.shape[1]), dim=1)
            i = i + b0
            if best_s is not None:
                s, j = torch.cat([best_s, s], 1).topk(k, dim=1)
                i = torch.cat([best_i, i], 1).gather(1, j)
            best_s, best_i = s, i
        sims_out.append(best_s)
        index_out.append(best_i)
    return torch.cat(sims_out), torch.cat(index_out)


def weighted_votes(sims: torch.Tensor, neighbour_labels: torch.Tensor, num_classes: int, temperature: float) -> torch.Tensor:
    """DINO's class scores (Q, C): each neighbour adds ``exp(similarity / T)`` to its class."""
    votes = torch.zeros(sims.shape[0], num_classes, device=sims.device, dtype=sims.dtype)
    return votes.scatter_add_(1, neighbour_labels, (sims / temperature).exp())


def knn_classify(
    train_feats: torch.Tensor, train_labels: torch.Tensor, query_feats: torch.Tensor, num_classes: int,
    ks: tuple[int, ...] = (20,), temperature: float = 0.07, query_chunk: int = 256,
) -> dict[int, torch.Tensor]:
    """Weighted k-NN class scores (Q, C) of the queries for each ``k`` in ``ks`` (one search)."""
    sims, index = nearest_neighbours(train_feats, query_feats, max(ks), query_chunk)
    neighbour_labels = train_labels.to(index.device)[index]
    return {k: weighted_votes(sims[:, :k], neighbour_labels[:, :k], num_classes, temperature) for k in ks}
