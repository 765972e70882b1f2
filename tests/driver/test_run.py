"""The driver: plan order, run identity, and the whole smoke chain end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from benchmark import REPO
from benchmark.experiments.model import Run, ref
from benchmark.experiments.plan import locate, order_runs
from benchmark.experiments.registry import plan_runs
from benchmark.report.build import MISSING, build_report
from benchmark.utils.io import write_json
from benchmark.utils.timing import record_invocation


def test_runs_come_after_what_they_refer_to() -> None:
    runs = order_runs(list(reversed(plan_runs("smoke", "smoke"))))
    position = {r.name: i for i, r in enumerate(runs)}
    for run in runs:
        assert all(position[dep] < position[run.name] for dep in run.refs())
    assert runs[0].kind == "data"


def test_run_key_follows_the_config_and_its_inputs(tmp_path) -> None:
    base = [Run("d", "data", {"seed": 0}), Run("p", "pretrain", {"data_root": ref("d", "x"), "steps": 5})]
    keys, dirs = locate(base, tmp_path)
    assert locate(base, tmp_path)[0] == keys  # stable
    changed_input = [Run("d", "data", {"seed": 1}), base[1]]
    assert locate(changed_input, tmp_path)[0]["p"] != keys["p"]  # a new input is a new run
    assert dirs["p"].parent.name == "pretrain" and keys["p"] in dirs["p"].name


def test_a_dense_runs_key_follows_its_mmengine_config_and_the_bases_it_inherits(tmp_path) -> None:
    """A finished run of an edited MMEngine config must not be taken for the new one: the config's
    text and its ``_base_`` files' are part of the key; other kinds keep keys of their config alone."""
    (tmp_path / "base.py").write_text("model = dict(backbone=dict(arch='vit-smoke'))\n")
    (tmp_path / "mini.py").write_text("_base_ = './base.py'\ntrain_cfg = dict(max_epochs=2)\n")
    run = [Run("det", "detect", {"ckpt": None, "config": str(tmp_path / "mini.py"), "data_root": "coco", "seed": 0})]
    key = locate(run, tmp_path)[0]["det"]
    assert locate(run, tmp_path)[0]["det"] == key
    (tmp_path / "base.py").write_text("model = dict(backbone=dict(arch='vit-mini'))\n")
    edited_base = locate(run, tmp_path)[0]["det"]
    (tmp_path / "mini.py").write_text("_base_ = './base.py'\ntrain_cfg = dict(max_epochs=4)\n")
    assert len({key, edited_base, locate(run, tmp_path)[0]["det"]}) == 3
    pretrain = [Run("p", "pretrain", {"config": str(tmp_path / "mini.py"), "steps": 5})]
    before = locate(pretrain, tmp_path)[0]["p"]
    (tmp_path / "mini.py").write_text("# edited\n")
    assert locate(pretrain, tmp_path)[0]["p"] == before


def test_unknown_subset_is_one_clear_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmark.run", "--subset", "fig99", "--dry-run"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "unknown subset 'fig99'" in proc.stderr


@pytest.mark.slow
def test_smoke_chain_end_to_end(tmp_path) -> None:
    runs_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "benchmark.run", "--subset", "smoke", "--runs-dir", str(runs_dir), "--no-report"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = {p.parent.name.rsplit("-", 1)[0]: json.loads(p.read_text()) for p in runs_dir.rglob("result.json")}
    assert set(results) == {"finetune-splitmask-smoke", "finetune-random-init-smoke", "detect-splitmask-smoke",
                            "segment-splitmask-smoke"}
    # Six shape classes: chance is 16.7%. Fine-tuning the pre-trained encoder must beat it clearly.
    assert results["finetune-splitmask-smoke"]["metrics"]["top1"] > 35.0
    pretrain_dir = next((runs_dir / "pretrain").iterdir())
    assert results["finetune-splitmask-smoke"]["checkpoint"]["path"] == str(pretrain_dir / "encoder.safetensors")
    assert (pretrain_dir / "config.json").is_file() and (pretrain_dir / "checkpoint.pth").is_file()

    tables = tmp_path / "tables"
    (tables / "paper").mkdir(parents=True)
    (tables / "paper" / "reference.csv").write_bytes((REPO / "tables" / "paper" / "reference.csv").read_bytes())
    build_report(runs_dir, tables, tmp_path / "plots", tmp_path / "REPORT.md")
    table = pd.read_csv(tables / "smoke.csv", dtype=str, keep_default_na=False)
    assert (table.ours_mean != MISSING).all() and (table.n_runs == "1").all()
    assert (tmp_path / "plots" / "smoke.png").is_file()

    # The driver keeps each run's duration, which prices a later, resumed plan from its start.
    assert all(json.loads(p.read_text())["wall_s"] > 0 for p in runs_dir.glob("*/*/run.json"))
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0 and again.stdout.count("done already") == 6
    assert "left]" in again.stdout.splitlines()[-2]  # the last run's line has an estimate from the start


def test_paper_dry_run_plans_each_pretraining_once_with_its_compute(tmp_path, capsys) -> None:
    from benchmark.driver.run import main

    (tmp_path / "no-data").mkdir()  # a data root without the data sets (a missing root is one line: test below)
    assert main(["--subset", "all", "--scale", "paper", "--dry-run", "--runs-dir", str(tmp_path / "runs"),
                 "--data-root", str(tmp_path / "no-data")]) == 0
    out, err = capsys.readouterr()
    pretrain_lines = [line.split() for line in out.splitlines() if line.split()[1:2] == ["pretrain"]]
    names = [fields[2] for fields in pretrain_lines]
    assert len(names) == len(set(names)) > 20
    dirs = [next(f for f in fields if f.startswith("pretrain/")) for fields in pretrain_lines]
    assert len(set(d.rsplit("-", 1)[1] for d in dirs)) == len(dirs)  # distinct configs: distinct keys
    assert all("GPU-h" in " ".join(fields) for fields in pretrain_lines)
    assert "compute still to run:" in out and "GPU-hours" in out
    # Every real data set is missing here: each is named with its layout, and what it blocks.
    assert "missing data set 'imagenet'" in err and "train/<wnid>" in err and "blocks" in err


def test_the_dry_run_prices_a_plan_at_the_pace_its_recorded_runs_went(tmp_path, capsys) -> None:
    """The report's records keep each run's wall time and the driver's invocations: a dry run in an
    empty runs directory reads them to say how long the plan takes (FLOPs say little for small models)."""
    from benchmark.driver.run import main

    records = tmp_path / "report" / "records"
    write_json(records / "pretrain" / "pretrain-splitmask-smoke-0123456789ab" / "run.json",
               {"name": "pretrain-splitmask-smoke", "kind": "pretrain", "tags": {"scale": "smoke"}, "wall_s": 36_000.0})
    record_invocation(records, {"subset": "smoke", "scale": "smoke", "jobs": 3, "machine": "a test machine",
                                "finished": "2999-01-01 00:00 UTC"})
    assert main(["--subset", "smoke", "--dry-run", "--runs-dir", str(tmp_path / "runs"),
                 "--report-dir", str(tmp_path / "report")]) == 0
    pace = capsys.readouterr().out.splitlines()[-1]
    assert pace.startswith("time still to run: about") and pace.endswith("(on a test machine; --jobs 3)")
    assert int(pace.split("about ")[1].split(" min")[0]) >= 36_000 / 3 / 60  # the 10-hour pre-training, 3 at a time


# ---------------------------------------------------------------------------- what a plan may not lose


def _report_dir_with_files(tmp_path):
    report_dir = tmp_path / "report"
    for name in ("tables/fig1.csv", "plots/fig1.png", "REPORT.md"):
        (report_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (report_dir / name).write_text(f"earlier {name}")
    return report_dir, {p: p.read_bytes() for p in report_dir.rglob("*") if p.is_file()}


def test_a_plan_in_which_nothing_finished_leaves_the_report_alone(tmp_path, capsys) -> None:
    from benchmark.driver.run import main

    report_dir, before = _report_dir_with_files(tmp_path)
    code = main(["--subset", "table6", "--scale", "small", "--data-root", str(tmp_path / "nope"),
                 "--runs-dir", str(tmp_path / "runs"), "--report-dir", str(report_dir)])
    assert code == 1  # every run blocked
    out, err = capsys.readouterr()
    assert f"no run of this plan has finished: the report in {report_dir} is left as it is" in out
    assert {p: p.read_bytes() for p in report_dir.rglob("*") if p.is_file()} == before
    # A --data-root that does not exist is one line about the root, not one per data set.
    about_root = [line for line in err.splitlines() if "--data-root" in line or "missing data set" in line]
    assert len(about_root) == 1 and about_root[0].startswith(f"--data-root {tmp_path / 'nope'}: no such directory")


def test_another_runs_dir_reports_beside_it_unless_told_otherwise(tmp_path) -> None:
    from benchmark.driver.run import DEFAULT_RUNS, report_dir_for

    assert report_dir_for(DEFAULT_RUNS, None) == REPO
    assert report_dir_for(tmp_path / "runs", None) == tmp_path / "runs" / "report"
    assert report_dir_for(tmp_path / "runs", str(tmp_path / "r")) == tmp_path / "r"
    parser_help = subprocess.run([sys.executable, "-m", "benchmark.run", "--help"], capture_output=True, text=True,
                                 cwd=REPO).stdout
    assert "RUNS_DIR/report" in " ".join(parser_help.split())
    assert f"(default: {DEFAULT_RUNS})" in " ".join(parser_help.split())


def test_a_second_driver_on_a_runs_dir_in_use_says_who_holds_it_and_stops(tmp_path, capsys) -> None:
    from benchmark.driver.run import main
    from benchmark.utils.lock import exclusive

    runs = tmp_path / "runs"
    with exclusive(runs, "runs directory"):  # the first driver
        code = main(["--subset", "smoke", "--runs-dir", str(runs), "--no-report"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {runs}: this runs directory is in use by process {os.getpid()} on ")
    assert err.endswith("wait for it to finish (or pass --wait), or use another directory")
    assert not (runs / "data").exists()  # nothing ran


def test_a_runs_dir_that_cannot_be_written_is_one_line(tmp_path, capsys) -> None:
    from benchmark.driver.run import main

    (tmp_path / "afile").write_text("")
    runs = tmp_path / "afile" / "runs"
    assert main(["--subset", "smoke", "--runs-dir", str(runs), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: --runs-dir {runs}: ") and "Not a directory" in err[-1]


def test_quick_runs_do_not_price_a_plan_of_training_runs() -> None:
    from benchmark.driver.time_left import TimeLeft

    runs = [Run("d", "data", {}, tags={}), Run("p", "pretrain", {}, tags={"method": "mae"}),
            Run("f", "finetune", {}, tags={"method": "mae"})]
    left = TimeLeft(runs)
    left.finished(runs[0], 2.0)
    assert left.seconds() is None  # a data set written in 2 s says nothing of training runs
    left.finished(runs[1], 600.0)
    assert left.seconds() == pytest.approx(600.0)  # the fine-tuning priced by the training runs seen


def test_the_dry_run_says_why_a_count_is_unknown_in_the_commands_terms(capsys) -> None:
    from benchmark.driver.run import main

    assert main(["--subset", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dataset_sizes" not in out
    assert "a data set given by its path: the dry run knows the image counts of the named data sets only" in out


def test_a_machine_without_the_mm_stack_plans_and_prices_every_other_run(tmp_path) -> None:
    """A GPU machine with torch alone (no MMDetection, MMSegmentation, mmcv): the driver imports every
    stage, the dense one included, and plans and prices the miniature; only the dense runs need the stack."""
    import subprocess
    import sys

    from benchmark import REPO

    code = ("import sys\n"
            "for name in ('mmdet', 'mmseg', 'mmcv', 'mmengine'):\n"
            "    sys.modules[name] = None  # as if not installed\n"
            "from benchmark.downstream import mm\n"
            "assert mm.MISSING.startswith('mmdet'), mm.MISSING\n"
            "from benchmark.driver.run import main\n"
            "sys.exit(main(['--subset', 'mini', '--scale', 'mini-gpu', '--dry-run', '--runs-dir', sys.argv[1]]))\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "plan: 30 runs for --subset mini --scale mini-gpu" in done.stdout
