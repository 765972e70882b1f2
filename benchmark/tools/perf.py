"""Throughput benchmarks, measured side by side in one run on the machine it runs on.

    python -m benchmark.perf [--parts steps pipeline scaling] [--methods ...] [--archs vit-s16 vit-b16] [--scale mini]
                             [--img-size 224] [--batch-size N] [--steps N] [--warmup N] [--compile [METHOD ...]]
                             [--workers N ...] [--peak-tflops X] [--out tables/perf.csv] [--plot plots/perf.png]
                             [--replace]

Writes one table (``--out``, one row per measurement, its ``part`` column naming which), a JSON
beside it (``perf.json``: the command, the machine, the library versions, the date) and a figure
(``--plot``). A run adds its rows to the table there: a row it measures again (the same part,
method, arch, variant, image size, batch and workers: :data:`~benchmark.tools.perf_table.KEY`) is
replaced, every other row stays, and the ``measured`` column and the JSON's ``runs`` say which run
measured which row. Only rows of one machine and scale are merged: a table of another is refused
(one line, exit 2) unless ``--replace`` asks for it to be replaced by this run's rows alone. Bad
values (a batch or step count below 1, an unknown arch, an image size the patches do not divide)
are one ``error:`` line and exit code 2, before anything is measured or written. Three parts:

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
    (:data:`~benchmark.tools.perf_steps.PEAK_BF16_TFLOPS`, or ``--peak-tflops``) the achieved
    rate is given as model FLOPs utilisation (MFU), with the peak memory per image. ``--compile``
    measures the bare ViT and the named methods (all, if none is named) again with their blocks compiled
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
training loop does (see :func:`~benchmark.tools.perf_steps.timed`). Timings are never asserted in
tests; they are reported.

By default the methods are measured as the paper configures them (8192-token heads, DINO's
65,536-way head and 10 crops, MAE's 8-block decoder). ``--scale mini`` measures them as the main
job runs them instead: its arch, image size, batch and method settings.

This module is the command line; the parts are measured by :mod:`benchmark.tools.perf_steps`
(``steps``, ``scaling``) and :mod:`benchmark.tools.perf_pipeline` (``pipeline``), and the table is
written and merged by :mod:`benchmark.tools.perf_table`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from benchmark import REPO
from benchmark.errors import EXIT_BAD_INPUT, ConfigError, error_line
from benchmark.experiments.mini import SCALE_PRETRAININGS
from benchmark.methods import METHODS
from benchmark.models.vit import ARCHS, patch_size
from benchmark.report.perf_section import PARTS
from benchmark.tools.perf_pipeline import compare_pipeline, run_pipeline, run_views
from benchmark.tools.perf_steps import peak_tflops, run_scaling, run_steps
from benchmark.tools.perf_table import RUN_FIELDS, earlier_rows, machine, merge, write_table
from benchmark.training.runtime import pick_device


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
