"""The mini scale: the paper's questions on Fashion-MNIST as ordinary comparisons of the registry,
the val-split choice, the floors and the ceiling, the quick plan end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import REPO
from benchmark.driver.time_left import TimeLeft
from benchmark.errors import ConfigError
from benchmark.experiments.datasets import TRAIN_IMAGES, data
from benchmark.experiments.mini import CORE, FRACTIONS, SEEDS
from benchmark.experiments.registry import SUBSETS, plan_runs
from benchmark.experiments.scales import MINI, MINI_GPU, MINI_GPU_QUICK, MINI_QUICK, MINI_SCALES, SCALE_SPECS, SMALL
from benchmark.report.build import MISSING, build_report, expected_rows
from benchmark.stages.select import choose
from benchmark.training.config import apply_choice

INITS = {"random-init", "supervised", "splitmask", "beit", "dino"}


def _finetunes(scale: str, artifact: str) -> list:
    return [r for r in plan_runs(artifact, scale) if r.kind == "finetune" and artifact in r.tags["artifacts"]]


@pytest.mark.parametrize("scale", ["mini", "mini-quick", "mini-gpu", "mini-gpu-quick"])
def test_every_initialisation_gets_the_same_split_and_fine_tuning_settings(scale: str) -> None:
    """Random init, supervised and every self-supervised method: the same data, labels fraction,
    test split and recipe (the learning rate chosen on val, by the shared sweep or the
    initialisation's own); only the checkpoint, the seed and which choice it takes differ."""
    runs = [r for r in _finetunes(scale, "mini_table6") + _finetunes(scale, "mini_fig2")
            if r.tags["downstream"] == "fashion-mnist-1k-finetune"]
    assert {r.tags["method"] for r in runs} == INITS
    recipes = {json.dumps({k: v for k, v in r.config.items() if k not in ("checkpoint", "seed", "hparams_from")},
                          sort_keys=True) for r in runs}
    assert len(recipes) == 1
    assert len({r.config["hparams_from"]["ref"] for r in runs}) == 1 + len(SCALE_SPECS[scale].sweep_by_init)
    recipe = json.loads(recipes.pop())
    assert recipe["eval_split"] == "test" and "blr" not in recipe
    assert all(r.config["hparams_from"]["ref"].startswith("select-") for r in runs)
    assert recipe["dataset"] == "fashion-mnist" and recipe["data_root"] == {"data": "fashion-mnist", "path": ""}
    assert recipe["train_fraction"] * 50_000 == 1_000  # 100 labels per class
    random_init = [r for r in runs if r.tags["method"] == "random-init"]
    assert random_init and all(r.config["checkpoint"] is None for r in random_init)
    seeds = {r.config["seed"] for r in runs}
    assert len(seeds) == len(SCALE_SPECS[scale].seeds)


def test_the_gpu_scales_rehearsal_plans_every_run_of_the_gpu_scale_with_its_settings() -> None:
    """mini-gpu-quick, the GPU plan checked on a CPU, plans the same runs as mini-gpu (their steps,
    the select runs' scale and the grids' lengths aside) with its settings (images in memory, each seed's
    pre-training, the val curves, the ceiling's own rate), a few steps of each."""
    changed = {k for k in vars(MINI_GPU) if getattr(MINI_GPU, k) != getattr(MINI_GPU_QUICK, k)}
    assert changed <= {"name", "steps_per_budget_epoch", "pretrain", "finetune_len", "finetune_by_downstream", "probe",
                       "sweep", "sweep_by_init", "detect", "segment", "scenes"}
    assert {k for k in MINI_GPU.pretrain if MINI_GPU.pretrain[k] != MINI_GPU_QUICK.pretrain[k]} <= {
        "checkpoint_every", "log_every", "monitor_every", "monitor_bank", "monitor_queries"}
    ceiling = "fashion-mnist-all-finetune"
    assert MINI_GPU_QUICK.finetune_by_downstream[ceiling]["blr"] == MINI_GPU.finetune_by_downstream[ceiling]["blr"]

    def names(scale: str) -> set[tuple[str, str]]:
        """The plan's runs, their steps, seeds and sweep values (its grids are shorter) read alike."""
        def alike(name: str) -> str:
            return re.sub(r"-blr[\d.e-]+$", "-blrX", re.sub(r"-s\d+(?=-|$)", "-sN", name.replace(scale, "SCALE")))
        return {(r.kind, alike(r.name)) for r in plan_runs("mini-all", scale)}

    assert names("mini-gpu-quick") == names("mini-gpu")
    quick = [r for r in plan_runs("mini-all", "mini-gpu-quick") if r.kind in ("pretrain", "finetune")]
    assert all(r.config["images_on_device"] for r in quick)
    assert {r.name for r in quick if r.kind == "pretrain" and r.name.endswith(("-p1", "-p2"))}  # each seed pre-trains
    assert all(r.config["steps"] <= 6 for r in quick if r.kind == "pretrain")


def test_the_mini_scale_changes_sizes_and_lengths_only() -> None:
    """The miniature is the registry's comparisons at a scale: the paper's mini_* artifacts plan
    through the same code as the paper's (one planner), and mini-quick differs from mini in
    lengths, seeds, grid sizes and its scene counts only (and names no GPU scale)."""
    quick = {k for k in vars(MINI) if getattr(MINI, k) != getattr(MINI_QUICK, k)}
    assert quick <= {"name", "steps_per_budget_epoch", "pretrain", "finetune_len", "finetune_by_downstream", "probe", "seeds",
                     "sweep", "sweep_by_init", "detect", "segment", "scenes", "on_gpu"}
    assert MINI.archs == {"s": "vit-mini", "b": "vit-mini"} and SMALL.archs["s"] == "vit-s16"
    pretrain = {r.name: r for r in plan_runs("mini-all", "mini") if r.kind == "pretrain" and "fashion" in r.name}
    steps = {r.config["steps"] for r in pretrain.values()}
    fractions = {r.config["fraction"] for r in pretrain.values()}
    assert len(steps) == 1 and fractions == set(FRACTIONS)  # constant iterations across subset sizes (and image types)
    scenes = {n for n, r in pretrain.items() if r.tags["pretrain_data"] == "fashion-mnist-scenes"}
    assert scenes and len(scenes) < len(pretrain)
    for run in pretrain.values():  # pre-training reads the train split only (the format's), with its monitor
        if run.name in scenes:  # the train scenes, whose items come from the train split only (test_scenes.py)
            assert "dataset" not in run.config and run.config["data_root"] == {"ref": "scenes-fashion-mnist",
                                                                                "file": "unlabelled/train"}
        else:
            assert run.config["dataset"] == "fashion-mnist" and run.config["data_root"] == {"data": "fashion-mnist", "path": ""}
        assert run.config["monitor_every"] > 0 and run.config["monitor_dataset"] == "fashion-mnist"
        method_args = run.config["method_args"]
        assert method_args.get("tokenizer", "kmeans") == "kmeans" and "tokenizer_weights" not in method_args


@pytest.mark.parametrize("scale", ["mini", "mini-quick", "mini-gpu"])
def test_each_pre_training_takes_the_shared_settings_and_only_its_methods_delta(scale: str) -> None:
    """A method's own setting (BYOL's rate, supervised pre-training's crops) reaches that method's
    pre-trainings at every fraction and image type, and no other method's."""
    spec = SCALE_SPECS[scale]
    pretrain = [r for r in plan_runs("mini-all", scale) if r.kind == "pretrain"]
    assert {r.tags["method"] for r in pretrain} >= {"byol", "supervised", "splitmask", "dino"}
    for run in pretrain:
        delta = spec.pretrain_by_method.get(run.tags["method"], {})
        for key in ("blr", "crop_scale_min"):
            assert run.config[key] == delta.get(key, spec.pretrain[key]), (run.name, key)
    byol = [r for r in pretrain if r.tags["method"] == "byol"]
    own = spec.pretrain_by_method["byol"]["blr"]
    assert len(byol) == len(FRACTIONS) and {r.config["blr"] for r in byol} == {own} != {spec.pretrain["blr"]}


def test_every_evaluation_of_the_miniature_sees_the_whole_item_as_the_floors_do() -> None:
    """Fashion-MNIST's items fill their 28x28 frame and the pixel floors see every pixel; timm's
    ImageNet centre crop (0.875 of the side) cut their edges off and cost the fine-tunings 2-5
    points on val (docs/mini.md). Every fine-tuning, probe and monitor of the mini keeps the
    whole image."""
    from PIL import Image

    from benchmark.data.augment import EVAL_CROP, eval_transform

    framed = np.zeros((28, 28), np.uint8)
    framed[:, 0] = 255  # a bright left edge, as a trouser leg at the frame's border
    for crop, edge_kept in ((1.0, True), (EVAL_CROP, False)):
        image = eval_transform(32, crop)(Image.fromarray(framed).convert("RGB"))[0]
        assert bool(image[:, 0].mean() > image.min() + 1) == edge_kept, crop
    crops = {(run.kind, run.config.get("eval_crop", run.config.get("monitor_crop")))
             for run in plan_runs("mini-all", "mini") if run.kind in ("finetune", "probe")
             or run.config.get("monitor_every")}
    assert crops == {("finetune", 1.0), ("probe", 1.0), ("pretrain", 1.0)}


@pytest.mark.parametrize("scale", ["smoke", "mini", "mini-quick", "mini-gpu", "small", "paper"])
def test_every_planned_training_warms_up_for_less_than_its_length(scale: str) -> None:
    """A warm-up as long as the run never lets the learning rate reach its peak (the all-labels
    ceiling once warmed up for 3 epochs of its 1)."""
    from dataclasses import fields

    from benchmark.stages.finetune import FinetuneConfig
    from benchmark.stages.probe import ProbeConfig

    defaults = {kind: {f.name: f.default for f in fields(cls)} for kind, cls in (("finetune", FinetuneConfig),
                                                                              ("probe", ProbeConfig))}
    subset = "mini-all" if scale.startswith("mini") else "smoke" if scale == "smoke" else "all"
    for run in plan_runs(subset, scale):
        if run.kind in defaults:
            config = {**defaults[run.kind], **run.config}
            assert config["warmup_epochs"] < config["epochs"], (run.name, config["warmup_epochs"], config["epochs"])


def test_every_table_has_its_floors_and_the_ceiling_is_in_table6() -> None:
    for artifact in ("mini_table1", "mini_table6", "mini_fig2", "mini_table8"):
        runs = [r for r in plan_runs(artifact, "mini") if artifact in r.tags["artifacts"]]
        floors = [r for r in runs if r.kind == "pixels"]
        assert {r.config["classifier"] for r in floors} == {"logistic", "knn"}, artifact
        assert all(r.config["train_fraction"] * 50_000 == 1_000 and r.config["eval_split"] == "test" for r in floors)
        assert {r.config["seed"] for r in floors} == set(MINI.seeds)  # the same label draws as the fine-tunings
    ceiling = [r for r in plan_runs("mini_table6", "mini") if r.tags["method"] == "supervised-all-labels"]
    assert ceiling and all(r.config.get("train_fraction", 1.0) == 1.0 and r.config["checkpoint"] is None for r in ceiling)


def test_mini_seeds_is_table6_at_three_seeds_sharing_seed_0_and_the_pre_trainings() -> None:
    """The three-seed Table 6 adds seeds 1 and 2 of every fine-tuning, floor and the ceiling; its
    seed-0 runs and its pre-trainings are the default plan's very runs (same names, same configs)."""
    default = {r.name: r for r in plan_runs("mini", "mini")}
    seeds = [r for r in plan_runs("mini_seeds", "mini") if "mini_seeds" in r.tags["artifacts"] and r.kind != "pretrain"]
    table6 = [r for r in plan_runs("mini_table6", "mini") if "mini_table6" in r.tags["artifacts"] and r.kind != "pretrain"]
    assert sorted(r.name for r in seeds) == sorted(f"{r.name[:-1]}{s}" for r in table6 for s in SEEDS)
    for run in seeds:
        twin = default[f"{run.name[:-1]}0"]
        assert {**run.config, "seed": 0} == twin.config and run.config["seed"] == int(run.name[-1])
    new = [r for r in plan_runs("mini_seeds", "mini") if r.name not in default]
    assert new and {r.kind for r in new} == {"finetune", "pixels"}  # no pre-training of its own
    assert "mini_seeds" in SUBSETS["mini-all"] and "mini_seeds" not in SUBSETS["mini"]


def test_at_mini_gpu_each_seed_of_table6_fine_tunes_a_pre_training_of_its_own_seed() -> None:
    """The GPU miniature's Table 6 varies the pre-training seed with the fine-tuning seed; seed 0's
    pre-trainings are the default plan's, and the CPU miniature keeps sharing them."""
    runs = {r.name: r for r in plan_runs("mini_seeds", "mini-gpu")}
    pretrain = [r for r in runs.values() if r.kind == "pretrain"]
    assert sorted({r.config["seed"] for r in pretrain}) == list(SEEDS)
    assert len(pretrain) == len(SEEDS) * 4  # splitmask, beit, dino, supervised
    default = {r.name for r in plan_runs("mini", "mini-gpu")}
    assert {r.name for r in pretrain if r.config["seed"] == 0} <= default
    assert all(r.name.endswith(f"-p{r.config['seed']}") for r in pretrain if r.config["seed"])
    for run in runs.values():
        if run.kind == "finetune" and run.config["checkpoint"] is not None and "sweep" not in run.name:
            source = runs[run.config["checkpoint"]["ref"]]
            assert source.config["seed"] == run.config["seed"], run.name
    assert not [r for r in plan_runs("mini_seeds", "mini") if r.kind == "pretrain" and r.config["seed"]]


def test_the_learning_rate_is_swept_on_val_only_shared_or_per_initialisation() -> None:
    """Random init's sweep chooses for every initialisation without a grid of its own; supervised
    pre-training is swept alone on its own grid, and only its fine-tunings take that choice."""
    runs = {r.name: r for r in plan_runs("mini", "mini")}
    selects = {r.tags["swept_inits"]: r for r in runs.values() if r.kind == "select"}
    assert set(selects) == {", ".join(MINI.sweep_inits), *MINI.sweep_by_init}
    grids = {", ".join(MINI.sweep_inits): MINI.sweep, **MINI.sweep_by_init}
    for inits, select in selects.items():
        sweep = [runs[c["result"]["ref"]] for c in select.config["candidates"]]
        assert {r.tags["method"] for r in sweep} == set(inits.split(", "))
        assert len(sweep) == len(grids[inits]["blr"]) * len(inits.split(", "))
        assert {r.config["eval_split"] for r in sweep} == {"val"} and {r.config["blr"] for r in sweep} == set(grids[inits]["blr"])
    swept = {c["result"]["ref"] for select in selects.values() for c in select.config["candidates"]}
    assert swept == {r.name for r in runs.values() if "hparams" in r.tags}
    for run in runs.values():
        if run.kind == "finetune" and "hparams" not in run.tags:
            own = run.tags["method"] if run.tags["method"] in MINI.sweep_by_init else ", ".join(MINI.sweep_inits)
            assert run.config["hparams_from"]["ref"] == selects[own].name, run.name
    assert {r.tags["method"] for r in runs.values() if r.config.get("hparams_from", {}).get("ref") ==
            selects["supervised"].name} == {"supervised"}


@pytest.mark.parametrize("scale", MINI_SCALES)
def test_a_downstreams_own_settings_reach_its_runs_and_no_choice_overrides_them(scale: str) -> None:
    """``finetune_by_downstream`` sets its fields in every fine-tuning of that downstream, and a
    run that also takes a sweep's choice (applied when it starts) takes none of those fields."""
    spec = SCALE_SPECS[scale]
    for run in plan_runs("mini-all", scale):
        own = spec.finetune_by_downstream.get(run.tags.get("downstream", ""), {})
        if run.kind != "finetune" or not own:
            continue
        assert {k: run.config[k] for k in own} == own, run.name
        if "hparams_from" in run.config:
            grid = spec.sweep_by_init.get(run.tags["method"], spec.sweep)
            assert not set(own) & set(grid), f"{run.name}: its own {sorted(own)} would be overridden by the sweep's choice"


def test_the_paper_artifacts_without_a_scale_run_their_miniature(capsys) -> None:
    from benchmark.driver.run import main

    assert main(["--subset", "fig2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "the paper's fig2 needs ImageNet under --data-root and --scale small or paper" in out
    assert "--subset mini_fig2 --scale mini" in out


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
    side_by_side = TimeLeft(runs[2:], done=[(runs[0], 30.0), (runs[1], 10.0)], jobs=2)
    assert side_by_side.seconds() == pytest.approx(30.0)  # --jobs 2: two at a time, no sooner than the longest run
    # Durations measured elsewhere (the report's records) price the runs, which are still to run here.
    measured = TimeLeft(runs[2:], measured=[(runs[0], 30.0), (runs[1], 10.0), (runs[2], 50.0)])
    assert measured.seconds() == pytest.approx(40.0 + 30.0)  # dino pretrain: (30 + 50) / 2; finetune: overall mean


def test_time_left_side_by_side_is_no_shorter_than_the_costliest_chain_of_runs() -> None:
    """With many slots, a plan whose one long run (and the run that needs it) outlasts the rest
    shared among the slots takes that chain's time, not the sum divided by the slots."""
    from benchmark.experiments.model import Run, ref

    pre = Run("p", "pretrain", {}, tags={"method": "dino"})
    long_pre = Run("q", "pretrain", {}, tags={"method": "mae"})
    tune = Run("f", "finetune", {"checkpoint": ref("q", "encoder.safetensors")}, tags={"method": "mae"})
    done = [(pre, 10.0)]
    measured = [(long_pre, 300.0), (tune, 60.0)]
    left = TimeLeft([long_pre, tune], done=done, measured=measured, jobs=8)
    assert left.seconds() == pytest.approx(300.0 + 60.0)  # the chain q -> f, not (300 + 60) / 8
    left.started(long_pre, at=1000.0)
    assert left.seconds(now=1100.0) == pytest.approx(200.0 + 60.0)  # what is left of a run under way
    assert left.seconds(now=2000.0) == pytest.approx(60.0)  # one that overran its price: none left of it
    quick = [Run(f"d{i}", "pretrain", {}, tags={"method": "dino"}) for i in range(16)]
    many = TimeLeft([*quick, long_pre], done=done, measured=[(long_pre, 40.0)], jobs=2)
    assert many.seconds() == pytest.approx((16 * 10.0 + 40.0) / 2)  # here the shared sum is the longer


def test_time_left_prices_a_run_by_its_flops_at_the_rate_runs_were_seen_to_go() -> None:
    """With the dry run's FLOPs, a fine-tuning is priced at its kind's seconds per FLOP (all training
    runs' before one of its kind finished), not as long as a pre-training; unknown FLOPs: by kind."""
    from benchmark.experiments.model import Run

    pre, long_pre, tune, short_tune = (Run("p", "pretrain", {}), Run("q", "pretrain", {}), Run("f", "finetune", {}),
                                       Run("g", "finetune", {}))
    unknown = Run("u", "finetune", {})
    flops = {"p": 4e12, "q": 8e12, "f": 1e12, "g": 5e11, "u": None}
    left = TimeLeft([pre, long_pre, tune, short_tune, unknown], flops=lambda run: flops[run.name])
    left.finished(pre, 400.0)  # 1e-10 s per FLOP
    assert left.seconds() == pytest.approx(800.0 + 100.0 + 50.0 + 400.0)  # "u": the training runs' mean duration
    left.finished(tune, 50.0)  # fine-tunings go at 5e-11 s per FLOP
    assert left.seconds() == pytest.approx(800.0 + 25.0 + 50.0)


def test_findings_flag_a_dino_run_whose_head_collapsed_to_uniform(tmp_path: Path) -> None:
    import math

    from benchmark.report.findings import _pretraining

    def pretraining(name: str, method: str, last: dict) -> None:
        run = tmp_path / "pretrain" / f"pretrain-{method}-fashion-mnist-100pct-vit-mini-s150-{name}"
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
    (tmp_path / "pretrain" / "pretrain-dino-fashion-mnist-100pct-vit-mini-s150-a" / "log.jsonl").write_text(
        json.dumps({"step": 150, "loss": 3.0, "teacher_entropy": 2.0}) + "\n")
    assert not any("collapsed" in line for line in _pretraining(tmp_path, {"mini"}))
    assert _pretraining(tmp_path, {"mini-quick"}) == []  # another scale's runs are not this section's
    pretraining("c", "mae", {"loss": 0.4})  # a further pre-training seed (Scale.seeded_pretraining)
    seeded = tmp_path / "pretrain" / "pretrain-mae-fashion-mnist-100pct-vit-mini-s150-c" / "run.json"
    seeded.write_text(json.dumps({**json.loads(seeded.read_text()), "config": {"method": "mae", "seed": 1}}))
    assert [line for line in _pretraining(tmp_path, {"mini"}) if "- mae" in line] == [
        "  - mae: loss 4.000 at step 25 -> 0.500 at step 150.", "  - mae (seed 1): loss 4.000 at step 25 -> 0.400 at step 150."]


@pytest.mark.slow
def test_quick_mini_run_writes_its_tables_plots_and_findings(tmp_path: Path) -> None:
    """The reduced mini plan (a few steps, one seed) end to end: every table row has a result."""
    runs_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "benchmark.run", "--subset", "mini", "--scale", "mini-quick", "--runs-dir", str(runs_dir),
           "--no-report", "--jobs", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "left]" in proc.stdout  # progress with an estimate of the time left

    for method, grid in (("splitmask", MINI_QUICK.sweep), ("supervised", MINI_QUICK.sweep_by_init["supervised"])):
        select = "select-fashion-mnist-1k-finetune-" + ("supervised-" if method == "supervised" else "")
        choice = json.loads(next(runs_dir.glob(f"select/{select}mini-quick-*/choice.json")).read_text())
        assert choice["chosen"]["blr"] in grid["blr"]
        config = json.loads(next(runs_dir.glob(f"finetune/fashion-mnist-1k-finetune-{method}-fashion-mnist-100pct-*/"
                                               "config.json")).read_text())
        assert config["blr"] == choice["chosen"]["blr"] and config["eval_split"] == "test"
    monitored = [json.loads(line) for line in next(runs_dir.glob("pretrain/pretrain-dino-fashion-mnist-100pct-*/log.jsonl"))
                 .read_text().splitlines()]
    assert [r["step"] for r in monitored if "knn_top1" in r] == [0, 3, 6]

    tables, plots = tmp_path / "tables", tmp_path / "plots"
    build_report(runs_dir, tables, plots, tmp_path / "REPORT.md")
    for name in SUBSETS["mini"]:
        table = pd.read_csv(tables / f"{name}.csv", dtype=str, keep_default_na=False)
        assert len(table) and (table.ours_mean != MISSING).all(), name
        assert (plots / f"{name}.png").stat().st_size > 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "## The paper in miniature: what the runs found" in report and "random init" in report
    assert "floors on the same labels: pixels-logistic" in report and "ceiling, supervised training" in report
    assert "for random-init, shared by the initialisations without a grid of their own" in report
    assert "for supervised, its own" in report
    # --no-report left the report to this test; the driver's time record (driver.jsonl) is in it all the same
    assert "## Where the time went" in report and "`--subset mini --scale mini-quick`" in report


def test_a_row_of_the_mini_tables_stands_for_all_its_seeds() -> None:
    rows = expected_rows("mini_table6", ["mini"])
    # one row per initialisation (its seeds' mean), 2 floors, 1 ceiling
    assert len(rows) == len(INITS) + 3 and not rows.duplicated().any()


# --------------------------------------------------------------------------- Table 1 in miniature: items vs scenes


def _pretrainings(scale: str, data: str) -> dict[str, object]:
    """The pre-trainings of mini_table1 on ``data`` (a pretrain_data tag) by method."""
    return {r.tags["method"]: r for r in plan_runs("mini_table1", scale)
            if r.kind == "pretrain" and r.tags["pretrain_data"] == data}


@pytest.mark.parametrize("scale", ["mini", "mini-quick", "mini-gpu"])
def test_table1_pre_trains_on_the_scenes_exactly_as_on_the_items(scale: str) -> None:
    """The scenes pre-trainings read the scenes data run's train folder (a plain folder, after the
    data run in the plan's order) and are the items' pre-trainings, those of the default plan,
    in every other setting: steps, batch, method_args, lr, crops, monitor."""
    from benchmark.experiments.plan import order_runs

    items, scenes = _pretrainings(scale, "fashion-mnist-100%"), _pretrainings(scale, "fashion-mnist-scenes")
    assert set(items) == set(scenes) == set(CORE)
    default = {r.name: r for r in plan_runs("mini", scale)}
    order = [r.name for r in order_runs(plan_runs("mini_table1", scale))]
    for method in CORE:
        item, scene = items[method].config, scenes[method].config
        assert default[items[method].name].config == item  # the items' runs are the default plan's very runs
        assert scene["data_root"] == {"ref": "scenes-fashion-mnist", "file": "unlabelled/train"}
        assert scene.get("dataset", "folder") == "folder" and item["dataset"] == "fashion-mnist"
        differ = {k for k in item.keys() | scene.keys() if item.get(k) != scene.get(k)}
        assert differ == {"data_root", "dataset"}, differ
        assert scenes[method].refs() == ["scenes-fashion-mnist"]
        assert order.index("scenes-fashion-mnist") < order.index(scenes[method].name)
        assert scenes[method].name == items[method].name.replace("fashion-mnist-100pct", "fashion-mnist-scenes")


@pytest.mark.parametrize("scale", ["mini", "mini-quick", "mini-gpu"])
def test_the_scenes_data_run_draws_its_items_from_fashion_mnist(scale: str) -> None:
    runs = [r for r in plan_runs("mini_table1", scale) if r.kind == "data"]
    assert len(runs) == 1 and runs[0].name == "scenes-fashion-mnist"
    config = runs[0].config
    assert config["generator"] == "scenes" and config["data_root"] == data("fashion-mnist")
    assert (config["train_scenes"], config["val_scenes"]) == SCALE_SPECS[scale].scenes and config["size"] == 64
    assert config["train_scenes"] >= SCALE_SPECS[scale].pretrain_batch  # a pre-training refuses less than one batch
    assert TRAIN_IMAGES["fashion-mnist-scenes"] == SCALE_SPECS["mini"].scenes[0]  # the epochs tag counts the mini scale's


@pytest.mark.parametrize("scale", ["mini", "mini-quick", "mini-gpu"])
def test_table1_fine_tunes_every_initialisation_with_table6s_recipe(scale: str) -> None:
    """Items, scenes and random init: the Table 6 fine-tuning (same data, labels, split, val-chosen
    lr, seeds); only the checkpoint differs, and each checkpoint is a pre-training of the plan."""
    def recipe(run: object) -> str:
        return json.dumps({k: v for k, v in run.config.items() if k != "checkpoint"}, sort_keys=True)

    table1 = [r for r in _finetunes(scale, "mini_table1") if r.tags["downstream"] == "fashion-mnist-1k-finetune"]
    # (supervised pre-training, absent from Table 1, takes the lr chosen on its own grid)
    table6 = [r for r in _finetunes(scale, "mini_table6") if r.tags["downstream"] == "fashion-mnist-1k-finetune"
              and r.tags["method"] not in SCALE_SPECS[scale].sweep_by_init]
    assert {(r.tags["method"], r.tags["pretrain_data"]) for r in table1} == {
        *((m, d) for m in CORE for d in ("fashion-mnist-100%", "fashion-mnist-scenes")), ("random-init", "none")}
    assert len({recipe(r) for r in table1 + table6}) == len(SCALE_SPECS[scale].seeds)
    pretrain = {r.name for r in plan_runs("mini_table1", scale) if r.kind == "pretrain"}
    assert {r.config["checkpoint"]["ref"] for r in table1 if r.config["checkpoint"]} == pretrain


def test_the_default_plan_has_no_scenes_and_mini_all_plans_table1_once() -> None:
    for scale in ("mini", "mini-quick"):
        default = plan_runs("mini", scale)
        assert not any("scenes" in r.name or "scenes" in json.dumps(r.config) for r in default)
        assert "data" not in {r.kind for r in default}
    everything = plan_runs("mini-all", "mini")  # raises on a name planned twice with different configs
    assert [r.name for r in everything if "scenes" in r.name and r.kind == "data"] == ["scenes-fashion-mnist"]
    assert "mini_table1" in SUBSETS["mini-all"] and "mini_table1" not in SUBSETS["mini"]
    assert SUBSETS["mini_table1"] == ["mini_table1"]
    shared = {r.name: r for r in everything}["fashion-mnist-1k-finetune-random-init-vit-mini-s0"]
    assert shared.tags["artifact"] == "mini_table6" and "mini_table1" in shared.tags["artifacts"]


def test_the_driver_writes_the_scenes_where_the_scenes_pre_training_reads_them(tmp_path: Path, make_fashion_mnist) -> None:
    """The data run's Fashion-MNIST marker resolves to --data-root (as every kind's does), and the
    resolved scenes pre-training reads exactly the train scenes it wrote, as a plain folder."""
    from benchmark.driver.run import start_record
    from benchmark.experiments.plan import locate, order_runs
    from benchmark.stages.catalogue import run_kind
    from benchmark.stages.pretrain import PretrainConfig, _images
    from benchmark.training.config import config_from_dict

    fashion = make_fashion_mnist(tmp_path / "data" / "fashion-mnist", train=60, test=20)  # not the system copy
    runs = order_runs(plan_runs("mini_table1", "mini-quick"))
    keys, dirs = locate(runs, tmp_path / "runs")
    by_name = {r.name: r for r in runs}
    config, _ = start_record(by_name["scenes-fashion-mnist"], keys, dirs, str(tmp_path / "data"))
    assert config["data_root"] == str(fashion)
    run_kind("data").run(config, dirs["scenes-fashion-mnist"])
    pre = _pretrainings("mini-quick", "fashion-mnist-scenes")["splitmask"]
    resolved, _ = start_record(by_name[pre.name], keys, dirs, str(tmp_path / "data"))
    assert resolved["data_root"] == str(dirs["scenes-fashion-mnist"] / "unlabelled" / "train")
    images, _labels = _images(config_from_dict(PretrainConfig, resolved), needs_labels=False)
    assert len(images) == SCALE_SPECS["mini-quick"].scenes[0]


# --------------------------------------------------------------------------- the dense legs on the scenes


@pytest.mark.parametrize("scale", ["mini", "mini-quick", "mini-gpu"])
def test_the_dense_legs_run_on_the_scenes_from_the_plans_own_pre_trainings(scale: str) -> None:
    """Mask R-CNN and UperNet read the COCO and ADE20k folders of the scenes' data run; SplitMask and
    BEiT (its own artifact) come pre-trained on the scenes and on the items (Table 1's very runs),
    supervised on the items (Table 6's); random init, in both artifacts, trains twice as long, with
    the same options otherwise."""
    shared = {r.name: r for r in plan_runs("mini_table1", scale) + plan_runs("mini_table6", scale)}
    inits = {"mini_dense": {("splitmask", "fashion-mnist-scenes"), ("splitmask", "fashion-mnist-100%"),
                            ("supervised", "fashion-mnist-100%"), ("random-init", "none")},
             "mini_dense_beit": {("beit", "fashion-mnist-scenes"), ("beit", "fashion-mnist-100%"), ("random-init", "none")}}
    for artifact, its_inits in inits.items():
        runs = plan_runs(artifact, scale)
        dense = [r for r in runs if r.kind in ("detect", "segment")]
        # random init's runs, the longest, lead the plan (the driver starts runs of unknown cost in plan order)
        assert [r.tags["method"] for r in dense[:2]] == ["random-init", "random-init"]
        for kind, layout in (("detect", "coco"), ("segment", "ade20k")):
            of_kind = [r for r in dense if r.kind == kind]
            assert {(r.tags["method"], r.tags["pretrain_data"]) for r in of_kind} == its_inits
            assert all(r.config["data_root"] == {"ref": "scenes-fashion-mnist", "file": layout} for r in of_kind)
            options = {r.tags["method"] == "random-init": dict(r.config["cfg_options"]) for r in of_kind}
            # random init has no checkpoint to take its backbone from: the plan names the same one
            backbone = {"model.backbone.arch": "vit-mini", "model.backbone.img_size": 32}
            assert {k: options[True].pop(k) for k in backbone} == backbone
            longer = {k for k in options[True] if options[True][k] != options[False][k]}
            assert longer and all(options[True][k] == 2 * options[False][k] for k in longer), longer
        pretrain = [r for r in runs if r.kind == "pretrain"]
        assert len(pretrain) == len(its_inits) - 1 and all(r.config == shared[r.name].config for r in pretrain)
        assert [r.name for r in runs if r.kind == "data"] == ["scenes-fashion-mnist"]
    plan_runs("mini-all", scale)  # raises if a run is planned twice with different configs


def test_dense_finding_marks_what_random_init_matches_and_sets_scenes_against_items() -> None:
    from benchmark.report.findings import _dense

    rows = pd.DataFrame([{"artifact": a, "downstream": "fashion-mnist-scenes-maskrcnn", "metric": "bbox_mAP",
                          "method": m, "pretrain_data": d, "value": v, "run_key": f"{m}-{d}"}
                         for a, m, d, v in (("mini_dense", "splitmask", "fashion-mnist-scenes", 5.0),
                                            ("mini_dense", "splitmask", "fashion-mnist-100%", 4.0),
                                            ("mini_dense", "random-init", "none", 4.5),
                                            ("mini_dense_beit", "random-init", "none", 4.5),  # the same run, twice
                                            ("mini_dense_beit", "beit", "fashion-mnist-100%", 6.0))])
    lines = _dense(rows, None)
    assert ("splitmask on scenes 5.0, splitmask on items 4.0 *(not above random init)*, beit on items 6.0; "
            "random init 4.5.") in lines[1]
    assert "splitmask scenes 5.0 vs items 4.0 (+1.0)" in lines[2]


@pytest.mark.slow
def test_quick_dense_plan_detects_and_segments_the_scenes(tmp_path: Path) -> None:
    """The reduced dense plan end to end: scenes written, pre-trained on, and every detection and
    segmentation row of the table has a result, with its finding in REPORT.md; random init trains
    the encoder the checkpoints hold."""
    from mmengine.config import Config

    runs_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "benchmark.run", "--subset", "mini_dense", "--scale", "mini-quick", "--runs-dir",
           str(runs_dir), "--no-report", "--jobs", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tables = tmp_path / "tables"
    build_report(runs_dir, tables, tmp_path / "plots", tmp_path / "REPORT.md")
    table = pd.read_csv(tables / "mini_dense.csv", dtype=str, keep_default_na=False)
    assert set(table.metric) == {"bbox_mAP", "segm_mAP", "mIoU"} and len(table) == 12  # 4 inits x 3 metrics
    assert (table.ours_mean != MISSING).all()
    report = (tmp_path / "REPORT.md").read_text()
    assert "Detection and segmentation on the scenes" in report and "random init" in report
    dense = [*runs_dir.glob("detect/*"), *runs_dir.glob("segment/*")]
    for run_dir in dense:  # the MMEngine config each run trained with
        backbone = Config.fromfile(next(run_dir.glob("*_mini.py"))).model.backbone
        assert (backbone.arch, backbone.img_size) == ("vit-mini", 32), run_dir.name
    assert len(dense) == 8
