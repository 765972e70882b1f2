"""The data model of the experiment registry: runs, refs between them, artifacts.

A *run* is one step of the pipeline (a kind of :mod:`benchmark.stages.kinds`: ``data``,
``pretrain``, ``finetune``, ``probe``, ``select``, ``detect``, ``segment``) with a plain-dict config.
Configs may point at another run's output with ``{"ref": "<run name>", "file": "<file in its
directory>"}``; the driver resolves these to paths and orders runs so that every run comes after
the runs it refers to. A run's identity is a hash of its kind and resolved config, so a
pre-training that several artifacts use is run once, and a run whose outputs exist is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmark.utils.tree import nodes


@dataclass
class Run:
    name: str                       # unique within a plan; used for refs and directory names
    kind: str                       # a run kind (benchmark.stages.kinds)
    config: dict[str, Any]
    tags: dict[str, Any] = field(default_factory=dict)  # what the report groups by

    def refs(self) -> list[str]:
        return sorted({node["ref"] for node in nodes(self.config) if is_ref(node)})


def ref(run: str, file: str = "") -> dict[str, str]:
    return {"ref": run, "file": file}


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"ref", "file"}


@dataclass(frozen=True)
class Layout:
    """How the report shows an artifact, as the paper's table or figure chose: the tags that name
    its rows and its columns (one readable table per scale and arch unless those are rows or
    columns), and its figure: ``"bars"`` (a group per value of ``groups``, by default the columns
    other than the metric; a bar per row), or ``"curve"`` (a line per row over the numeric tag ``x``).
    ``target``: a pre-training on a column's own data set reads "the target data" (Table 6)."""

    rows: tuple[str, ...] = ("method",)
    columns: tuple[str, ...] = ("downstream",)
    figure: str = "bars"
    groups: tuple[str, ...] | None = None
    x: str = ""          # "fraction" (of the pre-training set, from its tag), "epochs" or "hparams"
    x_label: str = ""
    target: bool = False


@dataclass
class Artifact:
    name: str
    title: str
    scales: dict[str, Callable[[], list[Run]]]  # scale -> a function returning the runs
    layout: Layout = field(default_factory=Layout)  # how the report shows it

