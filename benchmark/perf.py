"""Throughput benchmarks, measured side by side in one run on the machine it runs on.

    python -m benchmark.perf pretrain [--methods ...] [--archs vit-s16 vit-b16] [--img-size 224]
                                      [--batch-size 8] [--steps 5] [--warmup 2] [--out tables/perf_pretrain.csv]

For each method and model size: the median time of a whole training step (forward, backward,
optimiser step and the method's own updates) on a batch made by the method's own augmentation,
and beside it the *floor*: the same transformer blocks the method ran during that step, found
with forward hooks and timed bare (each stack of blocks, such as an encoder or a decoder, as one
chain on random tokens of the recorded shape, forward and backward; forward only for blocks the
step ran without gradients, such as an EMA teacher's). ``overhead = step / floor - 1`` is what the method's own work costs (masking,
tokenizing, gathering, losses, EMA updates, optimiser). Each time is a median over ``--steps``
timed repetitions after ``--warmup``, with the interquartile range as the spread; on a GPU each
repetition runs 5 steps back to back, as a training loop does (see ``timed``).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from PIL import Image
from timm.models.vision_transformer import Block
from torch.utils.data import default_collate

from benchmark.engine import autocast, build_optimizer, fast_float32_matmul, pick_device
from benchmark.methods import METHODS, method_class
from benchmark.methods.base import Augmentation
from benchmark.models import create_vit
from benchmark.pretrain import to_device
from benchmark.utils.io import atomic_path

ROOT = Path(__file__).resolve().parent.parent
# Small method settings that keep every method runnable on a laptop; sizes are the paper's.
METHOD_ARGS: dict[str, dict[str, Any]] = {
    "splitmask": {"vocab_size": 8192},
    "beit": {"vocab_size": 8192},
    "dino": {"local_crops": 8},
    "supervised": {"num_classes": 1000},
}


GPU_BURST = 5  # calls per timed sample on a GPU (see timed())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """(median, interquartile range) of ``fn``'s wall time in seconds.

    On a GPU, each sample is the mean of ``GPU_BURST`` calls run back to back with one
    synchronisation at the end, as a training loop runs them: the host queues the next call's
    work while the GPU runs the last, so host-side work that a loop hides is hidden here too.
    """
    burst = GPU_BURST if device.type == "cuda" else 1
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        for _ in range(burst):
            fn()
        _sync(device)
        times.append((time.perf_counter() - start) / burst)
    q = np.percentile(times, [25, 75]) if len(times) > 1 else (times[0], times[0])
    return statistics.median(times), float(q[1] - q[0])


def synthetic_batch(method: nn.Module, img_size: int, batch_size: int, seed: int = 0) -> Any:
    """A batch shaped as the method's own augmentation shapes it (crops, views, labels)."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (img_size + 32, img_size + 32, 3), dtype=np.uint8))
    transform = method.train_transform(Augmentation(img_size))
    batch = default_collate([transform(image) for _ in range(batch_size)])
    if method.needs_labels:
        return batch, torch.arange(batch_size) % getattr(method, "num_classes", 2)
    return batch


class BlockCall(NamedTuple):
    block: nn.Module
    shape: tuple[int, ...]       # of the input tokens
    trained: bool                # gradients on (else forward only: an EMA teacher, a target)
    kwargs: dict[str, Any]       # tensors detached (BEiT's shared relative position bias)


def record_blocks(model: nn.Module, run: Callable[[], None]) -> list[BlockCall]:
    """The transformer blocks ``run`` calls, in order."""
    calls: list[BlockCall] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict, _out: Any) -> None:
        trained = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
        extra = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        calls.append(BlockCall(module, tuple(args[0].shape), trained, extra))

    hooks = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()
             if isinstance(m, Block) or type(m).__name__ == "Block"]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def chains(calls: list[BlockCall]) -> list[list[BlockCall]]:
    """Consecutive calls on tokens of one shape, with gradients on or off alike: a network's
    stack of blocks (an encoder, a decoder, one crop size of a student), run as one chain."""
    groups: list[list[BlockCall]] = []
    for call in calls:
        if groups and (groups[-1][-1].shape, groups[-1][-1].trained) == (call.shape, call.trained):
            groups[-1].append(call)
        else:
            groups.append([call])
    return groups


def bare_blocks(calls: list[BlockCall], device: torch.device) -> Callable[[], None]:
    """Runs the recorded blocks bare, as the step ran them: each stack of blocks as one chain
    on random tokens, then one backward through a trained chain (not one per block, which on a
    GPU would time kernel launches and reductions the step never does)."""
    groups = chains(calls)

    def run() -> None:
        for group in groups:
            trained = group[0].trained
            x = torch.randn(group[0].shape, device=device, requires_grad=trained)
            with autocast(device), torch.set_grad_enabled(trained):
                for call in group:
                    x = call.block(x, **call.kwargs)
            if trained:
                x.float().sum().backward()

    return run


def measure(method_name: str, arch: str, img_size: int, batch_size: int, steps: int, warmup: int,
            device: torch.device, profile: int = 0) -> dict[str, Any]:
    torch.manual_seed(0)
    fast_float32_matmul(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cls = method_class(method_name)
    method = cls(create_vit(arch, img_size), **METHOD_ARGS.get(method_name, {})).to(device)
    batch = synthetic_batch(method, img_size, batch_size)
    # Data-dependent parts (a codebook) fitted on random images: enough patches for the vocabulary.
    count = max(batch_size, -(-getattr(method, "vocab_size", 0) // method.num_patches))
    method.prepare([torch.randn(count, 3, img_size, img_size, device=device)])
    optimizer = build_optimizer(method, lr=1e-4, weight_decay=0.05)
    inputs = to_device(batch, device)
    step_index = [0]

    def train_step() -> None:
        generator = torch.Generator().manual_seed(step_index[0])
        with autocast(device):
            loss = method(inputs, generator)["loss"]
        loss.backward()
        method.before_optimizer_step(step_index[0], 10**6)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.after_step(step_index[0], 10**6)
        step_index[0] += 1

    calls = record_blocks(method, train_step)
    step, step_iqr = timed(train_step, device, steps, warmup)
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    floor, floor_iqr = timed(bare_blocks(calls, device), device, steps, warmup)
    if profile:
        print_profile(train_step, device, profile, f"{method_name} {arch} batch {batch_size}")
    method.zero_grad(set_to_none=True)
    return {
        "method": method_name, "arch": arch, "img_size": img_size, "batch_size": batch_size,
        "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        "threads": torch.get_num_threads(), "step_ms": 1000 * step, "step_iqr_ms": 1000 * step_iqr,
        "img_per_s": batch_size / step, "blocks_ms": 1000 * floor, "blocks_iqr_ms": 1000 * floor_iqr,
        "block_calls": len(calls), "block_tokens": sum(int(np.prod(c.shape[:-1])) for c in calls),
        "overhead": step / floor - 1, "peak_mem_gib": peak_gib,
    }


def print_profile(fn: Callable[[], None], device: torch.device, rows: int, title: str) -> None:
    """The ``rows`` operators of three calls of ``fn`` that take the most time of their own
    (on the GPU where there is one), from torch.profiler."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            fn()
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"[perf] profile of 3 steps: {title}", file=sys.stderr)
    print(prof.key_averages().table(sort_by=key, row_limit=rows), file=sys.stderr, flush=True)


def run_pretrain(methods: list[str], archs: list[str], img_size: int, batch_size: int, steps: int, warmup: int,
                 out: Path, device: torch.device, profile: int = 0) -> pd.DataFrame:
    rows = []
    for arch in archs:
        for name in methods:
            try:
                row = measure(name, arch, img_size, batch_size, steps, warmup, device, profile)
            except (ImportError, ModuleNotFoundError) as err:
                print(f"[perf] {name}: not available ({err})", file=sys.stderr)
                continue
            rows.append(row)
            # Each measurement starts from an empty allocator: one method's large buffers left
            # cached would fragment the next one's memory and slow it (seen: up to 30% on a GPU).
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(f"[perf] {name:<11} {arch:<8} {row['img_per_s']:8.2f} img/s  step {row['step_ms']:9.1f} ms  "
                  f"blocks {row['blocks_ms']:9.1f} ms  overhead {100 * row['overhead']:+6.1f}%", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.perf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    pre = sub.add_parser("pretrain", help="training-step throughput of each pre-training method")
    pre.add_argument("--methods", nargs="+", default=sorted(METHODS))
    pre.add_argument("--archs", nargs="+", default=["vit-s16", "vit-b16"])
    pre.add_argument("--img-size", type=int, default=224)
    pre.add_argument("--batch-size", type=int, default=8)
    pre.add_argument("--steps", type=int, default=5)
    pre.add_argument("--warmup", type=int, default=2)
    pre.add_argument("--device", default="auto")
    pre.add_argument("--profile", type=int, default=0, metavar="ROWS",
                     help="also print the ROWS operators that take the most time in a step (torch.profiler)")
    pre.add_argument("--out", default=str(ROOT / "tables" / "perf_pretrain.csv"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        print(f"error: unknown methods {unknown}; expected some of {sorted(METHODS)}", file=sys.stderr)
        return 2
    run_pretrain(args.methods, args.archs, args.img_size, args.batch_size, args.steps, args.warmup,
                 Path(args.out), pick_device(args.device), args.profile)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
