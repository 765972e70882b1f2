"""The experiment registry: every artifact of the paper, as data, at every scale."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from benchmark import REPO
from benchmark.data.sets import IMAGENET_TRAIN
from benchmark.experiments.datasets import DATASETS, data, find_data, missing_datasets, resolve_data
from benchmark.experiments.model import Artifact, Run
from benchmark.experiments.registry import ARTIFACTS, SUBSETS, plan_runs
from benchmark.methods.beit import BEIT_MASK_RATIO
from benchmark.stages.finetune import FinetuneConfig
from benchmark.stages.pretrain import PretrainConfig
from benchmark.stages.probe import ProbeConfig
from benchmark.training.config import config_from_dict

PAPER_ARTIFACTS = ["fig1", "table1", "fig2", "fig3", "tokenizers", "schedules", "table4", "table5", "table6",
                   "table7", "table8", "cars_overtraining"]
SCALES = ["smoke", "small", "paper"]
EVAL_KINDS = ("finetune", "probe", "detect", "segment")
# The smoke artifact's runs as planned before the paper's artifacts were added.
SMOKE_BEFORE = json.loads(r'''[{"config": {"generator": "synthetic", "scale": "smoke", "seed": 0}, "kind": "data", "name": "synthetic-smoke", "tags": {"artifact": "smoke", "scale": "smoke"}}, {"config": {"arch": "vit-smoke", "batch_size": 32, "blr": 0.004, "checkpoint_every": 100, "crop_scale_min": 0.3, "data_root": {"file": "classification/train", "ref": "synthetic-smoke"}, "drop_path": 0.0, "img_size": 64, "method": "splitmask", "method_args": {"contrastive_weight": 1.0, "decoder_depth": 2, "keep_ratio": 0.5, "temperature": 0.2, "vocab_size": 256}, "seed": 0, "steps": 400, "warmup_steps": 20}, "kind": "pretrain", "name": "pretrain-splitmask-smoke", "tags": {"arch": "vit-smoke", "artifact": "smoke", "method": "splitmask", "pretrain_data": "synthetic-classification", "scale": "smoke"}}, {"config": {"arch": "vit-smoke", "batch_size": 32, "blr": 0.002, "checkpoint": {"file": "encoder.safetensors", "ref": "pretrain-splitmask-smoke"}, "cutmix": 0.0, "data_root": {"file": "classification", "ref": "synthetic-smoke"}, "drop_path": 0.0, "epochs": 40, "img_size": 64, "layer_decay": 0.75, "mixup": 0.0, "rand_augment": null, "seed": 0, "smoothing": 0.1, "warmup_epochs": 2.0}, "kind": "finetune", "name": "finetune-splitmask-smoke", "tags": {"arch": "vit-smoke", "artifact": "smoke", "downstream": "synthetic-cls-finetune", "method": "splitmask", "pretrain_data": "synthetic-classification", "scale": "smoke"}}, {"config": {"arch": "vit-smoke", "batch_size": 32, "blr": 0.002, "checkpoint": null, "cutmix": 0.0, "data_root": {"file": "classification", "ref": "synthetic-smoke"}, "drop_path": 0.0, "epochs": 40, "img_size": 64, "layer_decay": 0.75, "mixup": 0.0, "rand_augment": null, "seed": 0, "smoothing": 0.1, "warmup_epochs": 2.0}, "kind": "finetune", "name": "finetune-random-init-smoke", "tags": {"arch": "vit-smoke", "artifact": "smoke", "downstream": "synthetic-cls-finetune", "method": "random-init", "pretrain_data": "none", "scale": "smoke"}}, {"config": {"cfg_options": {"train_cfg.max_epochs": 12, "train_cfg.val_interval": 12}, "ckpt": {"file": "encoder.safetensors", "ref": "pretrain-splitmask-smoke"}, "config": "configs_mm/mask_rcnn_vit_fpn_smoke.py", "data_root": {"file": "coco", "ref": "synthetic-smoke"}, "seed": 0}, "kind": "detect", "name": "detect-splitmask-smoke", "tags": {"arch": "vit-smoke", "artifact": "smoke", "downstream": "synthetic-coco-maskrcnn", "method": "splitmask", "pretrain_data": "synthetic-classification", "scale": "smoke"}}, {"config": {"cfg_options": {"param_scheduler.1.end": 160, "train_cfg.max_iters": 160, "train_cfg.val_interval": 160}, "ckpt": {"file": "encoder.safetensors", "ref": "pretrain-splitmask-smoke"}, "config": "configs_mm/upernet_vit_smoke.py", "data_root": {"file": "ade20k", "ref": "synthetic-smoke"}, "seed": 0}, "kind": "segment", "name": "segment-splitmask-smoke", "tags": {"arch": "vit-smoke", "artifact": "smoke", "downstream": "synthetic-ade20k-upernet", "method": "splitmask", "pretrain_data": "synthetic-classification", "scale": "smoke"}}]''')  # noqa: E501  (the plan as recorded)


@pytest.fixture(scope="module")
def paper() -> list[Run]:
    return plan_runs("all", "paper")


def test_every_artifact_at_every_scale() -> None:
    assert set(PAPER_ARTIFACTS) <= set(ARTIFACTS) and set(SUBSETS["all"]) == set(PAPER_ARTIFACTS)
    assert SUBSETS["smoke"] == ["smoke"]
    for name in PAPER_ARTIFACTS:
        assert SUBSETS[name] == [name]
        for scale in SCALES:
            evals = [r for r in plan_runs(name, scale) if r.kind in EVAL_KINDS]
            assert evals, (name, scale)
            for run in evals:
                assert {"method", "pretrain_data", "arch", "downstream"} <= set(run.tags), run.name
                assert run.tags["artifact"] == name and run.tags["scale"] == scale


def test_smoke_artifact_is_unchanged() -> None:
    now = plan_runs("smoke", "smoke")
    assert [(r.name, r.kind) for r in now] == [(r["name"], r["kind"]) for r in SMOKE_BEFORE]
    for run, before in zip(now, SMOKE_BEFORE):
        assert run.config == before["config"], run.name
        assert {k: run.tags[k] for k in before["tags"]} == before["tags"]


@pytest.mark.parametrize("scale", SCALES)
def test_each_run_is_planned_once(scale: str) -> None:
    runs = plan_runs("all", scale)
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    # At smoke every classification downstream is the same synthetic set, so only pre-trainings
    # must differ there; at the real scales every run does.
    blobs = [json.dumps([r.kind, r.config], sort_keys=True) for r in runs if scale != "smoke" or r.kind == "pretrain"]
    assert len(blobs) == len(set(blobs)), "two runs with different names but the same kind and config"


def test_a_name_planned_twice_with_another_config_is_an_error(monkeypatch) -> None:
    monkeypatch.setitem(ARTIFACTS, "a1", Artifact("a1", "", {"paper": lambda: [Run("p", "pretrain", {"steps": 1})]}))
    monkeypatch.setitem(ARTIFACTS, "a2", Artifact("a2", "", {"paper": lambda: [Run("p", "pretrain", {"steps": 2})]}))
    monkeypatch.setitem(SUBSETS, "both", ["a1", "a2"])
    with pytest.raises(ValueError, match="planned twice"):
        plan_runs("both", "paper")


def _is_splitmask_in100_b(run: Run) -> bool:
    c = run.config
    return (run.kind == "pretrain" and c["method"] == "splitmask" and c["data_root"] == data("imagenet", "train")
            and c["fraction"] == 1.0 and c["arch"] == "vit-b16" and c["method_args"]["tokenizer"] == "dall-e")


def test_splitmask_imagenet_pretraining_is_shared(paper: list[Run]) -> None:
    users: dict[str, set[str]] = {}
    for name in PAPER_ARTIFACTS:
        for run in plan_runs(name, "paper"):
            if _is_splitmask_in100_b(run):
                users.setdefault(json.dumps([run.name, run.config], sort_keys=True), set()).add(name)
    assert len(users) == 1  # one name and one config, from every artifact that uses it
    assert {"table1", "fig2", "table7", "table8"} <= next(iter(users.values()))
    shared = [r for r in paper if _is_splitmask_in100_b(r)]
    assert len(shared) == 1 and {"table1", "fig2", "table7", "table8"} <= set(shared[0].tags["artifacts"])


@pytest.mark.parametrize("scale", SCALES)
def test_refs_and_data_markers_resolve(scale: str) -> None:
    runs = plan_runs("all", scale)
    names = {r.name for r in runs}
    for run in runs:
        assert set(run.refs()) <= names, run.name
        assert set(find_data(run.config)) <= set(DATASETS), run.name
    if scale == "smoke":  # synthetic data only
        assert not any(find_data(r.config) for r in runs)


def test_missing_datasets_reports_then_clears(tmp_path: Path, paper: list[Run]) -> None:
    missing = missing_datasets(paper, tmp_path)
    assert set(missing) == {n for r in paper for n in find_data(r.config)} == set(DATASETS) - {"fashion-mnist"}  # the miniature's
    by_name = {r.name: r for r in paper}
    for name, (layout, blocked) in missing.items():
        assert layout == DATASETS[name][0]
        assert blocked and blocked == sorted(blocked)
        for run_name in blocked:  # uses the data, or refers to a run that does
            run = by_name[run_name]
            assert name in find_data(run.config) or set(run.refs()) & set(blocked)
    # iNat fine-tuning of a COCO pre-training is blocked by both data sets.
    coco_inat = [r.name for r in paper if r.tags.get("downstream") == "inat2019-finetune" and r.tags["pretrain_data"] == "coco"]
    assert coco_inat and set(coco_inat) <= set(missing["coco"][1]) & set(missing["inat2019"][1])
    for name, (_, paths) in DATASETS.items():
        for rel in paths:
            target = tmp_path / name / rel
            if target.suffix in (".json", ".mat", ".txt", ".safetensors", ".gz"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            else:
                target.mkdir(parents=True, exist_ok=True)
    assert missing_datasets(paper, tmp_path) == {}


def test_resolve_data_turns_markers_into_paths(tmp_path: Path) -> None:
    config = {"a": data("coco"), "b": [data("imagenet", "train")], "c": {"ref": "x", "file": "y"}, "d": 3}
    assert resolve_data(config, tmp_path) == {"a": str(tmp_path / "coco"), "b": [str(tmp_path / "imagenet" / "train")],
                                              "c": {"ref": "x", "file": "y"}, "d": 3}


def _steps(config: dict) -> float:
    if config.get("epochs") is not None:
        return config["epochs"] * IMAGENET_TRAIN * config["fraction"] / config["batch_size"]
    return config["steps"]


def test_fig2_holds_iterations_constant() -> None:
    pre = [r for r in plan_runs("fig2", "paper") if r.kind == "pretrain"]
    assert {r.config["fraction"] for r in pre} == {0.001, 0.01, 0.05, 0.1, 0.25, 1.0}
    steps = [_steps(r.config) for r in pre]
    assert max(steps) - min(steps) <= 1, steps
    assert {r.config["method"] for r in pre if r.config["fraction"] == 0.001} == {"splitmask"}
    full = next(r for r in pre if r.config["fraction"] == 1.0)  # ImageNet-100%: 300 epochs (known)
    assert round(300 * IMAGENET_TRAIN / full.config["batch_size"]) == full.config["steps"]
    epochs = {r.tags["fraction"]: r.tags["epochs"] for r in plan_runs("schedules", "paper") if r.kind == "finetune"}
    assert epochs == {0.01: 30000, 0.1: 3000, 1.0: 300}  # the schedules table (known)


@pytest.mark.parametrize("artifact", ["fig3", "cars_overtraining"])
def test_length_artifacts_vary_the_pretraining_length(artifact: str) -> None:
    runs = plan_runs(artifact, "paper")
    assert len({r.config["steps"] for r in runs if r.kind == "pretrain"}) == 5
    assert len({r.tags["epochs"] for r in runs if r.kind == "finetune"}) == 5


def _comparisons(artifact: str, scale: str) -> set[tuple]:
    skip = {"arch", "scale", "artifacts"}
    return {(r.kind, *sorted((k, v) for k, v in r.tags.items() if k not in skip))
            for r in plan_runs(artifact, scale) if r.kind in EVAL_KINDS}


@pytest.mark.parametrize("artifact", PAPER_ARTIFACTS)
def test_scales_change_sizes_not_comparisons(artifact: str) -> None:
    assert _comparisons(artifact, "paper") == _comparisons(artifact, "smoke") == _comparisons(artifact, "small")


@pytest.mark.parametrize("scale", SCALES)
def test_every_config_builds_its_dataclass(scale: str) -> None:
    def dummy(value):
        if isinstance(value, dict):
            if set(value) in ({"ref", "file"}, {"data", "path"}):
                return "/dummy"
            return {k: dummy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [dummy(v) for v in value]
        return value

    classes = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "probe": ProbeConfig}
    for run in plan_runs("all", scale):
        if run.kind in classes:
            config_from_dict(classes[run.kind], dummy(run.config))
        elif run.kind in ("detect", "segment"):
            assert set(run.config) == {"ckpt", "config", "data_root", "cfg_options", "seed"}
            assert (REPO / run.config["config"]).is_file()


def test_paper_scale_settings_follow_the_protocol(paper: list[Run]) -> None:
    pre = [r for r in paper if r.kind == "pretrain"]
    cars = [r for r in pre if r.tags["pretrain_data"] == "stanford-cars"]
    assert cars and all(r.config["crop_scale_max"] == 0.25 for r in cars)
    small_sets = {"stanford-cars", "domainnet-clipart", "domainnet-sketch", "domainnet-painting"}
    for r in pre:
        small = r.tags["pretrain_data"] in small_sets
        if r.config["method"] == "splitmask":
            assert r.config["method_args"].get("keep_ratio", 0.5) == (0.25 if small else 0.5)
        if r.config["method"] == "beit":
            # the small sets' 75% (known); elsewhere BEiT's release default, 75 of 196 patches
            assert r.config["method_args"].get("mask_ratio", BEIT_MASK_RATIO) == (0.75 if small else BEIT_MASK_RATIO)
    rand = [r for r in paper if r.kind == "detect" and r.tags["method"] == "random-init"]
    assert rand and all("6x" in r.config["config"] for r in rand if r.tags["arch"] == "vit-b16")
    assert {r.config["arch"] for r in pre} == {"vit-s16", "vit-b16"}
    # DINO's and DeiT's base learning rate for their pre-trainings, BEiT's for the others
    assert {r.config["blr"] for r in pre if r.config["method"] in ("dino", "supervised")} == {5e-4}
    assert {r.config["blr"] for r in pre if r.config["method"] not in ("dino", "supervised")} == {1.5e-3}
    # a scale built from the paper's keeps its per-method recipe only where it says so
    mini = [r for r in plan_runs("mini", "mini") if r.kind == "pretrain"]
    assert {r.config["blr"] for r in mini} == {4e-3}


def test_every_reference_row_has_a_planned_run() -> None:
    planned = {(a, r.tags["method"], r.tags["pretrain_data"], r.tags["downstream"], r.tags["arch"])
               for a in PAPER_ARTIFACTS for r in plan_runs(a, "paper") if r.kind in EVAL_KINDS}
    with (REPO / "tables" / "paper" / "reference.csv").open() as f:
        for row in csv.DictReader(f):
            key = (row["artifact"], row["method"], row["pretrain_data"], row["downstream"])
            assert any(p[:4] == key and row["arch"] in ("unknown", p[4]) for p in planned), row
