"""The real data sets by name: a marker in a config (:func:`data`) for a data set that lives under
the user's ``--data-root`` (or, for a data set that a system package ships, in the package's folder:
:data:`SYSTEM_COPIES`, but only where no data root was named), the layout each must have
(:data:`DATASETS`), and what a missing one blocks (:func:`missing_datasets`). A marker becomes
the path that is read, so a run's config and result name the data it read. What is known of each
data set (layout, counts, folders, reader) is its record in :mod:`benchmark.data.sets`;
docs/datasets.md describes the layouts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmark import REPO
from benchmark.data.fashion_mnist import DEBIAN_DIR as FASHION_MNIST_DEBIAN_DIR
from benchmark.data.sets import DATA_SETS, DOMAINS
from benchmark.experiments.model import Run
from benchmark.utils.tree import KEEP, nodes, rebuild

# Training images of each pre-training data set (the official train splits), used to turn epochs into iterations.
TRAIN_IMAGES: dict[str, int] = {name: record.train for name, record in DATA_SETS.items() if record.train is not None}
# Pre-training data that a data run of the plan writes (benchmark.stages.data), not a data set
# under --data-root: name -> (the data run, the folder of its train images, read as a plain folder).
WRITTEN: dict[str, tuple[str, str]] = {name: record.written_by for name, record in DATA_SETS.items() if record.written_by}
DENSE_LAYOUTS = {"detect": "coco", "segment": "ade20k"}  # each dense kind's folder below a data set the plan writes
FASHION_LABELS = 1_000  # labelled train images of the miniature's evaluations (100 per class; our choice)
# downstream tag -> (run kind, data set, reader format / probe mode)
DOWNSTREAMS: dict[str, tuple[str, str, str]] = {
    "imagenet-finetune": ("finetune", "imagenet", "imagefolder"),
    "imagenet-linear": ("probe", "imagenet", "linear"),
    "inat2019-finetune": ("finetune", "inat2019", "inat2019"),
    "stanford-cars-finetune": ("finetune", "stanford-cars", "stanford-cars"),
    **{f"domainnet-{d}-finetune": ("finetune", "domainnet", f"domainnet-{d}") for d in DOMAINS},
    "coco-maskrcnn": ("detect", "coco", ""),
    "ade20k-upernet": ("segment", "ade20k", ""),
    # The miniature (Fashion-MNIST): few labels for every evaluation, the floors on the same labels,
    # and supervised training with all labels (the ceiling).
    "fashion-mnist-1k-finetune": ("finetune", "fashion-mnist", "fashion-mnist"),
    "fashion-mnist-1k-linear": ("probe", "fashion-mnist", "linear"),
    "fashion-mnist-1k-knn": ("probe", "fashion-mnist", "knn"),
    "fashion-mnist-1k-pixels-logistic": ("pixels", "fashion-mnist", "logistic"),
    "fashion-mnist-1k-pixels-knn": ("pixels", "fashion-mnist", "knn"),
    "fashion-mnist-all-finetune": ("finetune", "fashion-mnist", "fashion-mnist"),
    # The miniature's dense legs, on the scenes' COCO instances and ADE20k layout (benchmark.data.scenes).
    "fashion-mnist-scenes-maskrcnn": ("detect", "fashion-mnist-scenes", ""),
    "fashion-mnist-scenes-upernet": ("segment", "fashion-mnist-scenes", ""),
}
# Downstreams that see a class-balanced fraction of the train labels: downstream -> labelled images.
LABELLED: dict[str, int] = {d: FASHION_LABELS for d in DOWNSTREAMS if d.startswith("fashion-mnist-1k-")}
# Data sets read through a format of their own by every stage (probes too): name -> reader.
FORMATS = {name: record.reader for name, record in DATA_SETS.items() if record.own_format and record.reader}


def data(name: str, path: str = "") -> dict[str, str]:
    """A marker for the real data set ``name`` (a key of DATASETS), ``path`` below its root."""
    return {"data": name, "path": path}


# name -> (the expected layout in one line, the relative paths that must exist below DATA_ROOT/<name>):
# the data sets a marker may name (each its own folder under the data root)
DATASETS: dict[str, tuple[str, list[str]]] = {name: (record.layout, list(record.required))
                                              for name, record in DATA_SETS.items() if record.layout}


# Data sets that a system package installs: used where no data root was named (the default one,
# DEFAULT_DATA_ROOT) and it has no folder of the data set. A root or folder the user named is read
# as given, or reported missing; never swapped for the system copy.
SYSTEM_COPIES: dict[str, Path] = {"fashion-mnist": FASHION_MNIST_DEBIAN_DIR}
DEFAULT_DATA_ROOT = REPO / "data"  # the driver's --data-root when neither it nor $SSLBENCH_DATA is given


def _present(path: Path) -> bool:
    """``path`` exists (a ``.gz`` file also counts when it is there uncompressed)."""
    return path.exists() or (path.suffix == ".gz" and path.with_suffix("").exists())


def dataset_dir(name: str, data_root: str | Path) -> Path | None:
    """Where the data set ``name`` is read from: ``data_root/<name>`` where it is complete; its
    system copy where ``data_root`` is the default one (nothing was named) and has no
    ``<name>`` folder; else None (missing)."""
    paths = DATASETS[name][1]
    folder, system = Path(data_root) / name, SYSTEM_COPIES.get(name)
    if all(_present(folder / p) for p in paths):
        return folder
    unnamed = Path(os.path.abspath(data_root)) == DEFAULT_DATA_ROOT and not folder.exists()
    if system is not None and unnamed and all(_present(system / p) for p in paths):
        return system
    return None


def is_marker(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"data", "path"}


def data_markers(value: Any) -> list[tuple[str, str]]:
    """``(name, path)`` of every data marker in ``value`` (a config), in order, with repeats."""
    return [(node["data"], node["path"]) for node in nodes(value) if is_marker(node)]


def find_data(value: Any) -> list[str]:
    """The data set names of every marker in ``value`` (a config), in order, with repeats."""
    return [name for name, _ in data_markers(value)]


def resolve_data(config: Any, data_root: str | Path) -> Any:
    """``config`` with every data marker replaced by the path ``data_root/<name>/<path>``, or by
    the data set's system copy where :func:`dataset_dir` reads that instead: the path read."""
    def replace(node: Any) -> Any:
        if not is_marker(node):
            return KEEP
        path = dataset_dir(node["data"], data_root) if node["data"] in DATASETS else None
        path = path or Path(data_root) / node["data"]
        return str(path / node["path"]) if node["path"] else str(path)

    return rebuild(config, replace)


def missing_datasets(runs: list[Run], data_root: str | Path) -> dict[str, tuple[str, list[str]]]:
    """The data sets the runs need that are not (completely) below ``data_root``: name -> (the
    expected layout, the sorted names of the runs it blocks, those that refer to a blocked run
    included). Empty when everything is in place."""
    root = Path(data_root)
    needed: dict[str, set[str]] = {}
    for run in runs:
        for marker_name in find_data(run.config):
            needed.setdefault(marker_name, set()).add(run.name)
    missing: dict[str, tuple[str, list[str]]] = {}
    for name in sorted(needed):
        if name not in DATASETS:
            raise KeyError(f"data set {name!r} is not in DATASETS (expected one of {sorted(DATASETS)})")
        layout, _ = DATASETS[name]
        if dataset_dir(name, root) is not None:
            continue
        blocked = set(needed[name])
        changed = True
        while changed:  # the runs that refer (transitively) to a blocked run are blocked too
            changed = False
            for run in runs:
                if run.name not in blocked and blocked.intersection(run.refs()):
                    blocked.add(run.name)
                    changed = True
        missing[name] = (layout, sorted(blocked))
    return missing
