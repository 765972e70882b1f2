"""Each artifact's figure in the paper's form, from the same entries as its readable table
(:func:`benchmark.report.layout.entries`):

- ``"curve"`` (Fig. 2, Fig. 3, the miniature's fractions, the learning-rate sweep): a line per
  method over the subset size, epochs or learning rate, seed error bars, the paper's points dashed;
- ``"bars"`` (tables, Fig. 1 and the dense legs grouped by pre-training data): a bar per row with
  seed error bars, the paper's values as black marks;
- in both, the floors and the ceiling as labelled horizontal lines across the methods;
- a figure with no run of ours shows the paper's values and says that ours are missing.

Every method has one colour and marker in every figure (:func:`benchmark.report.names.method_style`).
:func:`layout_problems` lists overlapping or clipped text; the tests run it on every figure.
"""

from __future__ import annotations

import itertools
import math
import re
import textwrap
from pathlib import Path

import pandas as pd

from benchmark.experiments.model import Layout
from benchmark.report import names
from benchmark.report.layout import entries, has_numbers, label, ordered, value_rank
from benchmark.utils.io import atomic_path

LINE_STYLES = {names.FLOOR: ("grey", ["--", ":", "-."]), names.CEILING: ("black", ["-."])}
PANEL_HEIGHT = 3.4
HATCHES, FILLS = ("", "//", ".."), ("none", "top", "left")


def _x_value(entry: pd.Series, x: str) -> float:
    if x == "fraction":  # pretrain_data such as "imagenet-10%"
        match = re.search(r"-([\d.]+)%$", entry["pretrain_data"])
        return float(match.group(1)) if match else math.nan
    text = entry["hparams"].split("=")[-1] if x == "hparams" else entry[x]
    try:
        return float(text)
    except ValueError:
        return math.nan


def _panels(found: pd.DataFrame, layout: Layout) -> list[tuple[str, pd.DataFrame]]:
    """(title, entries) per panel: a block x metric (and, for a curve, each column tag but x's)."""
    tagged = {"fraction": "pretrain_data", "epochs": "epochs", "hparams": "hparams"}
    split = ["metric"] + ([k for k in dict.fromkeys([*layout.columns, "downstream"]) if k not in (tagged.get(layout.x), "metric")]
                          if layout.figure == "curve" else [])
    blocks = [b for b in ordered(found, "block", "block_rank") if has_numbers(found[found.block == b])]
    panels = []
    for block in blocks or ordered(found, "block", "block_rank")[:1]:
        inside = found[found.block == block]
        scored = inside[inside.role == ""]
        in_order = sorted(scored.groupby(split), key=lambda item: [value_rank(k, str(v)) for k, v in zip(split, item[0])])
        for values, rows in in_order:
            spans = inside[(inside.role != "") & (inside.metric == rows.metric.iloc[0])]
            parts = [block] + [names.value_name(k, str(v), short=True) for k, v in zip(split, values)]
            missing = int((rows.n == 0).sum())
            title = " · ".join(p for p in parts if p) + (f" ({missing} of {len(rows)} not run yet)" if missing else "")
            panels.append((title, pd.concat([rows, spans])))
    return panels


def _floor_lines(ax, spans: pd.DataFrame) -> None:
    for role, group in spans.groupby("role"):
        colour, styles = LINE_STYLES[role]
        for (_, entry), style in zip(group.iterrows(), itertools.cycle(styles)):
            if not math.isnan(entry["mean"]):  # its value is in the table (it may differ by panel)
                ax.axhline(entry["mean"], color=colour, linestyle=style, linewidth=1.2, label=entry["row"])


def _groups(layout: Layout) -> tuple[str, ...]:
    """The tags a bar figure groups its bars by: the layout's, else its columns but the metric."""
    return layout.groups if layout.groups is not None else tuple(k for k in layout.columns if k != "metric")


def _width(rows: pd.DataFrame, layout: Layout) -> float:
    """A panel's width in inches: it grows with its bars, more where each bar has a label of its own."""
    if layout.figure == "curve":
        return 3.6
    scored = rows[rows.role == ""]
    labelled = scored[list(_groups(layout))].drop_duplicates().shape[0] <= 1 if _groups(layout) else True
    return min(7.0, max(3.2, 0.8 + (0.65 if labelled else 0.35) * len(scored)))


def _bars(ax, rows: pd.DataFrame, layout: Layout) -> list[str]:
    """A bar per row, grouped by the layout's groups; returns the x tick labels."""
    groups = _groups(layout)
    rows = rows.assign(group=[label(r, groups, layout.target, short=True) if groups else "" for _, r in rows.iterrows()])
    rows = rows.assign(bar=[label(r, tuple(k for k in r["row_keys"] if k not in groups), layout.target)
                            for _, r in rows.iterrows()])
    group_names = ordered(rows.assign(rank=[tuple(r["col_rank"]) for _, r in rows.iterrows()]), "group", "rank")
    bar_names = ordered(rows, "bar", "row_rank")
    # a method's second bar (another pre-training, say) keeps its colour, hatched, and a half-filled mark
    method_of = dict(zip(rows.bar, rows.method))
    variant = {bar: [method_of[b] for b in bar_names[:i]].count(method_of[bar]) for i, bar in enumerate(bar_names)}
    width = 0.8 / max(1, len(bar_names))
    ticks, labels = [], []
    for g, group in enumerate(group_names):
        inside = rows[rows.group == group]
        present = [b for b in bar_names if b in set(inside.bar)]
        for i, bar in enumerate(present):
            entry = inside[inside.bar == bar].iloc[0]
            x = g + (i - (len(present) - 1) / 2) * width if len(group_names) > 1 else i
            style = names.method_style(entry["method"])
            if entry["n"] > 0 and not math.isnan(entry["mean"]):
                ax.bar(x, entry["mean"], width=width if len(group_names) > 1 else 0.7, color=style["color"], alpha=0.85,
                       hatch=HATCHES[variant[bar] % len(HATCHES)], edgecolor="white",
                       yerr=entry["std"] if entry["n"] > 1 else None, capsize=3, label=bar)
            if not math.isnan(entry["paper_value"]):  # hollow: the paper's, as in the curves
                ax.plot([x], [entry["paper_value"]], linestyle="none", markersize=7, markeredgewidth=1.5,
                        fillstyle=FILLS[variant[bar] % len(FILLS)], markerfacecoloralt="white", zorder=3,
                        label=f"{bar}, paper", **style)
            if len(group_names) == 1:
                ticks.append(x)
                labels.append(bar)
        if len(group_names) > 1:
            ticks.append(g)
            labels.append(group)
    ax.set_xticks(ticks, [textwrap.fill(text, 16) for text in labels], fontsize=7)
    ax.set_xlim(min(ticks, default=0) - 0.6, max(ticks, default=0) + 0.6)
    return labels


def _curves(ax, rows: pd.DataFrame, layout: Layout) -> None:
    rows = rows.assign(x=[_x_value(r, layout.x) for _, r in rows.iterrows()])
    xs = sorted(set(rows.x.dropna()))
    for name in ordered(rows, "row", "row_rank"):
        line = rows[rows.row == name].sort_values("x")
        style = names.method_style(line["method"].iloc[0])
        ours = line[(line.n > 0) & line["mean"].notna()]
        if len(ours):
            ax.errorbar(ours.x, ours["mean"], yerr=ours["std"].where(ours.n > 1).fillna(0), capsize=3,
                        label=name, **style)
        paper = line[line.paper_value.notna()]
        if len(paper):
            ax.plot(paper.x, paper.paper_value, linestyle="--", markerfacecolor="none", label=f"{name}, paper", **style)
    if xs:
        ax.set_xscale("log")
        unit = "%" if layout.x == "fraction" else ""
        ax.set_xticks(xs, [f"{x:g}{unit}" for x in xs], fontsize=7)
        ax.minorticks_off()
        ax.set_xlim(xs[0] / 1.6, xs[-1] * 1.6)
    ax.set_xlabel(layout.x_label, fontsize=8)


def draw(name: str, title: str, table: pd.DataFrame, layout: Layout):
    """The artifact's figure (a matplotlib Figure; :func:`save` writes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = entries(table, layout)
    panels = _panels(found, layout)
    ours_any = bool((found.n > 0).any())
    widths = [_width(rows, layout) for _, rows in panels] or [4.0]  # no rows at this report's scales: one empty panel
    cols = min(3, max(1, len(panels)))
    grid = -(-max(1, len(panels)) // cols)
    fig = plt.figure(figsize=(sum(sorted(widths, reverse=True)[:cols]), PANEL_HEIGHT * grid + 1.6), layout="constrained")
    axes = fig.subplots(grid, cols, squeeze=False).flat
    for ax in list(axes)[max(1, len(panels)):]:
        ax.set_visible(False)
    if not panels:
        fig.axes[0].set_axis_off()
        fig.axes[0].text(0.5, 0.5, "no run of ours at the scales of this report,\nno paper value known", ha="center",
                         va="center", fontsize=8, color="dimgrey")
    for ax, (panel_title, rows) in zip(fig.axes, panels):
        scored, spans = rows[rows.role == ""], rows[rows.role != ""]
        (_curves if layout.figure == "curve" else _bars)(ax, scored, layout)
        _floor_lines(ax, spans)
        metric = rows.metric.iloc[0]
        ax.set_ylabel(names.METRICS.get(metric, metric), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(textwrap.fill(panel_title, 48), fontsize=8)
        values = pd.concat([rows["mean"], rows.paper_value]).dropna()
        if layout.figure == "bars" and len(values):
            low = values.min()
            ax.set_ylim(0 if low < 30 else 10 * math.floor((low - 8) / 10), values.max() + max(2.0, 0.06 * values.max()))
        if not (scored.n > 0).any():
            ax.text(0.5, 0.5, "ours: not run yet" + ("" if scored.paper_value.notna().any() else
                                                      "\nthe paper's values: not known"),
                    transform=ax.transAxes, ha="center", va="center", fontsize=8, color="dimgrey")
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    if handles:
        labels = [textwrap.fill(text, 40) for text in handles]
        # as many columns as the figure's width holds (a one-panel figure is narrow): at font size 7 an
        # entry takes about its marker and 0.055 inch a character
        entry = 0.45 + 0.055 * max(len(line) for label in labels for line in label.splitlines())
        fig.legend(handles.values(), labels, loc="outside lower center", fontsize=7, frameon=False,
                   ncols=max(1, min(4, len(handles), int(fig.get_figwidth() // entry))))
    missing = "" if ours_any else " (no run of ours yet)"
    fig.suptitle(textwrap.fill(f"{name}{missing}: {title}", int(fig.get_figwidth() * 11)), fontsize=9)
    return fig


def save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _texts(fig) -> list:
    found = list(fig.texts) + ([fig._suptitle] if fig._suptitle else [])
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        if legend is not None:
            found += legend.get_texts()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        found += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            ticks = [t for t in axis.get_majorticklabels() + axis.get_minorticklabels()]
            lo, hi = sorted(axis.get_view_interval())
            found += [t for t in ticks if lo - 1e-9 <= (t.get_position()[0] if axis is ax.xaxis else
                                                        t.get_position()[1]) <= hi + 1e-9]
    unique = {id(t): t for t in found}  # the suptitle is among fig.texts too
    return [t for t in unique.values() if t.get_visible() and t.get_text().strip()]


def layout_problems(fig) -> list[str]:
    """Texts of ``fig`` (tick labels, legend entries, titles, axis labels) whose rendered boxes overlap
    each other or fall outside the figure, one line each; empty for a readable figure. Slanted labels
    are judged by their upright boxes too: labels slanted into each other's boxes interleave."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = _texts(fig)
    boxes = [t.get_window_extent(renderer) for t in texts]
    problems = [f"{t.get_text()!r} falls outside the figure" for t, box in zip(texts, boxes)
                if box.x0 < -1 or box.y0 < -1 or box.x1 > fig.bbox.width + 1 or box.y1 > fig.bbox.height + 1]
    for (a, box_a), (b, box_b) in itertools.combinations(zip(texts, boxes), 2):
        if box_a.padded(-0.5).overlaps(box_b.padded(-0.5)):
            problems.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]:
        box, own = legend.get_window_extent(renderer), {id(t) for t in legend.get_texts()}
        problems += [f"the legend overlaps {t.get_text()!r}" for t, b in zip(texts, boxes)
                     if id(t) not in own and box.padded(-0.5).overlaps(b.padded(-0.5))]
    return problems
