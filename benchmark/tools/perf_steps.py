"""The measurements of :mod:`benchmark.tools.perf`'s ``steps`` and ``scaling`` parts, and what they time with.

The timing primitives (:func:`timed`, :func:`median_iqr`, :func:`peak_tflops`), the recording of
the transformer blocks a step runs (:func:`record_blocks`) and their bare floor
(:func:`chains`, :func:`bare_blocks`), the steps timed (a method's whole training step, a bare
ViT's), :func:`measure` (one row) and the parts themselves (:func:`run_steps`, :func:`run_scaling`).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn as nn

from benchmark.methods import build_method
from benchmark.methods.base import PretrainMethod, synthetic_batch
from benchmark.models.flops import count_flops
from benchmark.models.vit import create_vit
from benchmark.report.perf_section import BARE
from benchmark.training.optim import build_optimizer
from benchmark.training.runtime import autocast, compile_blocks, fast_float32_matmul, is_transformer_block
from benchmark.utils.device import to_device

# The paper's method settings where they size the work (vocabulary, crops); the rest are defaults.
METHOD_ARGS: dict[str, dict[str, Any]] = {
    "splitmask": {"vocab_size": 8192},
    "beit": {"vocab_size": 8192},
    "dino": {"local_crops": 8},
    "supervised": {"num_classes": 1000},
}
GPU_BURST = 5  # calls per timed sample on a GPU (see timed())
# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, in TFLOP/s, by a
# substring of torch.cuda.get_device_name(); the first match wins, so more specific names first.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H200", 989.0), ("GH200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0),
]


# ---------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: list[Callable[[], None]], device: torch.device, steps: int, warmup: int) -> list[tuple[float, float]]:
    """(median, interquartile range) of each of ``fns``' wall time in seconds, measured side by
    side: every function is warmed up ``warmup`` times, then each timed repetition times them one
    after the other, so that a drift of the machine's speed (a busy neighbour, the clock) moves
    all of them alike and their ratios stay fair.

    On a GPU, each sample is the mean of ``GPU_BURST`` calls run back to back with one
    synchronisation at the end, as a training loop runs them: the host queues the next call's
    work while the GPU runs the last, so host-side work that a loop hides is hidden here too.
    """
    burst = GPU_BURST if device.type == "cuda" else 1
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(steps):
        for fn, times in zip(fns, samples):
            sync(device)
            start = time.perf_counter()
            for _ in range(burst):
                fn()
            sync(device)
            times.append((time.perf_counter() - start) / burst)
    return [median_iqr(times) for times in samples]


def median_iqr(values: list[float]) -> tuple[float, float]:
    q = np.percentile(values, [25, 75]) if len(values) > 1 else (values[0], values[0])
    return statistics.median(values), float(q[1] - q[0])


def peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """The device's peak dense bf16 rate in TFLOP/s: ``override``, or from the GPU's name; None
    where it is not known (a CPU, an unlisted GPU): MFU is then not reported."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


# ------------------------------------------------------------------------------ the step's parts
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

    hooks = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules() if is_transformer_block(m)]
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


def method_as_configured(name: str, arch: str, img_size: int, batch_size: int, device: torch.device,
                         method_args: dict[str, dict[str, Any]] | None = None) -> PretrainMethod:
    """The method at the paper's sizes (or ``method_args``, a scale's), its data-dependent parts (a
    codebook) fitted on random images: enough patches for the vocabulary."""
    args = (METHOD_ARGS if method_args is None else method_args).get(name, {})
    method = build_method(name, create_vit(arch, img_size), **args).to(device)
    count = max(batch_size, -(-getattr(method, "vocab_size", 0) // method.num_patches))
    method.prepare([torch.randn(count, 3, img_size, img_size, device=device)])
    return method


def method_step(method: PretrainMethod, inputs: Any, device: torch.device) -> Callable[[], None]:
    """One whole training step of ``method`` on ``inputs``, as the pre-training stage runs it."""
    optimizer = build_optimizer(method, lr=1e-4, weight_decay=0.05)
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

    return train_step


def bare_vit_step(arch: str, img_size: int, batch_size: int, device: torch.device) -> tuple[nn.Module, Callable[[], None]]:
    """A plain timm ViT's forward and backward on whole images: no method, no optimiser."""
    vit = create_vit(arch, img_size).to(device)
    images = torch.randn(batch_size, 3, img_size, img_size, device=device)

    def step() -> None:
        with autocast(device):
            out = vit(images)
        out.float().sum().backward()
        vit.zero_grad(set_to_none=True)

    return vit, step


def measure(name: str, arch: str, img_size: int, batch_size: int, steps: int, warmup: int, device: torch.device,
            compiled: bool = False, floor: bool = True, peak: float | None = None, profile: int = 0,
            method_args: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One row: the step of method ``name`` (or of the bare ViT, ``BARE``) timed, with its floor,
    FLOPs and memory."""
    torch.manual_seed(0)
    fast_float32_matmul(device)
    if name == BARE:
        model, train_step = bare_vit_step(arch, img_size, batch_size, device)
    else:
        model = method_as_configured(name, arch, img_size, batch_size, device, method_args)
        train_step = method_step(model, to_device(synthetic_batch(model, img_size, batch_size), device), device)
    calls = record_blocks(model, train_step)  # also the first warm-up step
    # FLOPs counted eager: compiled kernels are out of the counter's sight (the FLOPs are the same).
    flops = count_flops(train_step)
    floor_fn = bare_blocks(calls, device) if floor and name != BARE else None
    floor_flops = count_flops(floor_fn) if floor_fn is not None else 0
    if compiled:
        compile_blocks(model)
        for fn in [train_step, floor_fn] if floor_fn is not None else [train_step]:
            for _ in range(2):  # compiles forward and backward
                fn()
    if device.type == "cuda":  # the step's own memory, before its floor runs beside it
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
        train_step()
        top = torch.cuda.max_memory_allocated(device)
    timings = timed([train_step] + ([floor_fn] if floor_fn else []), device, steps, warmup)
    step, step_iqr = timings[0]
    encoder = model if name == BARE else model.encoder
    row: dict[str, Any] = {
        "part": "steps", "method": name, "arch": arch, "variant": "compiled" if compiled else "eager",
        "img_size": img_size, "batch_size": batch_size,
        "tokens": int(encoder.patch_embed.num_patches + encoder.num_prefix_tokens),
        "ms": 1000 * step, "iqr_ms": 1000 * step_iqr, "img_per_s": batch_size / step,
        "block_calls": len(calls), "block_tokens": sum(int(np.prod(c.shape[:-1])) for c in calls),
        "gflop_per_img": flops / batch_size / 1e9, "tflop_per_s": flops / step / 1e12,
    }
    if peak:
        row["mfu"] = row["tflop_per_s"] / peak
    if device.type == "cuda":
        row["peak_mem_gib"] = top / 2**30
        row["mem_mib_per_img"] = (top - resident) / batch_size / 2**20
    if floor_fn is not None:
        floor_s, floor_iqr = timings[1]
        # The method's own work in FLOPs (heads, tokenizer, patch embedding): the part of the
        # time overhead that no implementation can remove without changing the method.
        row.update(blocks_ms=1000 * floor_s, blocks_iqr_ms=1000 * floor_iqr, overhead=step / floor_s - 1,
                   flop_overhead=flops / floor_flops - 1)
    if profile:
        print_profile(train_step, device, profile, f"{name} {arch} batch {batch_size}")
    model.zero_grad(set_to_none=True)
    return row


def print_profile(fn: Callable[[], None], device: torch.device, rows: int, title: str) -> None:
    """The ``rows`` operators of three calls of ``fn`` that take the most time of their own
    (on the GPU where there is one), from torch.profiler."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            fn()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"[perf] profile of 3 steps: {title}", file=sys.stderr)
    print(prof.key_averages().table(sort_by=key, row_limit=rows), file=sys.stderr, flush=True)


def _release(device: torch.device) -> None:
    # Each measurement starts from an empty allocator: one method's large buffers left cached
    # would fragment the next one's memory and slow it (seen: up to 30% on a GPU).
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_steps(methods: list[str], archs: list[str], img_size: int, batch_size: int, steps: int, warmup: int,
              device: torch.device, compiled_methods: Sequence[str] = (), peak: float | None = None,
              profile: int = 0, method_args: dict[str, dict[str, Any]] | None = None,
              on_row: Callable[[list[dict[str, Any]]], None] = lambda rows: None) -> list[dict[str, Any]]:
    """The ``steps`` part: per arch, the bare ViT and every method eager, then the bare ViT and
    ``compiled_methods`` with their blocks compiled. ``on_row`` gets the rows so far after each
    measurement (to keep them on disk: a compilation can outlast the time a machine is lent)."""
    rows = []
    for arch in archs:
        for compiled in [False, True] if compiled_methods else [False]:
            for name in [BARE, *(compiled_methods if compiled else methods)]:
                try:
                    row = measure(name, arch, img_size, batch_size, steps, warmup, device, compiled=compiled,
                                  peak=peak, profile=profile, method_args=method_args)
                except (ImportError, ModuleNotFoundError) as err:
                    print(f"[perf] {name}: not available ({err})", file=sys.stderr)
                    continue
                rows.append(row)
                on_row(rows)
                _release(device)
                extra = f"  overhead {100 * row['overhead']:+6.1f}%" if "overhead" in row else ""
                mfu = f"  MFU {100 * row['mfu']:.1f}%" if "mfu" in row else ""
                print(f"[perf] steps {name:<11} {arch:<8} {row['variant']:<8} {row['img_per_s']:8.2f} img/s  "
                      f"step {row['ms']:9.1f} ms{extra}{mfu}", file=sys.stderr, flush=True)
    return rows




# ---------------------------------------------------------------------------------------- scaling
def run_scaling(method: str, arch: str, img_size: int, batch_size: int, batch_sizes: list[int], img_sizes: list[int],
                steps: int, warmup: int, device: torch.device, peak: float | None = None) -> list[dict[str, Any]]:
    """The ``scaling`` part: step time of ``method`` and of the bare ViT against the batch size
    (at ``img_size``) and against the tokens per image (image sizes, at ``batch_size``)."""
    rows = []
    points = [("batch", b, img_size) for b in batch_sizes] + [("tokens", batch_size, s) for s in img_sizes]
    for name in [BARE, method]:
        for axis, batch, size in points:
            row = measure(name, arch, size, batch, steps, warmup, device, floor=False, peak=peak)
            row.update(part=f"scaling-{axis}", ms_per_img=row["ms"] / batch)
            rows.append(row)
            _release(device)
            print(f"[perf] scaling {name:<11} {arch} batch {batch:4d} img {size:4d}: {row['ms']:9.1f} ms "
                  f"({row['ms'] / batch:7.2f} ms/img)", file=sys.stderr, flush=True)
    return rows
