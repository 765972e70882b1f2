"""The report rebuilds tables and plots from run directories alone."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark import REPO
from benchmark.experiments.registry import plan_runs
from benchmark.report.build import MISSING, UNKNOWN, build_report
from benchmark.utils.io import write_json
from benchmark.utils.results import write_result


def _fake_run(runs_dir: Path, name: str, kind: str, tags: dict, metrics: dict, seed: int) -> None:
    run_dir = runs_dir / kind / f"{name}-seed{seed}"
    write_json(run_dir / "run.json", {"name": name, "kind": kind, "key": f"k{seed}", "tags": tags, "config": {}})
    write_result(run_dir, kind, metrics, {"seed": seed}, seed=seed, started=time.time())


def _fixture(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    runs, tables, plots = tmp_path / "runs", tmp_path / "tables", tmp_path / "plots"
    (tables / "paper").mkdir(parents=True)
    shutil.copy(REPO / "tables" / "paper" / "reference.csv", tables / "paper" / "reference.csv")
    by_name = {r.name: r for r in plan_runs("smoke", "smoke")}
    for seed, top1 in [(0, 40.0), (1, 50.0)]:
        _fake_run(runs, "finetune-splitmask-smoke", "finetune", by_name["finetune-splitmask-smoke"].tags, {"top1": top1}, seed)
    _fake_run(runs, "detect-splitmask-smoke", "detect", by_name["detect-splitmask-smoke"].tags,
              {"bbox_mAP": 1.5, "segm_mAP": 0.5, "bbox_mAP_50": 3.0}, 0)
    return runs, tables, plots, tmp_path / "REPORT.md"


def test_report_from_fixture_results(tmp_path) -> None:
    runs, tables, plots, report = _fixture(tmp_path)
    build_report(runs, tables, plots, report)
    table = pd.read_csv(tables / "smoke.csv", dtype=str, keep_default_na=False)
    rows = {(r.method, r.downstream, r.metric): r for r in table.itertuples()}
    ft = rows[("splitmask", "synthetic-cls-finetune", "top1")]
    assert (ft.ours_mean, ft.ours_std, ft.n_runs, ft.seeds, ft.run_keys) == ("45.00", "7.07", "2", "0 1", "k0 k1")
    assert ft.paper == UNKNOWN and ft.diff == MISSING  # the paper has no smoke-scale numbers
    # Planned but not run: shown as missing, never as a number.
    for key in [("random-init", "synthetic-cls-finetune", "top1"), ("splitmask", "synthetic-ade20k-upernet", "mIoU")]:
        assert rows[key].ours_mean == MISSING and rows[key].n_runs == "0"
    assert rows[("splitmask", "synthetic-coco-maskrcnn", "segm_mAP")].ours_mean == "0.50"
    assert ("splitmask", "synthetic-coco-maskrcnn", "bbox_mAP_50") not in rows  # not a table metric
    assert (plots / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.read_text()
    assert "## smoke" in text and "45.0 ± 7.1 (2)" in text and MISSING in text  # the readable table's cell
    assert "![smoke](plots/smoke.png)" in text  # the figure beside it


def test_report_is_reproducible(tmp_path) -> None:
    runs, tables, plots, report = _fixture(tmp_path)
    build_report(runs, tables, plots, report)
    first = (tables / "smoke.csv").read_bytes()
    build_report(runs, tables, plots, report)
    assert (tables / "smoke.csv").read_bytes() == first


def test_report_without_runs_is_refused_and_writes_nothing(tmp_path) -> None:
    """A report of no runs would replace every table with empty rows: it is refused."""
    from benchmark.report.build import ReportError

    runs, tables, plots, report = _fixture(tmp_path)
    shutil.rmtree(runs)
    with pytest.raises(ReportError, match="no such runs directory; the report was left as it is"):
        build_report(runs, tables, plots, report)
    assert not report.exists() and not list(tables.glob("*.csv")) and not plots.exists()


def test_shared_runs_count_in_each_artifact_beside_the_papers_values(tmp_path) -> None:
    """A paper-scale fine-tuning that table 7 and table 8 share appears in both tables; the
    paper's value sits beside it even where the paper does not state the arch, and the paper's
    metric spellings (bbox_ap, miou) meet ours (bbox_mAP, mIoU)."""
    runs, tables, plots, report = _fixture(tmp_path)
    by_name = {r.name: r for r in plan_runs("all", "paper")}
    shared = next(r for r in by_name.values() if r.kind == "finetune" and r.tags["method"] == "beit"
                  and r.tags["pretrain_data"] == "imagenet-100%" and r.tags["downstream"] == "imagenet-finetune"
                  and {"table7", "table8"} <= set(r.tags["artifacts"]))
    _fake_run(runs, shared.name, "finetune", shared.tags, {"top1": 80.0}, 0)
    detect = next(r for r in by_name.values() if r.kind == "detect" and r.tags["method"] == "splitmask"
                  and r.tags["pretrain_data"] == "coco" and "table4" in r.tags["artifacts"])
    _fake_run(runs, detect.name, "detect", detect.tags, {"bbox_mAP": 40.0, "segm_mAP": 35.0}, 0)
    build_report(runs, tables, plots, report)

    for artifact in ("table7", "table8"):
        table = pd.read_csv(tables / f"{artifact}.csv", dtype=str, keep_default_na=False)
        mine = table[(table.method == "beit") & (table.pretrain_data == "imagenet-100%") & (table.arch == shared.tags["arch"])
                     & (table.downstream == "imagenet-finetune") & (table.ours_mean != MISSING)]
        assert list(mine.ours_mean) == ["80.00"], artifact
    t8 = pd.read_csv(tables / "table8.csv", dtype=str, keep_default_na=False)
    row = t8[(t8.method == "beit") & (t8.downstream == "imagenet-finetune") & (t8.ours_mean == "80.00")].iloc[0]
    assert (row["paper"], row["paper_arch"], row["diff"]) == ("82.8", UNKNOWN, "-2.80")
    t4 = pd.read_csv(tables / "table4.csv", dtype=str, keep_default_na=False)
    ours = (t4.method == "splitmask") & (t4.pretrain_data == "coco") & (t4.metric == "bbox_mAP") & (t4.ours_mean != MISSING)
    row = t4[ours].iloc[0]
    assert (row["ours_mean"], row["paper"], row["diff"]) == ("40.00", "46.8", "-6.80")


def test_subset_size_figure_is_a_curve_over_the_fractions(tmp_path) -> None:
    from benchmark.experiments.registry import ARTIFACTS
    from benchmark.report.figures import draw

    runs, tables, plots, report = _fixture(tmp_path)
    evals = [r for r in plan_runs("fig2", "smoke") if r.kind == "finetune" and r.tags["method"] == "splitmask"]
    by_fraction = {r.tags["pretrain_data"]: r for r in evals}
    for pretrain_data, top1 in [("imagenet-1%", 30.0), ("imagenet-100%", 40.0)]:
        run = by_fraction[pretrain_data]
        _fake_run(runs, run.name, "finetune", run.tags, {"top1": top1}, 0)
    build_report(runs, tables, plots, report)
    table = pd.read_csv(tables / "fig2.csv", dtype=str, keep_default_na=False)
    fig = draw("fig2", ARTIFACTS["fig2"].title, table, ARTIFACTS["fig2"].layout)
    (line,) = [c.lines[0] for ax in fig.axes for c in ax.containers if c.get_label() == "SplitMask"]
    assert list(zip(line.get_xdata(), line.get_ydata())) == [(1.0, 30.0), (100.0, 40.0)]  # sorted by subset size
    assert fig.axes[0].get_xscale() == "log"
    assert len(evals) > 2  # the other fractions exist in the plan but have not run: not drawn
    assert (plots / "fig2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_made_before_the_reference_schedule_are_named(tmp_path) -> None:
    """A result.json without ``lr_schedule`` (written before the schedules followed BEiT's, DINO's
    and MAE's code) is counted in REPORT.md; one written now carries the rule and is not."""
    import json

    runs, tables, plots, report = _fixture(tmp_path)
    build_report(runs, tables, plots, report)
    assert "learning-rate schedule used before" not in report.read_text()
    old = next(runs.rglob("detect-splitmask-smoke-seed0/result.json"))
    result = json.loads(old.read_text())
    assert result["lr_schedule"] == "reference-cosine/1"
    del result["lr_schedule"]
    write_json(old, result)
    build_report(runs, tables, plots, report)
    # (the fixture gives its detection run the key of a fine-tuning run: two distinct keys in all)
    assert "1 of the 2 evaluation runs below (smoke) were made with the learning-rate schedule used before" in report.read_text()


# ---------------------------------------------------------------------------- what a rebuild may not lose


def _report_files(tables: Path, plots: Path, report: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in [*tables.glob("*.csv"), *plots.glob("*.png"), report] if p.is_file()}


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_a_missing_or_empty_runs_dir_is_refused_and_the_report_left_as_it_is(case: str, tmp_path, capsys) -> None:
    from benchmark.report.build import main

    runs, tables, plots, report = _fixture(tmp_path)
    build_report(runs, tables, plots, report)
    before = _report_files(tables, plots, report)
    typo = tmp_path / "runs_typo"
    if case == "empty":
        typo.mkdir()
    capsys.readouterr()
    assert main(["--runs-dir", str(typo), "--report-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    what = "no such runs directory" if case == "missing" else "no finished evaluation (result.json with its run.json)"
    assert len(err) == 1 and err[0].startswith(f"error: {typo}: {what}"), err
    assert _report_files(tables, plots, report) == before


def test_the_papers_values_stand_in_every_table_whatever_runs_exist(tmp_path) -> None:
    """Only smoke runs: the paper artifacts still list their paper-scale rows, with the paper's values."""
    runs, tables, plots, report = _fixture(tmp_path)
    built = build_report(runs, tables, plots, report)
    paper = pd.read_csv(REPO / "tables" / "paper" / "reference.csv")
    for artifact, refs in paper.groupby("artifact"):
        table = built[artifact]
        shown = table[(table.scale == "paper") & (table.paper != UNKNOWN)]
        assert len(shown) >= len(refs), artifact
        assert all(v == MISSING for v in shown.ours_mean)  # no paper-scale run here: ours is "—"


def test_a_rebuild_lists_the_rows_it_drops(tmp_path, capsys) -> None:
    runs, tables, plots, report = _fixture(tmp_path)
    build_report(runs, tables, plots, report)
    shutil.rmtree(runs / "detect")  # that run's result is gone from this runs dir
    capsys.readouterr()
    build_report(runs, tables, plots, report)
    err = capsys.readouterr().err
    assert "[report] smoke: dropped splitmask / synthetic-classification / vit-smoke / synthetic-coco-maskrcnn / " \
           "bbox_mAP / smoke: 1.50" in err, err


def test_a_non_finite_metric_reads_nan_not_missing(tmp_path) -> None:
    runs, tables, plots, report = _fixture(tmp_path)
    by_name = {r.name: r for r in plan_runs("smoke", "smoke")}
    _fake_run(runs, "finetune-random-init-smoke", "finetune", by_name["finetune-random-init-smoke"].tags,
              {"top1": float("nan")}, 0)
    table = build_report(runs, tables, plots, report)["smoke"]
    row = table[(table.method == "random-init") & (table.metric == "top1")].iloc[0]
    assert (row.ours_mean, row.ours_std, row.n_runs, row.seeds) == ("nan", "—", 1, "0")
    assert "it happened and its metric is not a number" in report.read_text()


def test_a_corrupt_run_json_is_skipped_with_one_line(tmp_path, capsys) -> None:
    runs, tables, plots, report = _fixture(tmp_path)
    broken = next(runs.rglob("detect-splitmask-smoke-seed0")) / "run.json"
    broken.write_text("{not json")
    capsys.readouterr()
    table = build_report(runs, tables, plots, report)["smoke"]
    assert f"[report] skipping {broken}: not a readable run.json" in capsys.readouterr().err
    assert (table[table.downstream == "synthetic-coco-maskrcnn"].ours_mean == MISSING).all()


def test_epochs_are_shown_to_six_significant_digits(tmp_path) -> None:
    from benchmark.report.build import _tag_values

    assert _tag_values({"epochs": 3249.3012757107713, "method": "beit"})["epochs"] == "3249.3"
    assert _tag_values({"epochs": 300.0})["epochs"] == "300"


def test_a_full_disk_while_reporting_is_one_line(tmp_path, planned_run) -> None:
    """A real write failure (a file-size limit in a child process) while the report writes its files."""
    import subprocess
    import sys

    runs = tmp_path / "runs"
    planned_run(runs, "finetune-splitmask-smoke", {"top1": 41.0})
    child = ("import resource, signal, sys\n"
             "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, resource.RLIM_INFINITY))\n"
             "from benchmark.report.build import main\n"
             "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", child, "--runs-dir", str(runs), "--report-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.strip().splitlines() if not line.startswith("[report]")]
    assert len(err) == 1 and "no space left on device; not written" in err[0] and "Traceback" not in proc.stderr
    assert not list((tmp_path / "out").rglob(".*.tmp"))


def test_the_report_says_where_the_latest_invocation_of_each_plan_spent_its_time(tmp_path) -> None:
    from benchmark.report.build import timing_section
    from benchmark.utils.timing import record_invocation

    base = {"jobs": 2, "machine": "2 CPU cores (x), no GPU", "finished": "2026-11-30 03:00 UTC", "runs": 4, "planned": 4,
            "startup_s": 7.0, "wall_s": 1500.0}
    record_invocation(tmp_path, {**base, "subset": "mini", "scale": "mini", "wall_s": 99.0, "by_kind": {}})
    record_invocation(tmp_path, {**base, "subset": "mini", "scale": "mini",
                                 "by_kind": {"fine-tuning": {"seconds": 900.0, "runs": 3},
                                             "pre-training": {"seconds": 600.0, "runs": 1}}})
    (tmp_path / "driver.jsonl").write_text((tmp_path / "driver.jsonl").read_text() + "not json\n")
    lines = timing_section(tmp_path)
    (line,) = [x for x in lines if x.startswith("- ")]
    assert line == ("- `--subset mini --scale mini`, finished 2026-11-30 03:00 UTC: fine-tuning 15 min (3 runs), "
                    "pre-training 10 min (1 runs); start-up 7s; wall 25 min with --jobs 2 on 2 CPU cores (x), no GPU; "
                    "4 of 4 planned runs finished.")
    assert timing_section(tmp_path / "none") == []


def test_every_row_of_a_table_with_floors_says_whether_it_clears_the_best_one() -> None:
    from benchmark.report.build import floor_marks

    rows = [("pixels-logistic", "top1", "mini", "79.42"), ("pixels-knn", "top1", "mini", "74.80"),
            ("splitmask", "top1", "mini", "80.10"), ("dino", "top1", "mini", "76.00"),
            ("beit", "top1", "mini", MISSING),            # not run yet
            ("splitmask", "top5", "mini", "99.00"),       # no floor on this metric
            ("dino", "top1", "mini-quick", "30.00")]      # nor at this scale
    table = pd.DataFrame(rows, columns=["method", "metric", "scale", "ours_mean"])
    assert floor_marks(table) == ["floor", "floor", "above pixels-logistic 79.42", "BELOW pixels-logistic 79.42",
                                  MISSING, MISSING, MISSING]
