"""Throughput benchmarks, measured side by side in one run on the machine it runs on.

    python -m benchmark.perf [--parts steps pipeline scaling] [--methods ...] [--archs vit-s16 vit-b16] [--scale mini]
                             [--img-size 224] [--batch-size N] [--steps N] [--warmup N] [--compile [METHOD ...]]
                             [--workers N ...] [--peak-tflops X] [--out tables/perf.csv] [--plot plots/perf.png]
                             [--replace]

Writes one table (``--out``, one row per measurement, its ``part`` column naming which), a JSON
beside it (``perf.json``: the command, the machine, the library versions, the date) and a figure
(``--plot``). A run adds its rows to the table there: a row it measures again (the same part,
method, arch, variant, image size, batch and workers: :data:`KEY`) is replaced, every other row
stays, and the ``measured`` column and the JSON's ``runs`` say which run measured which row. Only
rows of one machine and scale are merged: a table of another is refused (one line, exit 2) unless
``--replace`` asks for it to be replaced by this run's rows alone. Bad values (a batch or step
count below 1, an unknown arch, an image size the patches do not divide) are one ``error:`` line
and exit code 2, before anything is measured or written. Three parts:

``steps``
    For each model size, a bare timm ViT forward and backward on the whole image, then each
    method's whole training step (forward, backward, optimiser step and the method's own updates)
    on a batch made by the method's own augmentation, and beside it the *floor*: the same
    transformer blocks the method ran during that step, found with forward hooks and timed bare
    (each stack of blocks, such as an encoder or a decoder, as one chain on random tokens of the
    recorded shape, forward and backward; forward only for blocks the step ran without gradients,
    such as an EMA teacher's). ``overhead = step / floor - 1`` is what the method's own work costs
    (patch embedding, masking, tokenizing, gathering, heads, losses, EMA updates, optimiser).
    FLOPs of a step are counted by torch's FLOP counter; on a GPU whose peak bf16 rate is known
    (:data:`PEAK_BF16_TFLOPS`, or ``--peak-tflops``) the achieved rate is given as model FLOPs
    utilisation (MFU), with the peak memory per image. ``--compile`` measures the bare ViT and
    the named methods (all, if none is named) again with their blocks compiled
    (:func:`benchmark.training.runtime.compile_blocks`, the ``compile`` option of pre-training).
``pipeline``
    Each method's own augmentation on real JPEG files (ImageNet-sized, written to a temporary
    folder), read through the training loader (:func:`benchmark.data.loader.make_loader`) at each
    worker count: images per second in total and per worker, and beside it the model's training
    speed for that method (from ``steps``, the largest arch measured): ``pipeline_vs_model`` below
    1 means the loader cannot feed the model, by that factor. With torchvision's ``decode_jpeg``
    the single-crop methods' decoding and augmentation can run on the device instead
    (``decode_on_device``); that path is measured too. And every method's views made in whole
    batches from a set held on the device (``images_on_device``, :mod:`benchmark.data.batch_views`):
    at a scale of the miniature from 28 px greyscale items, else from images of 8/7 of the input
    size, as an ImageNet crop is cut.
``scaling``
    Step time of one method and of the bare ViT as the batch grows (at ``--img-size``) and as the
    number of tokens grows (image sizes at ``--batch-size``): the cost curve.

Every time is a median over ``--steps`` timed repetitions after ``--warmup``, with the
interquartile range as the spread; on a GPU each repetition runs 5 steps back to back, as a
training loop does (see :func:`timed`). Timings are never asserted in tests; they are reported.

By default the methods are measured as the paper configures them (8192-token heads, DINO's
65,536-way head and 10 crops, MAE's 8-block decoder). ``--scale mini`` measures them as the main
job runs them instead: its arch, image size, batch and method settings.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from PIL import Image

from benchmark import REPO
from benchmark.data.augment import Augmentation
from benchmark.errors import EXIT_BAD_INPUT, ConfigError, error_line
from benchmark.experiments.mini import SCALE_PRETRAININGS
from benchmark.methods import METHODS, build_method, method_class
from benchmark.methods.base import PretrainMethod, supports_device_decode, synthetic_batch
from benchmark.models.flops import count_flops
from benchmark.models.vit import ARCHS, create_vit, patch_size
from benchmark.report.perf_section import BARE, IN_MEMORY, PARTS, PIL_IN_WORKERS
from benchmark.training.optim import build_optimizer
from benchmark.training.runtime import autocast, compile_blocks, fast_float32_matmul, is_transformer_block, pick_device
from benchmark.utils.device import to_device
from benchmark.utils.io import atomic_path, write_json

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
def _sync(device: torch.device) -> None:
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
            _sync(device)
            start = time.perf_counter()
            for _ in range(burst):
                fn()
            _sync(device)
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
        _sync(device)
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


# ------------------------------------------------------------------------------ input pipeline
def write_jpegs(root: Path, count: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    """``count`` JPEG files of ImageNet's typical size (500x375, quality 90) under
    ``root/images``: smooth random colour fields plus grain, so that they compress like photos
    (about as many bytes per pixel) rather than like noise or flat colour."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 255, (h // 25, w // 25, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def loader_throughput(loader: Iterable[Any], batch_size: int, rounds: int, per_round: int,
                      consume: Callable[[Any], None] = lambda batch: None) -> tuple[float, float]:
    """(median, interquartile range) of images per second that ``loader`` delivers, over
    ``rounds`` timed rounds of ``per_round`` batches after one untimed round (which starts the
    workers and fills their queues). ``consume`` is applied to each batch (work done in the
    trainer's process, such as decoding on the device)."""
    it = iter(loader)
    for _ in range(per_round):
        consume(next(it))
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            consume(next(it))
        rates.append(per_round * batch_size / (time.perf_counter() - start))
    return median_iqr(rates)


def run_pipeline(methods: list[str], img_size: int, batch_size: int, workers: list[int], rounds: int,
                 device: torch.device, images: int = 64) -> list[dict[str, Any]]:
    """The ``pipeline`` part: each method's augmentation through the training loader, per
    worker count; and, for the single-crop methods, decoding and augmentation on the device."""
    from benchmark.data import device_decode
    from benchmark.data.folders import EpochSampler, ImageFiles, SeededTransform
    from benchmark.data.loader import make_loader

    rows = []
    aug = Augmentation(img_size)
    with tempfile.TemporaryDirectory(prefix="perf-jpegs-") as tmp:
        root = write_jpegs(Path(tmp), images)
        files = ImageFiles(root)
        for name in methods:
            method = method_class(name)(create_vit("vit-smoke", img_size), **METHOD_ARGS.get(name, {}))
            data = SeededTransform(files, method.train_transform(aug), seed=0)
            for count in workers:
                per_round = max(4, 2 * count)
                loader = make_loader(data, batch_size, device=device, num_workers=count, sampler=EpochSampler(len(data), 0))
                rate, iqr = loader_throughput(loader, batch_size, rounds, per_round)
                del loader  # stops its workers
                rows.append({"part": "pipeline", "method": name, "variant": PIL_IN_WORKERS, "img_size": img_size,
                             "batch_size": batch_size, "workers": count, "img_per_s": rate, "iqr_img_per_s": iqr,
                             "img_per_s_per_worker": rate / max(count, 1)})
                print(f"[perf] pipeline {name:<11} {count:2d} workers {rate:8.1f} img/s", file=sys.stderr, flush=True)
            if not supports_device_decode(method):
                continue
            augment = device_decode.DeviceAugment(aug)
            encoded = device_decode.EncodedImages(files, seed=0)
            count = max(workers)
            loader = make_loader(encoded, batch_size, device=device, num_workers=count, sampler=EpochSampler(len(encoded), 0),
                                 collate_fn=device_decode.collate_encoded)

            def on_device(batch: device_decode.EncodedBatch, augment: device_decode.DeviceAugment = augment) -> None:
                augment(batch.images(), batch.seeds, device)
                _sync(device)

            rate, iqr = loader_throughput(loader, batch_size, rounds, max(4, 2 * count), on_device)
            del loader
            rows.append({"part": "pipeline", "method": name, "variant": f"decode_jpeg on {device.type}", "img_size": img_size,
                         "batch_size": batch_size, "workers": count, "img_per_s": rate, "iqr_img_per_s": iqr,
                         "img_per_s_per_worker": np.nan})
            print(f"[perf] pipeline {name:<11} decode_jpeg on {device.type}, {count} workers reading {rate:8.1f} img/s",
                  file=sys.stderr, flush=True)
    return rows


def run_views(methods: list[str], arch: str, img_size: int, batch_size: int, steps: int, warmup: int,
              device: torch.device, method_args: dict[str, dict[str, Any]] | None = None, source: int | None = None,
              channels: int = 3, held: int = 4096) -> list[dict[str, Any]]:
    """Each method's views made for whole batches from ``held`` random images of ``source`` px
    held on ``device`` (the random parameters drawn on the CPU, as in training): images per second."""
    from benchmark.data.batch_views import BatchViews, DeviceImages
    from benchmark.errors import ConfigError

    source = source or round(img_size * 8 / 7)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (held, channels, source, source), generator=generator, dtype=torch.uint8)
    store = DeviceImages(pixels.to(device), torch.full((held,), source), torch.full((held,), source),
                         torch.zeros(held, dtype=torch.int64, device=device))
    aug = Augmentation(img_size)
    rows = []
    for name in methods:
        args = (METHOD_ARGS if method_args is None else method_args).get(name, {})
        method = method_class(name)(create_vit(arch, img_size), **args)
        try:
            views = BatchViews(method.view_specs(aug), labels=method.needs_labels)
        except ConfigError as err:
            print(f"[perf] views {name}: no batched form ({err})", file=sys.stderr)
            continue

        def make(views: BatchViews = views) -> None:
            views(store, torch.randint(0, held, (batch_size,), generator=generator), generator)

        (seconds, iqr), = timed([make], device, steps, warmup)
        rows.append({"part": "pipeline", "method": name, "variant": f"{IN_MEMORY} on {device.type}", "img_size": img_size,
                     "batch_size": batch_size, "workers": 0, "img_per_s": batch_size / seconds,
                     "iqr_img_per_s": batch_size * iqr / seconds**2})
        print(f"[perf] views {name:<11} in memory on {device.type} from {source} px: {batch_size / seconds:10.1f} img/s",
              file=sys.stderr, flush=True)
    return rows


def compare_pipeline(rows: list[dict[str, Any]]) -> None:
    """Adds to each pipeline row the model's training speed for its method (eager, the largest
    arch measured in this run) and ``pipeline_vs_model`` = pipeline / model: at least 1 means the
    loader keeps up; below 1, training is held to that fraction of the model's speed."""
    steps = pd.DataFrame([r for r in rows if r["part"] == "steps" and r["variant"] == "eager"])
    if steps.empty:
        return
    for row in rows:
        if row["part"] != "pipeline":
            continue
        same = steps[steps.method == row["method"]]
        if same.empty:
            continue
        model = same.loc[same.gflop_per_img.idxmax()]  # the largest arch
        row.update(model_arch=model.arch, model_img_per_s=model.img_per_s,
                   pipeline_vs_model=row["img_per_s"] / model.img_per_s)


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


# ------------------------------------------------------------------------------------------ main
COLUMNS = [
    "part", "method", "arch", "variant", "img_size", "batch_size", "tokens", "workers", "ms", "iqr_ms", "ms_per_img",
    "img_per_s", "iqr_img_per_s", "img_per_s_per_worker", "blocks_ms", "blocks_iqr_ms", "overhead", "block_calls",
    "block_tokens", "flop_overhead", "gflop_per_img", "tflop_per_s", "mfu", "peak_mem_gib", "mem_mib_per_img", "model_arch",
    "model_img_per_s", "pipeline_vs_model", "measured",
]
INTEGER_COLUMNS = {"img_size", "batch_size", "tokens", "workers", "block_calls", "block_tokens"}
KEY = ("part", "method", "arch", "variant", "img_size", "batch_size", "workers")  # what a row measures
SAME_MACHINE = ("device", "cpu", "cpu_cores", "scale")  # a table's rows all share these
RUN_FIELDS = ("command", "date", "torch", "timm", "batch_size", "steps", "warmup")  # a run's entry in meta["runs"]


def machine(device: torch.device) -> dict[str, Any]:
    import timm

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(), "cpu_cores": cores, "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
        "bf16_autocast": device.type == "cuda" and torch.cuda.is_bf16_supported(),
    }


def write_table(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> pd.DataFrame:
    """The table and its json beside it, so that a run stopped in a later part keeps what it measured."""
    table = pd.DataFrame(rows)
    table = table.reindex(columns=[c for c in COLUMNS if c in table.columns] + [c for c in table.columns if c not in COLUMNS])
    # Counts stay integers where other parts' rows leave them empty (float_format would write 302592 as 3.026e+05).
    for column in INTEGER_COLUMNS & set(table.columns):
        table[column] = table[column].astype("Int64")
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    write_json(out.with_suffix(".json"), meta)
    return table


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    """What ``row`` measures (:data:`KEY`), alike whether it was just measured or read back from a
    table (where a count reads as 224.0 and an empty cell as NaN)."""
    def plain(value: Any) -> str:
        if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
            return ""
        if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value)

    return tuple(plain(row.get(column)) for column in KEY)


def merge(earlier: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``earlier`` with every row that ``rows`` measures again replaced by the new one(s) in its
    place, then the rows new to the table; grouped by part (steps, pipeline, scaling), each in its order."""
    fresh: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        fresh.setdefault(row_key(row), []).append(row)
    merged, replaced = [], set()
    for row in earlier:
        key = row_key(row)
        if key in fresh:
            merged += fresh.pop(key)
            replaced.add(key)
        elif key not in replaced:
            merged.append(row)
    merged += [row for row in rows if row_key(row) in fresh]
    parts = [str(row["part"]).split("-")[0] for row in merged]  # scaling-batch, scaling-tokens: scaling
    order = [PARTS.index(part) if part in PARTS else len(PARTS) for part in parts]
    return [row for _, row in sorted(zip(order, merged), key=lambda pair: pair[0])]


def earlier_rows(out: Path, meta: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of the table at ``out`` and the runs that measured them (``meta["runs"]``), to be
    merged with this run's; ``([], [])`` where there is none. :class:`ConfigError` where ``out`` is
    not a table of this benchmark with its JSON, or one of another machine or scale (merging would
    mix their numbers)."""
    meta_path = out.with_suffix(".json")
    if not out.exists():
        return [], []
    try:
        table, old = pd.read_csv(out), json.loads(meta_path.read_text())
        if not isinstance(old, dict) or "part" not in table.columns:
            raise ValueError("no 'part' column, or a json that is not an object")
    except (OSError, ValueError) as err:
        raise ConfigError(f"{out}: not a table of python -m benchmark.perf with its {meta_path.name} ({error_line(err)}); "
                          "pass --replace to replace it, or give another --out") from None
    old.setdefault("scale", "paper")  # tables written before the scale was recorded: the paper's sizes
    differ = [f"{field} {old.get(field)!r}, this run {meta[field]!r}" for field in SAME_MACHINE
              if old.get(field) != meta[field]]
    if differ:
        raise ConfigError(f"{out}: its rows were measured on another machine or scale ({'; '.join(differ)}), and "
                          "merging would mix them: pass --replace to replace the table with this run's rows, or give "
                          "another --out")
    runs = old.get("runs") or [{field: old.get(field) for field in RUN_FIELDS}]
    rows = [{k: v for k, v in record.items() if not pd.isna(v)} for record in table.to_dict("records")]
    for row in rows:
        row.setdefault("measured", runs[-1]["date"])
    return rows, runs


def check_args(args: argparse.Namespace, device: torch.device) -> None:
    """:class:`ConfigError` for a value that would measure nothing, or fail half-way."""
    known = sorted(ARCHS)
    for flag, archs in (("--archs", args.archs), ("--scaling-arch", [args.scaling_arch] if args.scaling_arch else [])):
        unknown = [arch for arch in archs if arch not in ARCHS]
        if unknown:
            raise ConfigError(f"{flag}: unknown arch {unknown[0]!r}; expected one of {', '.join(known)}")
    sizes = [(arch, args.img_size) for arch in args.archs]
    if "pipeline" in args.parts and not args.scale:
        sizes.append(("vit-smoke", args.img_size))  # the loader's methods are built on it (run_pipeline)
    if "scaling" in args.parts:
        arch = args.scaling_arch or ("vit-b16" if device.type == "cuda" else "vit-s16")
        sizes += [(arch, size) for size in [args.img_size, *args.img_sizes]]
    for arch, size in sizes:
        if size % patch_size(arch):
            raise ConfigError(f"image size {size}: not a multiple of {arch}'s patch size {patch_size(arch)}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: no CUDA device is visible")
    for flag, path in (("--out", args.out), ("--plot", args.plot)):
        if Path(path).is_dir():
            raise ConfigError(f"{flag} {path}: a directory; give the path of the file to write")


def at_least(least: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``least`` (``--steps 0`` is an error, not "not given")."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} should be at least {least}")
        return value

    return parse


def positive(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:  # also NaN
        raise argparse.ArgumentTypeError(f"{text} should be above 0")
    return value


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage and then the error
        self.exit(EXIT_BAD_INPUT, f"error: {message} (python -m benchmark.perf --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m benchmark.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS))
    parser.add_argument("--archs", nargs="+", default=["vit-s16", "vit-b16"])
    parser.add_argument("--img-size", type=at_least(1), default=224)
    parser.add_argument("--batch-size", type=at_least(1), help="per step (default: 128 on a GPU, 8 on a CPU)")
    parser.add_argument("--steps", type=at_least(1), help="timed repetitions (default: 10 on a GPU, 3 on a CPU)")
    parser.add_argument("--warmup", type=at_least(0), help="untimed repetitions first (default: 3 on a GPU, 1 on a CPU)")
    parser.add_argument("--compile", nargs="*", metavar="METHOD",
                        help="also measure these methods (all, if none is named) with their blocks compiled")
    parser.add_argument("--workers", type=at_least(0), nargs="+",
                        help="loader worker counts (default: 1 and the training default)")
    parser.add_argument("--rounds", type=at_least(1), default=5, help="timed rounds of the input pipeline")
    parser.add_argument("--scaling-method", default="splitmask")
    parser.add_argument("--scaling-arch", help="default: vit-b16 on a GPU, vit-s16 on a CPU")
    parser.add_argument("--batch-sizes", type=at_least(1), nargs="+",
                        help="default: 32 64 128 256 on a GPU, 2 4 8 16 on a CPU")
    parser.add_argument("--img-sizes", type=at_least(1), nargs="+", default=[112, 160, 224, 288])
    parser.add_argument("--peak-tflops", type=positive,
                        help="the device's peak rate, for MFU where it is not known")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", type=at_least(0), default=0, metavar="ROWS",
                        help="also print the ROWS operators that take the most time in each method's step")
    parser.add_argument("--scale", choices=sorted(SCALE_PRETRAININGS),
                        help="measure the methods as this scale configures them (its arch, image size, batch and "
                             "method settings) instead of the paper's; default --out tables/perf_<scale>.csv")
    parser.add_argument("--out", default=None, help="default: tables/perf.csv (tables/perf_<scale>.csv with --scale); "
                        "the rows are merged into a table already there (see --replace)")
    parser.add_argument("--plot", default=None, help="default: plots/perf.png (plots/perf_<scale>.png with --scale)")
    parser.add_argument("--replace", action="store_true",
                        help="replace the table at --out with this run's rows (default: merge them into it: rows this "
                             "run measures again are replaced, the others kept)")
    args = parser.parse_args(argv)
    method_args = None
    if args.scale:
        arch, img_size, scale_batch, method_args = SCALE_PRETRAININGS[args.scale]
        args.archs, args.img_size = [arch], img_size
        args.batch_size = args.batch_size if args.batch_size is not None else scale_batch
    suffix = f"_{args.scale}" if args.scale else ""
    args.out = args.out or str(REPO / "tables" / f"perf{suffix}.csv")
    args.plot = args.plot or str(REPO / "plots" / f"perf{suffix}.png")
    unknown = sorted(set(args.methods + [args.scaling_method] + (args.compile or [])) - set(METHODS))
    if unknown:
        print(f"error: unknown methods {unknown}; expected some of {sorted(METHODS)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.out)
    try:
        try:
            device = pick_device(args.device)
        except RuntimeError as err:
            raise ConfigError(f"--device {args.device}: {error_line(err)}") from None
        check_args(args, device)
        gpu = device.type == "cuda"
        batch = args.batch_size if args.batch_size is not None else (128 if gpu else 8)
        steps = args.steps if args.steps is not None else (10 if gpu else 3)
        warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
        peak = peak_tflops(device, args.peak_tflops)
        from benchmark.data.loader import default_workers

        workers = args.workers or sorted({1, default_workers(device=device)})
        meta = {"command": "python -m benchmark.perf " + shlex.join(argv if argv is not None else sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), **machine(device),
                "peak_bf16_tflops": peak, "default_workers": default_workers(device=device), "batch_size": batch,
                "steps": steps, "warmup": warmup, "scale": args.scale or "paper"}
        earlier, runs = ([], []) if args.replace else earlier_rows(out, meta)
    except ConfigError as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    this_run = {field: meta[field] for field in RUN_FIELDS}
    print(f"[perf] {meta['device']}, {meta['cpu_cores']} cores; batch {batch}, {steps} timed steps after {warmup}"
          + (f"; merged into the {len(earlier)} rows of {out}" if earlier else ""), file=sys.stderr, flush=True)

    def keep(done: list[dict[str, Any]]) -> pd.DataFrame:
        """The table as it stands: the earlier rows with this run's merged in, and the runs that measured them."""
        for row in done:
            row["measured"] = meta["date"]
        merged = merge(earlier, done)
        measured = {row["measured"] for row in merged}
        kept = [run for run in runs if run["date"] in measured and run["date"] != meta["date"]]
        return write_table(merged, out, {**meta, "runs": kept + [this_run]})

    rows: list[dict[str, Any]] = []
    if "steps" in args.parts:
        compiled = [] if args.compile is None else (args.compile or args.methods)
        rows += run_steps(args.methods, args.archs, args.img_size, batch, steps, warmup, device, compiled, peak,
                          args.profile, method_args, on_row=keep)
        keep(rows)  # each part's rows are kept as soon as they exist
    if "pipeline" in args.parts:
        if not args.scale:  # the JPEG loader: the paper's data; the miniature's sets are held in memory
            rows += run_pipeline(args.methods, args.img_size, batch, workers, args.rounds, device)
        miniature = bool(args.scale)  # Fashion-MNIST's 28 px greyscale items
        rows += run_views(args.methods, args.archs[-1], args.img_size, batch, steps, warmup, device, method_args,
                          source=28 if miniature else None, channels=1 if miniature else 3)
        compare_pipeline(merge(earlier, rows))  # against the steps of the table, this run's or earlier ones
        keep(rows)
    if "scaling" in args.parts:
        arch = args.scaling_arch or ("vit-b16" if gpu else "vit-s16")
        sizes = args.batch_sizes or ([32, 64, 128, 256] if gpu else [2, 4, 8, 16])
        rows += run_scaling(args.scaling_method, arch, args.img_size, batch, sizes, args.img_sizes, steps, warmup,
                            device, peak)
    table = keep(rows)
    from benchmark.report.perf_section import plot_perf

    plot_perf(table, meta, Path(args.plot))
    print(f"wrote {out}, {out.with_suffix('.json')} and {args.plot}"
          + (f" ({len(rows)} rows measured, merged into the {len(earlier)} there)" if earlier else ""))
    return 0
