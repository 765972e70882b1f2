"""The report keeps the small files of the runs it reads (records/) and rebuilds from them alone."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from benchmark import REPO
from benchmark.report.build import ReportError, rebuild
from benchmark.report.records import RECORDS
from benchmark.utils.io import write_json
from benchmark.utils.timing import read_invocations, record_invocation


def _invocation(finished: str) -> dict:
    return {"subset": "smoke", "scale": "smoke", "jobs": 1, "machine": "2 CPU cores (x), no GPU", "finished": finished,
            "runs": 1, "planned": 6, "startup_s": 5.0, "wall_s": 60.0, "by_kind": {"fine-tuning": {"seconds": 50.0, "runs": 1}}}


def _fixture(tmp_path: Path, planned_run) -> tuple[Path, Path, Path]:
    runs_dir, report_dir = tmp_path / "runs", tmp_path / "report"
    (report_dir / "tables" / "paper").mkdir(parents=True)
    shutil.copy(REPO / "tables" / "paper" / "reference.csv", report_dir / "tables" / "paper" / "reference.csv")
    run_dir = planned_run(runs_dir, "finetune-splitmask-smoke", {"top1": 41.0})
    # planned but not finished (no result.json): not recorded
    unfinished = planned_run(runs_dir, "finetune-random-init-smoke", {"top1": 1.0})
    (unfinished / "result.json").unlink()
    # finished but planned by nothing (another config, so another key): not recorded
    planned_run(runs_dir, "finetune-splitmask-smoke", {"top1": 99.0}, key="000000000000")
    record_invocation(runs_dir, _invocation("2026-12-01 02:00 UTC"))
    return runs_dir, report_dir, run_dir


def test_the_report_records_finished_planned_runs_and_rebuilds_the_same_tables_from_them_alone(tmp_path, capsys,
                                                                                              planned_run) -> None:
    runs_dir, report_dir, run_dir = _fixture(tmp_path, planned_run)
    records = report_dir / RECORDS
    stale = records / "finetune" / "finetune-splitmask-smoke-deadbeef0000"  # a superseded recipe's record
    write_json(stale / "run.json", {"name": "finetune-splitmask-smoke"})
    record_invocation(records, _invocation("2026-11-30 01:00 UTC"))

    rebuild(runs_dir, report_dir)
    recorded = {p.relative_to(records).as_posix() for p in records.rglob("*") if p.is_file()}
    run_rel = run_dir.relative_to(runs_dir).as_posix()
    assert recorded == {f"{run_rel}/run.json", f"{run_rel}/result.json", "driver.jsonl"}
    assert "finetune-splitmask-smoke-deadbeef0000 removed" in capsys.readouterr().err
    assert [r["finished"] for r in read_invocations(records)] == ["2026-11-30 01:00 UTC", "2026-12-01 02:00 UTC"]
    table = (report_dir / "tables" / "smoke.csv").read_text()
    assert "41.00" in table and "99.00" not in table

    # A fresh clone: no runs directory, the records alone give the same table; a superseded record
    # there is removed too (the plan changed in the checkout), never shown.
    write_json(stale / "run.json", {"name": "finetune-splitmask-smoke"})
    write_json(stale / "result.json", json.loads((records / run_rel / "result.json").read_text()))
    rebuild(tmp_path / "no-runs", report_dir)
    assert not stale.exists() and "finetune-splitmask-smoke-deadbeef0000 removed" in capsys.readouterr().err
    assert (report_dir / "tables" / "smoke.csv").read_text() == table
    assert "from 1 metric values in" in (report_dir / "REPORT.md").read_text()
    # Recording again changes nothing (the time records once each).
    rebuild(runs_dir, report_dir)
    assert len(read_invocations(records)) == 2 and (report_dir / "tables" / "smoke.csv").read_text() == table


def test_a_run_again_replaces_its_record_whole(tmp_path, planned_run) -> None:
    runs_dir, report_dir, run_dir = _fixture(tmp_path, planned_run)
    rebuild(runs_dir, report_dir)
    (run_dir / "log.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    result = json.loads((run_dir / "result.json").read_text())
    write_json(run_dir / "result.json", {**result, "metrics": {"top1": 43.0}})
    rebuild(runs_dir, report_dir)
    record = report_dir / RECORDS / run_dir.relative_to(runs_dir)
    assert sorted(p.name for p in record.iterdir()) == ["log.jsonl", "result.json", "run.json"]
    assert not list((report_dir / RECORDS).rglob("*.new"))
    assert "43.00" in (report_dir / "tables" / "smoke.csv").read_text()


def test_neither_runs_nor_records_is_refused_and_nothing_written(tmp_path) -> None:
    with pytest.raises(ReportError, match="no such runs directory, and no records"):
        rebuild(tmp_path / "runs", tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_records_that_cannot_be_written_are_one_line_and_the_report_is_left_as_it_is(tmp_path, planned_run) -> None:
    runs_dir, report_dir, _ = _fixture(tmp_path, planned_run)
    (report_dir / RECORDS).write_text("a file where the records should be")
    with pytest.raises(ReportError, match=r"records: .*; the report was left as it is"):
        rebuild(runs_dir, report_dir)
    assert not (report_dir / "REPORT.md").exists() and not list((report_dir / "tables").glob("*.csv"))


def test_the_miniatures_artifacts_without_runs_are_named_with_how_to_run_them() -> None:
    import pandas as pd

    from benchmark.report.build import MISSING, missing_mini_line

    def table(*means: str, scale: str = "mini") -> pd.DataFrame:
        return pd.DataFrame({"scale": [scale] * len(means), "ours_mean": list(means)})

    tables = {"mini_table6": table("76.0", "74.2"), "mini_fig2": table("76.0", MISSING),
              "mini_dense": table(MISSING), "table6": table(MISSING)}
    line = missing_mini_line(tables, ["mini"])
    assert line[0].startswith("At scale mini, not yet run at the current settings") and "`mini_fig2`, `mini_dense`;" in line[0]
    assert "mini_table6" not in line[0] and "`table6`" not in line[0] and "--scale mini`" in line[0]
    assert missing_mini_line({"mini_table6": table("76.0")}, ["mini"]) == []
    # each scale of the miniature that ran says what it lacks, in a line of its own
    both = {"mini_table6": pd.concat([table("76.0"), table(MISSING, scale="mini-gpu")]), "mini_fig2": table(MISSING)}
    lines = [line for line in missing_mini_line(both, ["mini", "mini-gpu"]) if line]
    assert lines[0].startswith("At scale mini,") and "`mini_fig2`" in lines[0] and "mini_table6" not in lines[0]
    assert lines[1].startswith("At scale mini-gpu,") and "`mini_table6`" in lines[1] and "mini_fig2" not in lines[1]


def test_a_run_two_scales_plan_alike_counts_at_each_that_ran(tmp_path) -> None:
    import time

    from benchmark.experiments.plan import locate, order_runs
    from benchmark.experiments.registry import plan_runs
    from benchmark.report.build import collect
    from benchmark.utils.results import write_result

    def finish(scale: str, name_part: str, value: float) -> None:
        runs = order_runs(plan_runs("mini_table6", scale))
        keys, dirs = locate(runs, tmp_path)
        run = next(r for r in runs if name_part in r.name)
        write_json(dirs[run.name] / "run.json", {"name": run.name, "kind": run.kind, "key": keys[run.name],
                                                 "tags": run.tags, "config": {}})
        write_result(dirs[run.name], run.kind, {"top1": value}, {"seed": 0}, seed=0, started=time.time())

    # the logistic-regression floor: the same config, so the same run, at mini and at mini-gpu
    finish("mini", "pixels-logistic", 79.4)
    assert set(collect(tmp_path).scale) == {"mini"}  # mini-gpu ran nothing: its tables are not filled
    finish("mini-gpu", "finetune-random-init", 77.3)
    rows = collect(tmp_path)
    floor = rows[rows.method == "pixels-logistic"]
    assert set(floor.scale) == {"mini", "mini-gpu"} and set(floor.value) == {79.4} and floor.run_key.nunique() == 1


def test_a_gpu_lease_brings_back_the_records_of_its_finished_runs(tmp_path, planned_run) -> None:
    """scripts/gpu_miniature.py --parts records: what scripts/gpu_lease.sh packs into records.tgz."""
    spec = importlib.util.spec_from_file_location("gpu_miniature", REPO / "scripts" / "gpu_miniature.py")
    gpu_miniature = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_miniature)
    runs_dir, out = tmp_path / "runs", tmp_path / "lease"
    run_dir = planned_run(runs_dir, "finetune-splitmask-smoke", {"top1": 41.0})

    assert gpu_miniature.main([str(out), "--parts", "records", "--runs-dir", str(runs_dir)]) == 0
    record = out / RECORDS / run_dir.relative_to(runs_dir)
    assert sorted(p.name for p in record.iterdir()) == ["result.json", "run.json"]  # no weights
    assert json.loads((out / "records.json").read_text())["saved"] == 1
