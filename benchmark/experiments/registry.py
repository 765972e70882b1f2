"""The registry of artifacts: each artifact of the paper (:mod:`~benchmark.experiments.paper`),
the smoke chain (:mod:`~benchmark.experiments.smoke`) and the miniature
(:mod:`~benchmark.experiments.mini`), with the scales each has, and :func:`plan_runs`, which turns
a subset of them at a scale into the distinct runs they need."""

from __future__ import annotations

from functools import lru_cache, partial

from benchmark.experiments.mini import MINI_COMPARISONS, hparams_runs, mini_artifact_runs
from benchmark.experiments.model import Artifact, Layout, Run
from benchmark.experiments.paper import COMPARISONS, artifact_runs
from benchmark.experiments.scales import MINI_SCALES, PAPER_SCALES, SCALE_SPECS
from benchmark.experiments.smoke import smoke_runs

ARTIFACTS: dict[str, Artifact] = {
    "smoke": Artifact("smoke", "The whole chain at smoke scale (synthetic data)", {"smoke": smoke_runs},
                      Layout(rows=("method", "pretrain_data"), columns=("downstream", "metric"))),
    **{name: Artifact(name, title, {s: partial(artifact_runs, name, s) for s in PAPER_SCALES}, layout)
       for name, (title, _, layout) in COMPARISONS.items()},
    "mini_hparams": Artifact("mini_hparams", "Fashion-MNIST: the fine-tuning learning rate, chosen on the val split "
                             "(seed 0): random init's, shared by the self-supervised initialisations, and supervised "
                             "pre-training's own", {s: partial(hparams_runs, s) for s in MINI_SCALES},
                             Layout(columns=("hparams",), figure="curve", x="hparams",
                                    x_label="fine-tuning base learning rate (blr)")),
    **{name: Artifact(name, title, {s: partial(mini_artifact_runs, name, s) for s in MINI_SCALES}, layout)
       for name, (title, _, layout) in MINI_COMPARISONS.items()},
}

# Named groups of artifacts for --subset: each artifact alone, "all" (every paper artifact), "smoke",
# "mini" (the default: the miniature's core question, half an hour on 2 cores) and "mini-all" (every
# miniature artifact: Table 1's scenes, Table 6 at three seeds, Fig. 2's fractions, MAE and BYOL, the
# dense legs; an evening).
MINI_DEFAULT = ["mini_hparams", "mini_table6", "mini_table8"]
SUBSETS: dict[str, list[str]] = {"smoke": ["smoke"], "mini": MINI_DEFAULT,
                                 "mini-all": [*MINI_DEFAULT, "mini_table1", "mini_seeds", "mini_fig2", "mini_more", "mini_dense",
                                              "mini_dense_beit"],
                                 "all": list(COMPARISONS), **{n: [n] for n in ARTIFACTS if n != "smoke"}}
SCALES = tuple(SCALE_SPECS)


def plan_runs(subset: str, scale: str) -> list[Run]:
    """The distinct runs (by name) the artifacts of ``subset`` need at ``scale``.

    A run that several artifacts need (same name) appears once, with ``tags["artifact"]`` the
    first of them and ``tags["artifacts"]`` all of them. The same name with another config (or
    other tags) is a registry bug and raises ValueError.
    """
    if subset not in SUBSETS and subset not in ARTIFACTS:
        raise KeyError(f"unknown subset {subset!r}; expected one of {sorted(set(SUBSETS) | set(ARTIFACTS))}")
    names = SUBSETS.get(subset, [subset])
    runs: dict[str, Run] = {}
    for artifact in (ARTIFACTS[n] for n in names):
        if scale not in artifact.scales:
            hint = ("; at the miniature's scales the paper's questions are the mini_* artifacts (--subset mini)"
                    if scale in MINI_SCALES else "")
            raise KeyError(f"artifact {artifact.name!r} has no {scale!r} scale (it has {sorted(artifact.scales)}){hint}")
        for run in artifact.scales[scale]():
            # A run planned only because another needs it (tag "dependency") is not one of the
            # artifact's own: its results do not appear in the artifact's table.
            member = [] if run.tags.pop("dependency", False) else [artifact.name]
            run.tags = {"artifact": artifact.name, "artifacts": member, "scale": scale, **run.tags}
            seen = runs.get(run.name)
            if seen is None:
                runs[run.name] = run
                continue
            same_tags = {k: v for k, v in seen.tags.items() if k not in ("artifact", "artifacts")} == \
                        {k: v for k, v in run.tags.items() if k not in ("artifact", "artifacts")}
            if seen.kind != run.kind or seen.config != run.config or not same_tags:
                raise ValueError(f"run name {run.name!r} is planned twice with different kinds, configs or tags "
                                 f"(artifacts {seen.tags['artifacts']} and {artifact.name!r})")
            if member and artifact.name not in seen.tags["artifacts"]:
                seen.tags["artifacts"].append(artifact.name)
    return list(runs.values())


@lru_cache(maxsize=1)
def every_plan() -> dict[tuple[str, str], tuple[Run, ...]]:
    """(artifact, scale) -> :func:`plan_runs` of that artifact at that scale, for every artifact at each
    of its scales: the whole registry, planned once per process for the report (read it, do not change it)."""
    return {(name, scale): tuple(plan_runs(name, scale)) for name, artifact in ARTIFACTS.items() for scale in artifact.scales}
