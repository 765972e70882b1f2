"""What ``python -m benchmark.perf`` measured, as a figure and as REPORT.md's throughput section.

Reads only the table and its JSON (no torch), so that the report rebuilds anywhere. The suite's
throughput goals are checked here, against the numbers of the one run the table holds:

- the method's own work costs under 15% beyond the bare transformer blocks it runs (SplitMask,
  BEiT, MAE; ``overhead`` of the eager step);
- SplitMask ViT-B/16 in bf16 reaches at least 40% MFU on an H100 or H200;
- the input pipeline at the default worker count keeps up with the model (ViT-B/16), or by how much
  it does not.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

OVERHEAD_GOAL = 0.15
OVERHEAD_METHODS = ("splitmask", "beit", "mae")  # the denoising family, by name: this module imports no torch
MFU_GOAL = 0.40
MFU_DEVICES = ("H100", "H200")
BARE = "vit (bare)"  # the steps row of a plain timm ViT forward and backward
PIL_IN_WORKERS = "PIL in workers"  # the pipeline rows of the training loader as it decodes by default
IN_MEMORY = "views in memory"      # the pipeline rows of a set held on the device, its views made in batches there
VIEWS_GOAL = 1.5                   # those views at least this many times the step's images per second (on an H100/H200)
PARTS = ("steps", "pipeline", "scaling")  # the benchmark's parts; a table's ``part`` column starts with one


# the tables of python -m benchmark.perf that REPORT.md shows, each from one machine: a GPU's
# (``--out tables/perf_gpu.csv``, measured on a lent GPU machine) and this repository's CPU machine's
PERF_TABLES = ("perf_gpu", "perf_mini-gpu", "perf")  # the paper's sizes on a GPU, the GPU miniature's, a CPU's


def load_perf(tables_dir: Path, stem: str = "perf") -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """``tables/<stem>.csv`` and its json, or None where that benchmark has not run."""
    table, meta = Path(tables_dir) / f"{stem}.csv", Path(tables_dir) / f"{stem}.json"
    if not table.is_file() or not meta.is_file():
        return None
    return pd.read_csv(table), json.loads(meta.read_text())


def _num(value: Any, fmt: str, unknown: str = "—") -> str:
    return unknown if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def overhead_range(row: pd.Series) -> tuple[float, float]:
    """The overhead's range when the step and its floor each move by half their interquartile
    range in the unfavourable direction: a step measured once is only as exact as its spread."""
    step, floor = row.ms, row.blocks_ms
    step_half, floor_half = row.get("iqr_ms", 0.0) / 2, row.get("blocks_iqr_ms", 0.0) / 2
    return (step - step_half) / (floor + floor_half) - 1, (step + step_half) / max(floor - floor_half, 1e-9) - 1


def goals(table: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """One line per goal: met, not met, or not measured here (and why)."""
    lines = []
    steps = table[(table.part == "steps") & (table.variant == "eager")]
    for method in OVERHEAD_METHODS:
        for _, row in steps[steps.method == method].iterrows():
            low, high = overhead_range(row)
            if high < OVERHEAD_GOAL:
                verdict = "met"
            elif low >= OVERHEAD_GOAL:
                verdict = "**not met**"
            else:
                verdict = "within the noise of this run"
            lines.append(f"- {method} {row.arch}: overhead {100 * row.overhead:+.1f}% ({100 * low:+.0f}% to {100 * high:+.0f}% "
                         f"within the spread; goal < {100 * OVERHEAD_GOAL:.0f}%): {verdict}")
    target = steps[(steps.method == "splitmask") & (steps.arch == "vit-b16")]
    on_hopper = any(name in str(meta.get("device", "")) for name in MFU_DEVICES)
    if not on_hopper:
        lines.append(f"- SplitMask vit-b16 MFU in bf16 on an H100/H200 (goal ≥ {100 * MFU_GOAL:.0f}%): not measured "
                     f"here: this run was on {meta.get('device', 'unknown')}, not on an H100 or H200")
    elif target.empty or "mfu" not in target or pd.isna(target.mfu.iloc[0]):
        lines.append("- SplitMask vit-b16 MFU: not in this run")
    else:
        mfu = float(target.mfu.iloc[0])
        lines.append(f"- SplitMask vit-b16 MFU in bf16 on {meta['device']}: {100 * mfu:.1f}% (goal ≥ {100 * MFU_GOAL:.0f}%): "
                     + ("met" if mfu >= MFU_GOAL else "**not met**"))
    pipe = table[(table.part == "pipeline") & (table.variant == PIL_IN_WORKERS)]
    default = meta.get("default_workers")
    at_default = pipe[pipe.workers == default] if default is not None and not pipe.empty else pipe.iloc[0:0]
    held = table[(table.part == "pipeline") & table.variant.astype(str).str.startswith(IN_MEMORY)]
    if at_default.empty or "pipeline_vs_model" not in at_default:
        if held.empty:
            lines.append("- input pipeline at the default worker count: not measured in this run")
        at_default = at_default.iloc[0:0]
    for _, row in at_default.iterrows():
        if pd.isna(row.pipeline_vs_model):
            continue
        ratio = float(row.pipeline_vs_model)
        if row.workers == 0:  # the trainer loads its own batches: loading and the step take turns
            verdict = f"loading in the trainer adds {100 / ratio:.1f}% to each step"
        elif ratio >= 1:
            verdict = "keeps up"
        else:
            verdict = f"**is the bottleneck**: it feeds {100 * ratio:.0f}% of what the model could train on"
        lines.append(f"- input pipeline, {row.method}, {int(row.workers)} worker(s) (the default here): "
                     f"{row.img_per_s:.0f} img/s against the model's {row.model_img_per_s:.1f} img/s "
                     f"({row.model_arch}): {verdict}")
    for _, row in held.iterrows():
        if "pipeline_vs_model" not in row or pd.isna(row.pipeline_vs_model):
            continue
        ratio = float(row.pipeline_vs_model)
        verdict = ("met" if ratio >= VIEWS_GOAL else "**not met**") if on_hopper else \
            f"the goal is for an H100 or H200, this run was on {meta.get('device', 'unknown')}"
        lines.append(f"- {row.variant}, {row.method}: {row.img_per_s:.0f} img/s against the model's "
                     f"{row.model_img_per_s:.0f} img/s ({row.model_arch}), {ratio:.1f}x (goal ≥ {VIEWS_GOAL:g}x): {verdict}")
    return lines


def repeatability(table: pd.DataFrame) -> list[str]:
    """How far one configuration measured more than once in the run (the bare ViT appears in the
    steps and twice in the cost curve) moved: how steady the machine was while it was measured."""
    timed = table[table.part.isin(["steps", "scaling-batch", "scaling-tokens"])]
    keys = ["method", "arch", "variant", "img_size", "batch_size"]
    repeated = [group for _, group in timed.groupby(keys, dropna=False) if len(group) > 1]
    if not repeated:
        return []
    worst = max(repeated, key=lambda g: g.ms.max() / g.ms.min())
    row = worst.iloc[0]
    return [f"Steadiness of the machine: the same step ({row.method}, {row.arch}, batch {int(row.batch_size)}, "
            f"{int(row.img_size)} px) measured {len(worst)} times in this run took {worst.ms.min():.0f} to "
            f"{worst.ms.max():.0f} ms ({100 * (worst.ms.max() / worst.ms.min() - 1):.0f}% apart). Step and floor "
            "are timed interleaved, so their ratio suffers less than that, yet a single run's overhead is only "
            "as exact as the ranges given with the goals.", ""]


def scale_speed_line(tables_dir: Path, scale: str) -> list[str]:
    """One line: each method's training step as ``scale`` configures it, in images per second
    (``python -m benchmark.perf --scale SCALE``), where that has been measured."""
    loaded = load_perf(tables_dir, f"perf_{scale}")
    if loaded is None:
        return []
    table, meta = loaded
    steps = table[(table.part == "steps") & (table.variant == "eager")]
    speeds = ", ".join(f"{row.method} {row.img_per_s:.0f}" for row in steps.itertuples())
    return [f"Training steps as the `{scale}` scale configures them, images per second (`{meta.get('command', '?')}`, "
            f"{meta.get('date', '?')}, {meta.get('device', '?')} with {meta.get('cpu_cores', '?')} cores, batch "
            f"{meta.get('batch_size', '?')}; `tables/perf_{scale}.csv`): {speeds}.", ""]


def perf_section(tables_dir: Path) -> list[str]:
    """REPORT.md's throughput section (markdown lines): one part per machine measured
    (:data:`PERF_TABLES`); empty where the benchmark has not run."""
    parts = [(stem, loaded) for stem in PERF_TABLES if (loaded := load_perf(tables_dir, stem)) is not None]
    if not parts:
        return []
    lines = ["## Throughput: where pre-training time goes", ""]
    for stem, (table, meta) in parts:
        lines += machine_part(table, meta, stem, titled=len(parts) > 1)
    return lines


def machine_part(table: pd.DataFrame, meta: dict[str, Any], stem: str, titled: bool) -> list[str]:
    """What one run of the benchmark measured on one machine: the goals, then its tables."""
    measured = [part for part in PARTS if table.part.str.startswith(part).any()]
    missing = [part for part in PARTS if part not in measured]
    sizes = "the paper's sizes" if meta.get("scale", "paper") == "paper" else f"the {meta['scale']} scale"
    lines = [f"### On {meta['device']}, {sizes}", ""] if titled else []
    runs = meta.get("runs") or []
    if len(runs) > 1:  # a table that runs of parts merged into (benchmark.tools.perf_table.merge)
        how = (f"Measured on {meta['device']} ({meta['cpu_cores']} CPU cores) in {len(runs)} runs, each row by the run "
               "its `measured` column dates: " + "; ".join(
                   f"`{run.get('command')}` on {run.get('date')} (torch {run.get('torch')}, timm {run.get('timm')}; "
                   f"batch {run.get('batch_size')}, medians of {run.get('steps')} timed steps after {run.get('warmup')})"
                   for run in runs) + "; spread = interquartile range.")
    else:
        how = (f"Measured on {meta['device']} ({meta['cpu_cores']} CPU cores, torch {meta['torch']}, timm {meta['timm']}) "
               f"on {meta['date']} with `{meta['command']}`: batch {meta['batch_size']}, medians of {meta['steps']} timed "
               f"steps after {meta['warmup']}, spread = interquartile range.")
    lines += [
        f"{how} Table `tables/{stem}.csv`, plot `plots/{stem}.png`; the method is in `benchmark/perf.py`."
        + (f" This table holds the parts {', '.join(measured)} only ({', '.join(missing)}: not measured in this run)."
           if missing else ""), "",
        "Throughput goals, checked against this run:", "", *goals(table, meta), "",
    ]
    lines += repeatability(table)
    steps = table[table.part == "steps"]
    if not steps.empty:
        peak = meta.get("peak_bf16_tflops")
        shown = pd.DataFrame({
            "method": steps.method, "arch": steps.arch, "variant": steps.variant,
            "img/s": [f"{v:.1f} ± {s / m * v:.1f}" for v, s, m in zip(steps.img_per_s, steps.iqr_ms, steps.ms)],
            "step ms": [_num(v, ".1f") for v in steps.ms],
            "floor ms": [_num(v, ".1f") for v in steps.get("blocks_ms", pd.Series(index=steps.index, dtype=float))],
            "overhead": [_num(100 * v, "+.1f") + ("%" if not pd.isna(v) else "")
                         for v in steps.get("overhead", pd.Series(index=steps.index, dtype=float))],
            "FLOP overhead": [_num(100 * v, "+.1f") + ("%" if not pd.isna(v) else "")
                              for v in steps.get("flop_overhead", pd.Series(index=steps.index, dtype=float))],
            "GFLOP/img": [_num(v, ".1f") for v in steps.gflop_per_img],
            "TFLOP/s": [_num(v, ".2f") for v in steps.tflop_per_s],
            "MFU": [_num(100 * v, ".1f") + "%" if peak and not pd.isna(v) else "unknown"
                    for v in steps.get("mfu", pd.Series(index=steps.index, dtype=float))],
        })
        if "mem_mib_per_img" in steps:
            shown["MiB/img"] = [_num(v, ".0f") for v in steps.mem_mib_per_img]
        lines += ["Training steps (the floor: the same transformer blocks run bare; overhead = step / floor - 1; "
                  "FLOP overhead: the method's own work in FLOPs, which no implementation removes; "
                  "MFU needs the device's peak bf16 rate, which a CPU does not have):", "",
                  shown.to_markdown(index=False, disable_numparse=True), ""]
    pipe = table[table.part == "pipeline"]
    if not pipe.empty:
        shown = pd.DataFrame({
            "method": pipe.method, "decoding": pipe.variant, "workers": pipe.workers.astype(int),
            "img/s": [f"{v:.0f} ± {s:.0f}" for v, s in zip(pipe.img_per_s, pipe.iqr_img_per_s)],
            "img/s per worker": [_num(v, ".0f")
                                 for v in pipe.get("img_per_s_per_worker", pd.Series(index=pipe.index, dtype=float))],
            "model img/s": [_num(v, ".1f") for v in pipe.get("model_img_per_s", pd.Series(index=pipe.index, dtype=float))],
            "pipeline / model": [_num(v, ".2f") for v in pipe.get("pipeline_vs_model", pd.Series(index=pipe.index, dtype=float))],
        })
        lines += ["Input pipeline (each method's augmentation on 500x375 JPEGs through the training loader; "
                  "the model column is the same method's training speed at the largest arch of this run):", "",
                  shown.to_markdown(index=False, disable_numparse=True), ""]
    scaling = table[table.part.str.startswith("scaling")]
    if not scaling.empty:
        shown = pd.DataFrame({
            "method": scaling.method, "arch": scaling.arch, "batch": scaling.batch_size, "img": scaling.img_size,
            "tokens": scaling.tokens.astype(int), "step ms": [_num(v, ".1f") for v in scaling.ms],
            "ms/img": [_num(v, ".2f") for v in scaling.ms_per_img], "TFLOP/s": [_num(v, ".2f") for v in scaling.tflop_per_s],
        })
        lines += ["Cost curve (step time against the batch size, then against the tokens per image):", "",
                  shown.to_markdown(index=False, disable_numparse=True), ""]
    return lines


def plot_perf(table: pd.DataFrame, meta: dict[str, Any], path: Path) -> None:
    """plots/perf.png: :func:`perf_figure`, saved."""
    import matplotlib.pyplot as plt

    from benchmark.utils.io import atomic_path

    fig = perf_figure(table, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def perf_figure(table: pd.DataFrame, meta: dict[str, Any]) -> Any:
    """The steps against their floors, the input pipeline against the model, and the cost curves,
    in one figure (returned open, so that its layout can be checked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    steps = table[(table.part == "steps") & (table.method != BARE)]
    ax = axes[0, 0]
    if not steps.empty:
        labels, step_rate, floor_rate, notes = [], [], [], []
        for _, row in steps.iterrows():
            labels.append(f"{row.method} {row.arch}" + (" compiled" if row.variant == "compiled" else ""))
            step_rate.append(row.img_per_s)
            known = "blocks_ms" in row and not pd.isna(row.blocks_ms)
            floor_rate.append(row.batch_size / row.blocks_ms * 1000 if known else float("nan"))
            notes.append(f"{100 * row.overhead:+.0f}%" if "overhead" in row and not pd.isna(row.overhead) else "")
        # horizontal bars, the first row on top: the labels read level, however many rows
        ys = [len(labels) - 1 - i for i in range(len(labels))]
        ax.barh([y + 0.2 for y in ys], step_rate, height=0.4, label="training step")
        ax.barh([y - 0.2 for y in ys], floor_rate, height=0.4, label="its blocks, bare (floor)")
        for y, x, note in zip(ys, step_rate, notes):
            ax.annotate(f" {note}", (x, y + 0.2), ha="left", va="center", fontsize=7)
        ax.set_yticks(ys, labels, fontsize=7)
        ax.set_xlabel("images / s")
        ax.set_xscale("log")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax.set_title("Training step vs the bare blocks it runs (label: overhead)", fontsize=10)

    ax = axes[0, 1]
    pipe = table[table.part == "pipeline"]
    if not pipe.empty:
        methods = list(dict.fromkeys(pipe.method))
        variants = list(dict.fromkeys(zip(pipe.variant, pipe.workers)))
        width = 0.8 / max(len(variants), 1)
        for i, (variant, workers) in enumerate(variants):
            part = pipe[(pipe.variant == variant) & (pipe.workers == workers)].set_index("method")
            ax.bar([m + i * width - 0.4 + width / 2 for m in range(len(methods))],
                   [part.img_per_s.get(name, float("nan")) for name in methods], width=width,
                   label=f"{variant}, {int(workers)} worker(s)")
        if "model_img_per_s" in pipe:
            model = pipe.groupby("method").model_img_per_s.first()
            ax.scatter(range(len(methods)), [model.get(name, float("nan")) for name in methods], marker="_", s=600,
                       color="black", zorder=3, label="model (training step)")
        ax.set_xticks(range(len(methods)), methods, fontsize=8)
        ax.set_ylabel("images / s")
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    ax.set_title("Input pipeline per method's augmentation vs the model", fontsize=10)

    for ax, axis, xcol, xlabel in ((axes[1, 0], "scaling-batch", "batch_size", "batch size"),
                                   (axes[1, 1], "scaling-tokens", "tokens", "tokens per image")):
        part = table[table.part == axis]
        for name, group in part.groupby("method", sort=False):
            group = group.sort_values(xcol)
            ax.errorbar(group[xcol], group.ms_per_img, yerr=group.iqr_ms / group.batch_size, marker="o", capsize=3,
                        label=f"{name} {group.arch.iloc[0]}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("step time per image (ms)")
        ax.set_xscale("log", base=2)
        if not part.empty:
            ax.legend(fontsize=8)
        ax.set_title(f"Step time against the {xlabel}", fontsize=10)
    for ax in axes.flat:
        if not ax.has_data():
            ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center", transform=ax.transAxes, color="grey")
    title = f"python -m benchmark.perf on {meta.get('device', '?')}, {meta.get('cpu_cores', '?')} cores, {meta.get('date', '')}"
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=11)
    fig.tight_layout()
    return fig
