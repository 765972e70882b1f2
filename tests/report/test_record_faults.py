"""Faults around the report's records: two reports at once, a damaged record, Ctrl-C.
Each is the real fault in a real process, and each leaves every earlier file as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark import REPO
from benchmark.experiments.plan import locate, order_runs
from benchmark.experiments.registry import plan_runs
from benchmark.report.build import main
from benchmark.report.records import RECORDS
from benchmark.utils.io import write_json
from benchmark.utils.results import write_result

RUNS = {"finetune-splitmask-smoke": {"top1": 41.0}, "finetune-random-init-smoke": {"top1": 11.0}}


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/ with two finished smoke fine-tunings, and report/ built from them (records and all)."""
    root = tmp_path_factory.mktemp("reported")
    runs = order_runs(plan_runs("smoke", "smoke"))
    keys, dirs = locate(runs, root / "runs")
    for run in runs:
        if run.name in RUNS:
            write_json(dirs[run.name] / "run.json", {"name": run.name, "kind": run.kind, "key": keys[run.name],
                                                     "tags": run.tags, "config": {}})
            write_result(dirs[run.name], run.kind, RUNS[run.name], {"seed": 0}, seed=0, started=time.time())
    assert main(["--runs-dir", str(root / "runs"), "--report-dir", str(root / "report")]) == 0
    return root


@pytest.fixture
def copy(reported: Path, tmp_path: Path) -> tuple[Path, Path]:
    """This test's own copy of the runs and the report: (runs, report)."""
    shutil.copytree(reported, tmp_path, dirs_exist_ok=True)
    return tmp_path / "runs", tmp_path / "report"


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def report(*args: str, hook: str = "") -> subprocess.Popen:
    """``python -m benchmark.report ARGS`` in a process of its own, after ``hook`` (Python code)."""
    code = f"import sys\n{hook}\nfrom benchmark.report.build import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("[report]")]


# Pauses the report just before it removes a record to swap in the copy it staged beside it
# (records/<kind>/<name>-<key>.new), until the file "go" appears: the moment the race hit.
PAUSE = """
import shutil, time
from pathlib import Path
real, flags = shutil.rmtree, Path({flags!r})
def rmtree(path, *args, **kwargs):
    if Path(path).parent.parent.name == "records" and not str(path).endswith(".new") and not (flags / "paused").exists():
        (flags / "paused").touch()
        deadline = time.time() + 300
        while not (flags / "go").exists() and time.time() < deadline:
            time.sleep(0.05)
    return real(path, *args, **kwargs)
shutil.rmtree = rmtree
"""


def test_a_second_report_while_one_records_is_refused_and_no_record_is_lost(copy, tmp_path) -> None:
    runs, out = copy
    before = files(out / RECORDS)
    flags = tmp_path / "flags"
    flags.mkdir()
    common = ["--runs-dir", str(runs), "--report-dir", str(out)]
    first = report(*common, hook=PAUSE.format(flags=str(flags)))
    deadline = time.time() + 300
    while not (flags / "paused").exists():
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.1)
    during = files(out)
    second = subprocess.run([sys.executable, "-m", "benchmark.report", *common], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    untouched = {name: data for name, data in files(out).items() if name in during} == during
    (flags / "go").touch()
    first_out, first_err = first.communicate(timeout=300)

    assert files(out / RECORDS) == before  # every record there, byte for byte
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second.stderr
    lines = errors(second.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: this report directory is in use by process "
                                                   f"{first.pid} on "), second.stderr
    assert lines[0].endswith("wait for it to finish (or pass --wait), or use another directory")
    assert untouched and "Traceback" not in second.stderr


@pytest.mark.parametrize("damage", ["deleted", "truncated", "metric as a string", "run.json truncated"])
def test_a_damaged_record_stops_the_report_in_one_line_naming_it(damage, copy, capsys) -> None:
    _, out = copy
    (record,) = (out / RECORDS).glob("finetune/finetune-splitmask-smoke-*")
    result = record / "result.json"
    if damage == "deleted":
        result.unlink()
    elif damage == "truncated":
        result.write_bytes(result.read_bytes()[:40])
    elif damage == "metric as a string":
        write_json(result, {**json.loads(result.read_text()), "metrics": {"top1": "41.0"}})
    else:
        (record / "run.json").write_bytes((record / "run.json").read_bytes()[:20])
    before = files(out)
    capsys.readouterr()
    # no runs directory: the report builds from its records alone, as in a fresh clone
    assert main(["--runs-dir", str(out / "no-runs"), "--report-dir", str(out)]) == 2
    lines = errors(capsys.readouterr().err)
    broken = record / ("run.json" if damage == "run.json truncated" else "result.json")
    assert len(lines) == 1 and lines[0].startswith(f"error: damaged record: {broken}: "), lines
    why = {"deleted": "cannot read the result", "truncated": "not valid JSON",
           "metric as a string": "metric 'top1' is not a number", "run.json truncated": "not a readable run.json"}[damage]
    assert why in lines[0] and lines[0].endswith("the report was left as it is")
    assert files(out) == before


# Sends this process a real SIGINT (Ctrl-C) once the report has copied the first file of a record it
# replaces into the copy beside it.
CTRL_C = """
import os, shutil, signal
from pathlib import Path
real = shutil.copyfile
def copyfile(src, dst, *args, **kwargs):
    done = real(src, dst, *args, **kwargs)
    if Path(dst).parent.name.endswith(".new"):
        os.kill(os.getpid(), signal.SIGINT)
    return done
shutil.copyfile = copyfile
"""


def test_ctrl_c_while_recording_is_one_line_and_the_old_record_stays(copy) -> None:
    runs, out = copy
    (run_dir,) = runs.glob("finetune/finetune-splitmask-smoke-*")
    write_result(run_dir, "finetune", {"top1": 43.0}, {"seed": 0}, seed=0, started=time.time())  # run again
    before = files(out)
    stopped = report("--runs-dir", str(runs), "--report-dir", str(out), hook=CTRL_C)
    _, err = stopped.communicate(timeout=300)
    assert stopped.returncode == 130, err
    lines = errors(err)
    assert lines == [f"interrupted by Ctrl-C: every file in {out} is whole, each of this rebuild or the one before; "
                     "run the same command again"], err
    assert files(out) == before  # the old record (41.0) whole, no copy left beside it, no lock file


def test_the_drivers_rebuild_waits_for_a_report_in_progress(copy, capsys) -> None:
    """The driver's end-of-plan rebuild takes the same lock, and waits for it: another process holds it."""
    from benchmark.report.build import rebuild

    runs, out = copy
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from benchmark.utils.lock import exclusive\n"
                               f"with exclusive({str(out)!r}, 'report directory'):\n"
                               "    print('held', flush=True); time.sleep(3)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    before, started = files(out), time.time()
    rebuild(runs, out, wait=True)
    assert time.time() - started >= 1 and holder.wait(timeout=60) == 0
    assert f"[lock] {out}: in use by process {holder.pid} on " in capsys.readouterr().err
    assert files(out / RECORDS) == {k.removeprefix(f"{RECORDS}/"): v for k, v in before.items()
                                    if k.startswith(f"{RECORDS}/")}
    assert not os.path.exists(out / ".lock")
