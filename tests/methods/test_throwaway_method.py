"""Adding a method, followed step by step as the README's "Extending" section lists them: its own
class (here below; in the suite its own file under benchmark/methods/), registered where it is
defined, its arguments at each scale it plans at, a comparison that uses it, and its tests. The
planner, the dry run and the report's method families then find it, with no other file touched."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import torch
import torch.nn as nn

from benchmark.driver.run import main as driver_main
from benchmark.experiments import registry
from benchmark.experiments.model import Artifact, Layout
from benchmark.experiments.paper import Pre, _grid, artifact_runs
from benchmark.experiments.scales import SMOKE
from benchmark.methods import METHODS, method_class
from benchmark.methods.base import JOINT_EMBEDDING, PretrainMethod, methods_of, pooled_features, register_method
from benchmark.training.config import at_least

ARTIFACT = "throwaway_table"


@pytest.fixture
def throwaway(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[PretrainMethod]]:
    """A joint-embedding method that exists for this test only: a temporary registry entry, its
    smoke-scale arguments, and an artifact that pre-trains it on ImageNet and fine-tunes it."""
    before = dict(METHODS)

    @register_method  # step 1: the class, registered where it is defined
    class Throwaway(PretrainMethod):
        name = "throwaway"
        family = JOINT_EMBEDDING
        RULES = {"width": at_least(1)}

        def __init__(self, encoder: nn.Module, width: int = 8) -> None:
            super().__init__(encoder)
            self.head = nn.Linear(encoder.embed_dim, width)

        def forward(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
            del generator  # draws nothing
            return {"loss": self.head(pooled_features(self.encoder, batch)).pow(2).mean()}

    # step 2: its arguments at each scale that plans it (here the smoke scale only)
    monkeypatch.setitem(SMOKE.method_args, "throwaway", {"width": 4})
    # step 3: a comparison that uses it
    comparisons = {ARTIFACT: ("A throwaway comparison", lambda: _grid(["throwaway"], [Pre("*", "imagenet")], ["s"],
                                                                       ["imagenet-finetune"]), Layout())}
    artifact = Artifact(ARTIFACT, "A throwaway comparison", {"smoke": partial(artifact_runs, ARTIFACT, "smoke", comparisons)},
                        Layout())
    monkeypatch.setitem(registry.ARTIFACTS, ARTIFACT, artifact)
    monkeypatch.setitem(registry.SUBSETS, ARTIFACT, [ARTIFACT])
    registry.every_plan.cache_clear()
    yield Throwaway
    METHODS.clear()
    METHODS.update(before)
    registry.every_plan.cache_clear()


def test_a_new_method_is_planned_priced_and_grouped_from_its_own_class(throwaway, tmp_path, capsys) -> None:
    assert method_class("throwaway") is throwaway
    runs = registry.plan_runs(ARTIFACT, "smoke")
    pretrain = [run for run in runs if run.kind == "pretrain"]
    assert [run.config["method"] for run in pretrain] == ["throwaway"]
    assert pretrain[0].config["method_args"] == {"width": 4}  # the scale's arguments, no tokenizer (it uses none)
    assert {run.kind for run in runs} == {"data", "pretrain", "finetune"}

    assert driver_main(["--subset", ARTIFACT, "--scale", "smoke", "--dry-run", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if pretrain[0].name in line)
    assert "GPU-h" in line  # the dry run priced its step by building it (benchmark.methods.flops)

    assert "throwaway" in methods_of(JOINT_EMBEDDING)  # the families the report's findings and gates read


def test_the_throwaway_method_leaves_the_registry_as_it_found_it() -> None:
    assert "throwaway" not in METHODS and ARTIFACT not in registry.ARTIFACTS
