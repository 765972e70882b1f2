"""The report's tables and figures in the paper's layout (benchmark.report.layout, .figures): read
from the committed tables/, so that what is checked is what a reader sees."""

from __future__ import annotations

import matplotlib
import pandas as pd
import pytest

from benchmark import REPO
from benchmark.experiments.registry import ARTIFACTS
from benchmark.experiments.scales import MINI_SCALES
from benchmark.report.figures import draw, layout_problems
from benchmark.report.gates import monitor_curves, plot_monitor_curves
from benchmark.report.layout import entries, markdown
from benchmark.report.names import method_style
from benchmark.report.perf_section import load_perf, perf_figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _committed(name: str) -> pd.DataFrame:
    return pd.read_csv(REPO / "tables" / f"{name}.csv", dtype=str, keep_default_na=False)


@pytest.mark.parametrize("name", list(ARTIFACTS))
def test_every_figure_is_readable(name: str) -> None:
    """No two tick labels, legend entries or titles overlap, and nothing falls outside the figure."""
    fig = draw(name, ARTIFACTS[name].title, _committed(name), ARTIFACTS[name].layout)
    try:
        assert layout_problems(fig) == []
    finally:
        plt.close(fig)


def test_the_overlap_check_fails_on_the_old_bar_layout() -> None:
    """The bar chart that drew plots/mini_dense.png before the paper layouts (one bar per row, run
    keys as two-line labels slanted by 30 degrees) is caught by the check."""
    table = _committed("mini_dense")
    panels = table.groupby(["downstream", "metric"], sort=True)
    widest = max(len(rows) for _, rows in panels)
    fig, axes = plt.subplots(2, 2, figsize=(min(12.0, max(4.2, 0.75 * widest)) * 2, 8.4), squeeze=False)
    for ax, (_, rows) in zip(axes.flat, panels):
        labels = [f"{m}\n({d}, {s})" for m, d, s in zip(rows.method, rows.pretrain_data, rows.scale)]
        ax.bar(range(len(rows)), pd.to_numeric(rows.ours_mean, errors="coerce").fillna(0))
        ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=30, ha="right")
    fig.tight_layout()
    try:
        problems = layout_problems(fig)
    finally:
        plt.close(fig)
    assert any("overlaps" in line and "splitmask" in line for line in problems)


def test_table6_in_miniature_reads_as_the_paper_lays_it_out() -> None:
    text = "\n".join(markdown(_committed("mini_table6"), ARTIFACTS["mini_table6"].layout))
    lines = text.split("**mini-gpu")[0].splitlines()  # the mini scale's table
    assert "**mini (2 CPU cores) · vit-mini**" in text
    header = next(line for line in lines if line.startswith("|") and "Fashion-MNIST" in line)
    assert "Fashion-MNIST, 1k labels, fine-tuning" in header  # the data set as the column
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in lines
            if line.startswith("| ") and "---" not in line}
    # methods as rows, display names, the floors and the ceiling as rows of their own
    assert {"SplitMask", "BEiT", "DINO", "random init", "supervised", "pixels + logistic regression (floor)",
            "pixels + k-NN (floor)", "supervised, all labels (ceiling)"} <= set(rows)
    table = _committed("mini_table6")
    splitmask = table[(table.method == "splitmask") & (table.scale == "mini")].iloc[0]
    ours = f"{float(splitmask.ours_mean):.1f} ({splitmask.n_runs})"
    below = splitmask.vs_floor.startswith("BELOW")
    assert rows["SplitMask"] == ours + (" ↓" if below else "")


def test_seeds_and_paper_values_stand_in_the_cells() -> None:
    seeds = "\n".join(markdown(_committed("mini_seeds"), ARTIFACTS["mini_seeds"].layout))
    table = _committed("mini_seeds")
    row = table[(table.method == "splitmask") & (table.scale == "mini")].iloc[0]
    assert f"{float(row.ours_mean):.1f} ± {float(row.ours_std):.1f} ({row.n_runs})" in seeds
    dense = "\n".join(markdown(_committed("table4"), ARTIFACTS["table4"].layout))
    # Table 4: box and mask AP side by side, the paper's value beside our missing one
    assert "| box AP" in dense and "mask AP" in dense
    assert "SplitMask, pre-trained on COCO" in dense and "—; paper 46.8" in dense


def test_a_figure_without_our_runs_says_so_and_shows_the_papers_values() -> None:
    table = _committed("table6")
    table = table.assign(ours_mean="—", ours_std="—", n_runs="0")
    fig = draw("table6", ARTIFACTS["table6"].title, table, ARTIFACTS["table6"].layout)
    try:
        texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [fig._suptitle.get_text()]
        assert any("ours: not run yet" in t for t in texts) and "no run of ours yet" in fig._suptitle.get_text()
        marks = [line for ax in fig.axes for line in ax.get_lines() if line.get_label().endswith(", paper")]
        assert any(92.0 < y < 94.0 for line in marks for y in line.get_ydata())  # the paper's Stanford Cars values
    finally:
        plt.close(fig)


def test_a_method_has_one_colour_in_every_figure() -> None:
    colours = {}
    for name in ("mini_table6", "mini_fig2", "mini_dense"):
        fig = draw(name, ARTIFACTS[name].title, _committed(name), ARTIFACTS[name].layout)
        for container in (c for ax in fig.axes for c in ax.containers if c.get_label() == "SplitMask"):
            if isinstance(container, matplotlib.container.BarContainer):
                found = {matplotlib.colors.to_hex(p.get_facecolor(), keep_alpha=False) for p in container.patches}
            else:  # a curve's errorbar: its data line
                found = {matplotlib.colors.to_hex(container.lines[0].get_color())}
            colours.setdefault(name, set()).update(found)
        plt.close(fig)
    assert set().union(*colours.values()) == {matplotlib.colors.to_hex(method_style("splitmask")["color"])}
    assert len(colours) == 3


def test_rows_that_share_a_cell_are_told_apart() -> None:
    """Two rows of one block that the layout's tags cannot tell apart get the tag that does."""
    table = _committed("table6")
    found = entries(table, ARTIFACTS["table6"].layout)
    block = found[found.block == found.block.iloc[0]]
    assert not block[block.role == ""].duplicated(["row", "col"]).any()
    assert any("target data" in row for row in block.row)


def test_a_comparison_the_paper_states_in_another_table_borrows_its_value(tmp_path) -> None:
    """Fig. 1's COCO bars are Table 4's rows: the value is shown, its status naming its table; a curve
    over epochs (cars_overtraining) does not take Table 6's single value for each of its points."""
    from benchmark.report.build import PAPER_REFERENCE, artifact_table, load_paper

    paper, results = load_paper(PAPER_REFERENCE), pd.DataFrame(columns=["artifact", "value", "seed", "run_key"])
    fig1 = artifact_table("fig1", results, paper, ["paper"])
    row = fig1[(fig1.method == "splitmask") & (fig1.pretrain_data == "coco") & (fig1.metric == "bbox_mAP")].iloc[0]
    assert (row.paper, row.paper_status) == ("46.8", "secondary, from table4")
    cars = artifact_table("cars_overtraining", results, paper, ["paper"])
    assert set(cars.paper) == {"unknown"}


@pytest.mark.parametrize("stem", sorted(p.stem for p in (REPO / "plots").glob("perf*.png")))
def test_every_throughput_figure_is_readable(stem: str) -> None:
    """The figures of ``python -m benchmark.perf`` (plots/perf*.png), drawn again from their
    committed tables, pass the same check."""
    table, meta = load_perf(REPO / "tables", stem)
    fig = perf_figure(table, meta)
    try:
        assert layout_problems(fig) == []
    finally:
        plt.close(fig)


@pytest.mark.parametrize("scale", MINI_SCALES)
def test_every_pretraining_curve_figure_is_readable(scale: str) -> None:
    """plots/<scale>_pretrain_curves.png, drawn again from the committed records' logs."""
    curves = monitor_curves(REPO / "records", {scale})
    if not curves:
        assert not (REPO / "plots" / f"{scale}_pretrain_curves.png").exists()  # no records: no figure either
        return
    fig = plot_monitor_curves(curves)
    try:
        assert layout_problems(fig) == []
    finally:
        plt.close(fig)
