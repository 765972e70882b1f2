"""The measurements of :mod:`benchmark.tools.perf`'s ``pipeline`` part: the input pipeline's throughput.

JPEG files written for it (:func:`write_jpegs`), read through the training loader at each worker
count and decoded on the device (:func:`run_pipeline`, timed by :func:`loader_throughput`), the
views made in whole batches from images held on the device (:func:`run_views`), and each set
beside the model's training speed (:func:`compare_pipeline`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from benchmark.data.augment import Augmentation
from benchmark.methods import method_class
from benchmark.methods.base import supports_device_decode
from benchmark.models.vit import create_vit
from benchmark.report.perf_section import IN_MEMORY, PIL_IN_WORKERS
from benchmark.tools.perf_steps import METHOD_ARGS, median_iqr, sync, timed


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
                sync(device)

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
