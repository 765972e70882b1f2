"""The mini scale: the paper's questions on real digits, the val-split choice, the quick plan end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import REPO
from benchmark.driver.run import TimeLeft
from benchmark.errors import ConfigError
from benchmark.experiments.mini import MINI_BLR_GRID, MINI_FRACTIONS, MINI_INITS
from benchmark.experiments.registry import plan_runs
from benchmark.report.build import MISSING, build_report, expected_rows
from benchmark.stages.select import apply_choice, choose


def _finetunes(scale: str, artifact: str) -> list:
    return [r for r in plan_runs(artifact, scale) if r.kind == "finetune" and artifact in r.tags["artifacts"]]


@pytest.mark.parametrize("scale", ["mini", "mini-quick"])
def test_every_initialisation_gets_the_same_split_and_fine_tuning_settings(scale: str) -> None:
    """Random init, supervised and every self-supervised method: the same data, labels fraction,
    test split and recipe (the learning rate from the same val choice); only the checkpoint and
    the seed differ."""
    runs = _finetunes(scale, "mini_table6") + _finetunes(scale, "mini_fig2")
    assert {r.tags["method"] for r in runs} == set(MINI_INITS)
    recipes = {json.dumps({k: v for k, v in r.config.items() if k not in ("checkpoint", "seed")}, sort_keys=True) for r in runs}
    assert len(recipes) == 1
    recipe = json.loads(recipes.pop())
    assert recipe["eval_split"] == "test" and recipe["hparams_from"]["ref"].startswith("select-") and "blr" not in recipe
    random_init = [r for r in runs if r.tags["method"] == "random-init"]
    assert random_init and all(r.config["checkpoint"] is None for r in random_init)
    seeds = {r.config["seed"] for r in runs}
    assert len(seeds) == (3 if scale == "mini" else 1)


def test_the_learning_rate_is_swept_on_val_only_and_pretraining_never_sees_val_or_test() -> None:
    runs = {r.name: r for r in plan_runs("mini", "mini")}
    sweep = [r for r in runs.values() if r.kind == "finetune" and "hparams" in r.tags]
    assert len(sweep) == len(MINI_BLR_GRID) * len(MINI_INITS)
    assert {r.config["eval_split"] for r in sweep} == {"val"} and {r.config["blr"] for r in sweep} == set(MINI_BLR_GRID)
    select = next(r for r in runs.values() if r.kind == "select")
    assert {c["result"]["ref"] for c in select.config["candidates"]} == {r.name for r in sweep}
    for run in runs.values():
        if run.kind == "pretrain" and run.tags.get("pretrain_data", "").startswith("digits"):
            assert run.config["data_root"] == {"ref": "digits", "file": "digits/train"}
    fig2 = {r.config["fraction"] for r in runs.values() if r.kind == "pretrain" and r.name.endswith("-mini")}
    pretrain_steps = {r.config["steps"] for r in runs.values() if r.kind == "pretrain" and r.name.endswith("-mini")}
    assert fig2 == set(MINI_FRACTIONS) and len(fig2) >= 2 and len(pretrain_steps) == 1  # constant iterations across subset sizes


def _result(path: Path, top1: float, split: str = "val") -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    from benchmark.utils.results import write_result

    write_result(path.parent, "finetune", {"top1": top1}, {"eval_split": split}, seed=0, started=0.0)
    return {"result": str(path)}


def test_choice_is_the_best_mean_over_initialisations_and_refuses_the_test_split(tmp_path: Path) -> None:
    candidates = [
        {**_result(tmp_path / "a" / "result.json", 60.0), "values": {"blr": 1e-3}},
        {**_result(tmp_path / "b" / "result.json", 90.0), "values": {"blr": 1e-2}},  # one init loves 1e-2 ...
        {**_result(tmp_path / "c" / "result.json", 70.0), "values": {"blr": 1e-3}},
        {**_result(tmp_path / "d" / "result.json", 30.0), "values": {"blr": 1e-2}},  # ... the other does not
    ]
    record = choose(candidates)
    assert record["chosen"] == {"blr": 1e-3}  # mean 65 beats mean 60
    assert [row["runs"] for row in record["scores"]] == [2, 2]
    on_test = [{**_result(tmp_path / "t" / "result.json", 99.0, split="test"), "values": {"blr": 1.0}}]
    with pytest.raises(ConfigError, match="chosen on 'val' only"):
        choose(candidates + on_test)


def test_a_fine_tuning_config_takes_the_chosen_values(tmp_path: Path) -> None:
    from benchmark.stages.finetune import FinetuneConfig

    choice = tmp_path / "choice.json"
    choice.write_text(json.dumps({"chosen": {"blr": 0.01}}))
    cfg = apply_choice(FinetuneConfig(data_root=".", blr=5e-4, hparams_from=str(choice)), choice)
    assert cfg.blr == 0.01
    choice.write_text(json.dumps({"chosen": {"lr_typo": 0.01}}))
    with pytest.raises(ConfigError, match="lr_typo"):
        apply_choice(FinetuneConfig(data_root="."), choice)


def test_digits_are_sklearn_s_images_in_stratified_disjoint_splits(tmp_path: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    from benchmark.data.digits import write_digits

    write_digits(tmp_path)
    digits = load_digits()
    seen: dict[str, set[int]] = {}
    for split in ("train", "val", "test"):
        files = sorted((tmp_path / "digits" / split).glob("*/*.png"))
        seen[split] = {int(f.stem) for f in files}
        counts = np.bincount([int(f.parent.name) for f in files], minlength=10)
        expected = np.bincount(digits.target) / len(digits.target) * len(files)
        assert np.abs(counts - expected).max() <= 1.5  # stratified: each class in its source proportion
        for f in files[::97]:  # the pixels and the label are the source's
            index = int(f.stem)
            assert int(f.parent.name) == digits.target[index]
            assert np.array_equal(np.asarray(Image.open(f)), np.rint(digits.images[index] * 255 / 16).astype(np.uint8))
    assert [len(seen[s]) for s in ("train", "val", "test")] == [1000, 297, 500]
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])


def test_time_left_follows_finished_runs_of_the_same_kind_and_method() -> None:
    from benchmark.experiments.model import Run

    runs = [Run(f"p{i}", "pretrain", {}, tags={"method": m}) for i, m in enumerate(["dino", "mae", "dino"])] + \
           [Run("f0", "finetune", {}, tags={"method": "mae"})]
    left = TimeLeft(runs)
    assert left.seconds() is None  # nothing to go on yet
    left.finished(runs[0], 30.0)
    assert left.seconds() == pytest.approx(30.0 + 30.0 + 30.0)  # mae pretrain: kind mean; finetune: overall mean
    left.finished(runs[1], 10.0)
    assert left.seconds() == pytest.approx(30.0 + 20.0)
    # A resumed plan: the runs an earlier invocation finished price the rest from the start.
    resumed = TimeLeft(runs[2:], done=[(runs[0], 30.0), (runs[1], 10.0)])
    assert resumed.seconds() == pytest.approx(30.0 + 20.0)


def test_findings_flag_a_dino_run_whose_head_collapsed_to_uniform(tmp_path: Path) -> None:
    import math

    from benchmark.report.findings import _pretraining

    def pretraining(name: str, method: str, last: dict) -> None:
        run = tmp_path / "pretrain" / f"pretrain-{method}-digits-100pct-mini-{name}"
        run.mkdir(parents=True)
        record = {"tags": {"scale": "mini"}, "config": {"method": method, "method_args": {"out_dim": 64}}}
        (run / "run.json").write_text(json.dumps(record))
        (run / "log.jsonl").write_text(json.dumps({"step": 25, "loss": 4.0}) + "\n" + json.dumps({"step": 150, **last}) + "\n")

    pretraining("a", "dino", {"loss": math.log(64), "teacher_entropy": math.log(64) - 1e-4})
    pretraining("b", "mae", {"loss": 0.5})
    lines = _pretraining(tmp_path, {"mini"})
    dino, mae = (next(line for line in lines if f"- {m}:" in line) for m in ("dino", "mae"))
    assert "collapsed" in dino and "ln 64 = 4.159" in dino
    assert "loss 4.000 at step 25 -> 0.500 at step 150" in mae and "collapsed" not in mae
    (tmp_path / "pretrain" / "pretrain-dino-digits-100pct-mini-a" / "log.jsonl").write_text(
        json.dumps({"step": 150, "loss": 3.0, "teacher_entropy": 2.0}) + "\n")
    assert not any("collapsed" in line for line in _pretraining(tmp_path, {"mini"}))
    assert _pretraining(tmp_path, {"mini-quick"}) == []  # another scale's runs are not this section's


@pytest.mark.slow
def test_quick_mini_run_writes_its_tables_plots_and_findings(tmp_path: Path) -> None:
    """The reduced mini plan (a few steps, one seed) end to end: every table row has a result."""
    runs_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "benchmark.run", "--subset", "mini", "--scale", "mini-quick", "--runs-dir", str(runs_dir),
           "--no-report"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "left]" in proc.stdout  # progress with an estimate of the time left

    choice = json.loads(next(runs_dir.glob("select/*/choice.json")).read_text())
    assert choice["chosen"]["blr"] in MINI_BLR_GRID
    config = json.loads(next(runs_dir.glob("finetune/finetune-digits-mae-100pct-*/config.json")).read_text())
    assert config["blr"] == choice["chosen"]["blr"] and config["eval_split"] == "test"

    tables, plots = tmp_path / "tables", tmp_path / "plots"
    build_report(runs_dir, tables, plots, tmp_path / "REPORT.md")
    for name in ("mini_hparams", "mini_table6", "mini_fig2", "mini_table8", "mini_dense"):
        table = pd.read_csv(tables / f"{name}.csv", dtype=str, keep_default_na=False)
        assert len(table) and (table.ours_mean != MISSING).all(), name
        assert (plots / f"{name}.png").stat().st_size > 0
    fig2 = pd.read_csv(tables / "mini_fig2.csv", dtype=str)
    assert set(fig2.pretrain_data) == {f"digits-{f * 100:g}%" for f in MINI_FRACTIONS}
    dense = pd.read_csv(tables / "mini_dense.csv", dtype=str)
    assert dense.downstream.str.startswith("synthetic-").all()
    report = (tmp_path / "REPORT.md").read_text()
    assert "## The paper in miniature: what the runs found" in report and "random init" in report


def test_a_row_of_the_mini_tables_stands_for_all_its_seeds() -> None:
    rows = expected_rows("mini_table6", ["mini"])
    assert len(rows) == len(MINI_INITS) and not rows.duplicated().any()  # 3 seeds each, one row each
