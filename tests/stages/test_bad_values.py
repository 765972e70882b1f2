"""Bad values: a data root is read as given or refused, never swapped for another copy;
a run of zero length is refused; and values no rule checked before (a method's arguments, numbers
no run can use, a device the machine lacks, an augmentation timm cannot parse, a choice file of
the wrong type, a data set too small to split) are one ``error:`` line and exit code 2, with no
run directory left behind."""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import benchmark.data.fashion_mnist as fm
from benchmark import REPO
from benchmark.experiments import datasets
from benchmark.experiments.datasets import SYSTEM_COPIES, data, dataset_dir, missing_datasets, resolve_data
from benchmark.experiments.model import Run
from benchmark.stages.pretrain import PretrainConfig

DET_CONFIG = REPO / "configs_mm" / "mask_rcnn_vit_fpn_smoke.py"
SEG_CONFIG = REPO / "configs_mm" / "upernet_vit_smoke.py"
HOW_TO_GET = ("expected the official files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
              "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (gzipped or not) in that folder; Debian's package "
              "has them (apt-get install dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist)")


def _error(capsys) -> str:
    """The one error line a CLI printed (nothing on stderr before it but progress lines)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    line = err.splitlines()[-1]
    assert line.startswith("error: "), err
    return line


def _earlier_results(folder: Path) -> dict[Path, bytes]:
    """Files an earlier run left in ``folder`` (what a failing run must leave alone)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text('{"metrics": {"top1": 42.0}}\n')
    (folder / "config.json").write_text('{"earlier": true}\n')
    return {p: p.read_bytes() for p in folder.iterdir()}


def _intact(folder: Path, before: dict[Path, bytes]) -> bool:
    return sorted(folder.iterdir()) == sorted(before) and all(p.read_bytes() == data for p, data in before.items())


def _write(tmp_path: Path, values: dict, name: str = "cfg.json") -> Path:
    """``values`` as a config file; float('inf') is written as JSON's ``Infinity``, as a user would."""
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return path


def _pretrain_values(data_root: Path, **overrides) -> dict:
    values = asdict(PretrainConfig(data_root=str(data_root), method="splitmask", method_args={"vocab_size": 16},
                                   arch="vit-smoke", img_size=32, steps=2, batch_size=8, warmup_steps=1,
                                   checkpoint_every=1, log_every=1, num_workers=0))
    return {**values, **overrides}


def _stage(kind: str):
    from benchmark.stages.finetune import main as finetune
    from benchmark.stages.pretrain import main as pretrain
    from benchmark.stages.probe import main as probe
    from benchmark.stages.select import main as select

    return {"pretrain": pretrain, "finetune": finetune, "probe": probe, "select": select}[kind]


def _run(kind: str, cfg: Path, out: Path) -> int:
    return _stage(kind)(["--config", str(cfg), "--out", str(out)])


@pytest.fixture
def debian_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_fashion_mnist) -> Path:
    """A complete tiny Fashion-MNIST standing in for Debian's package: the copy a named root was
    silently swapped for."""
    package = make_fashion_mnist(tmp_path / "usr-share-datasets-fashion-mnist")
    monkeypatch.setattr(fm, "DEBIAN_DIR", package)
    monkeypatch.setitem(SYSTEM_COPIES, "fashion-mnist", package)
    return package


def _knn_probe(data_root: Path | str) -> dict:
    return {"data_root": str(data_root), "dataset": "fashion-mnist", "arch": "vit-smoke", "img_size": 32, "mode": "knn",
            "k": 5, "batch_size": 32, "num_workers": 0}


# ---------------------------------------------------------------------------- item 4: data roots


@pytest.mark.parametrize("case", ["lacks a file", "is a file"])
def test_a_named_fashion_mnist_root_is_read_as_given_or_refused(case, debian_copy, tmp_path, make_fashion_mnist,
                                                                capsys) -> None:
    root = tmp_path / "fashion-mnist"
    if case == "lacks a file":
        make_fashion_mnist(root)
        (root / "t10k-labels-idx1-ubyte.gz").unlink()
        expected = f"error: {root / 't10k-labels-idx1-ubyte'}[.gz]: no such file; {HOW_TO_GET}"
    else:
        root.write_text("not a folder")
        expected = f"error: {root}: not a directory; {HOW_TO_GET}"
    out = tmp_path / "run"
    cfg = {"data_root": str(root), "dataset": "fashion-mnist", "arch": "vit-smoke", "img_size": 32, "epochs": 1}
    assert _run("finetune", _write(tmp_path, cfg), out) == 2
    assert _error(capsys) == expected
    assert not out.exists()


def test_the_driver_reads_debians_copy_only_where_no_data_root_was_named(debian_copy, tmp_path, monkeypatch,
                                                                          make_fashion_mnist, capsys) -> None:
    from benchmark.driver.run import main

    config = _knn_probe("") | {"data_root": data("fashion-mnist")}
    run = Run("probe", "probe", config)
    # A named root is never swapped for Debian's copy, whether it lacks the data set or is a file.
    named = tmp_path / "named"
    named.mkdir()
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a folder")
    for root in (named, a_file):
        assert dataset_dir("fashion-mnist", root) is None and set(missing_datasets([run], root)) == {"fashion-mnist"}
        assert resolve_data(config, root)["data_root"] == str(root / "fashion-mnist")
    # The driver given a --data-root that is a file blocks the miniature's runs instead of reading Debian's copy.
    assert main(["--subset", "mini", "--scale", "mini-quick", "--dry-run", "--runs-dir", str(tmp_path / "runs"),
                 "--data-root", str(a_file)]) == 0
    out, err = capsys.readouterr()
    assert f"--data-root {a_file}: " in err
    statuses = [fields[3] for fields in map(str.split, out.splitlines()) if fields[1:2] in (["pretrain"], ["probe"])]
    assert statuses and set(statuses) == {"blocked"}, out
    # Nothing named (the default root, without a fashion-mnist folder): Debian's copy, and the config names it,
    # so that the result records the data read.
    default = tmp_path / "repo-data"
    default.mkdir()
    monkeypatch.setattr(datasets, "DEFAULT_DATA_ROOT", default)
    assert dataset_dir("fashion-mnist", default) == debian_copy and missing_datasets([run], default) == {}
    assert _run("probe", _write(tmp_path, resolve_data(config, default)), tmp_path / "probe") == 0
    assert json.loads((tmp_path / "probe" / "result.json").read_text())["config"]["data_root"] == str(debian_copy)
    # A fashion-mnist folder placed there is read as given: one that lacks a file is missing, not replaced.
    partial = make_fashion_mnist(default / "fashion-mnist")
    (partial / "train-images-idx3-ubyte.gz").unlink()
    assert dataset_dir("fashion-mnist", default) is None and set(missing_datasets([run], default)) == {"fashion-mnist"}


# ---------------------------------------------------------------------------- item 6: runs of zero length


def test_a_linear_probe_of_zero_epochs_is_refused(fashion_root, tmp_path, capsys) -> None:
    cfg = _write(tmp_path, _knn_probe(fashion_root) | {"mode": "linear", "epochs": 0})
    out = tmp_path / "run"
    before = _earlier_results(out)
    assert _run("probe", cfg, out) == 2
    assert _error(capsys) == f"error: {cfg}: ProbeConfig.epochs = 0: should be positive (a run of zero length is not a result)"
    assert _intact(out, before)


@pytest.mark.parametrize("task, option", [("detect", "train_cfg.max_epochs=-1"), ("segment", "train_cfg.max_iters=0")])
def test_a_dense_training_of_zero_length_is_refused(task, option, synthetic_root, tmp_path, capsys) -> None:
    from benchmark.stages.dense import detect_main, segment_main

    main, config, root = ((detect_main, DET_CONFIG, synthetic_root / "coco") if task == "detect"
                          else (segment_main, SEG_CONFIG, synthetic_root / "ade20k"))
    work = tmp_path / "work"
    assert main(["--ckpt", "none", "--config", str(config), "--data-root", str(root), "--work-dir", str(work),
                 "--cfg-options", option]) == 2
    assert _error(capsys) == (f"error: --cfg-options {option}: should be a whole number of at least 1 "
                              "(a training of zero length is not a result)")
    assert not work.exists()


# ---------------------------------------------------------------------------- item 9: values no rule checked


def _splitmask(**args) -> dict:
    return {"method_args": {"vocab_size": 16, **args}}


# case -> (stage, the config's changes, the line after "error: "; CFG: the config file, CHOICE: the choice file,
# ROOT: the data root)
VALUES = {
    "mae mask_ratio 1.0": ("pretrain", {"method": "mae", "method_args": {"mask_ratio": 1.0}},
                           "CFG: PretrainConfig.method_args of mae: mask_ratio = 1.0: should be in (0, 1)"),
    "beit mask_ratio 0.0": ("pretrain", {"method": "beit", "method_args": {"vocab_size": 16, "mask_ratio": 0.0}},
                            "CFG: PretrainConfig.method_args of beit: mask_ratio = 0.0: should be in (0, 1)"),
    "splitmask keep_ratio 1.0": ("pretrain", _splitmask(keep_ratio=1.0),
                                 "CFG: PretrainConfig.method_args of splitmask: keep_ratio = 1.0: should be in (0, 0.5] "
                                 "(each of the two disjoint subsets holds that share)"),
    "vocab_size 1": ("pretrain", _splitmask(vocab_size=1),
                     "CFG: PretrainConfig.method_args of splitmask: vocab_size = 1: should be at least 2"),
    "vocab_size '64'": ("pretrain", _splitmask(vocab_size="64"),
                        "CFG: PretrainConfig.method_args of splitmask: vocab_size='64' should be of type int"),
    "epochs Infinity": ("pretrain", {"steps": None, "epochs": float("inf")},
                        "CFG: PretrainConfig.epochs = inf: should be a finite number"),
    "seed 2**70": ("pretrain", {"seed": 2**70},
                   f"CFG: PretrainConfig.seed = {2**70}: should be a 64-bit integer (below 2**63 in size)"),
    "color_jitter Infinity": ("pretrain", {"color_jitter": float("inf")},
                              "CFG: PretrainConfig.color_jitter = inf: should be a finite number"),
    "blr Infinity": ("pretrain", {"blr": float("inf")}, "CFG: PretrainConfig.blr = inf: should be a finite number"),
    "device cuda without a GPU": ("pretrain", {"device": "cuda"},
                                  "CFG: PretrainConfig.device = 'cuda': should be auto, cpu, cuda or cuda:N for a GPU "
                                  "this machine has (it has none)"),
    "rand_augment": ("finetune", {"rand_augment": "rand-m9-x3"},
                     "CFG: FinetuneConfig.rand_augment = 'rand-m9-x3': should be null or a policy timm parses, e.g. "
                     "rand-m9-mstd0.5-inc1 (RandAugment: rand, then -m<magnitude>, -n<operations>, -mstd<magnitude "
                     "noise>, -inc<0|1>, ...), augmix-m5 or original"),
    "choice.json value a string": ("finetune", {"hparams_from": {"chosen": {"blr": "1e-3"}}},
                                   "hparams_from CHOICE: FinetuneConfig: blr='1e-3' should be of type float"),
    "choice.json a string": ("finetune", {"hparams_from": "blr"},
                             "hparams_from CHOICE: not a choice file (expected a JSON object whose 'chosen' is an "
                             "object of config fields, as benchmark.select writes; got \"blr\")"),
    "fashion-mnist too small to split": ("finetune", {"dataset": "fashion-mnist", "data_root": "small"},
                                         "ROOT/train-labels-idx1-ubyte.gz: 30 train images are too few to split: "
                                         "the fixed val split (a sixth of them) holds an image of each of their 10 "
                                         "classes, which takes at least 60 images and every class twice (the rarest "
                                         "has 3)"),
}


@pytest.mark.parametrize("case", list(VALUES))
def test_a_value_no_run_can_use_is_one_line_and_nothing_is_written(case, synthetic_root, make_fashion_mnist, tmp_path,
                                                                   capsys) -> None:
    if case == "device cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    stage, changes, message = VALUES[case]
    changes, root, choice = dict(changes), synthetic_root / "classification", tmp_path / "choice.json"
    if "hparams_from" in changes:
        choice.write_text(json.dumps(changes["hparams_from"]))
        changes["hparams_from"] = str(choice)
    if changes.get("data_root") == "small":  # 30 train images, 3 of each class
        root = make_fashion_mnist(tmp_path / "small", train=30, test=20)
        del changes["data_root"]
    if stage == "pretrain":
        values = _pretrain_values(root / "train", **changes)
        if values["steps"] is None:  # epochs instead
            del values["steps"]
    else:
        values = {"data_root": str(root), "arch": "vit-smoke", "img_size": 32, "epochs": 1, "batch_size": 8,
                  "num_workers": 0, **changes}
    cfg = _write(tmp_path, values)
    out = tmp_path / "run"
    assert _run(stage, cfg, out) == 2
    expected = message.replace("CFG", str(cfg)).replace("CHOICE", str(choice)).replace("ROOT", str(root))
    assert _error(capsys) == f"error: {expected}"
    assert not out.exists()


def test_every_methods_rules_name_its_arguments_and_pass_its_defaults() -> None:
    from benchmark.methods import METHODS
    from benchmark.training.config import check_kwargs

    for name, cls in METHODS.items():
        params = inspect.signature(cls).parameters
        assert cls.RULES and set(cls.RULES) <= set(params), name
        defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        check_kwargs(cls, defaults, name, skip=("encoder",))  # raises on a default its own rules refuse


@pytest.mark.parametrize("case", ["unknown key", "missing result"])
def test_a_select_of_bad_input_is_one_line_and_leaves_no_folder(case, tmp_path, capsys) -> None:
    missing = tmp_path / "sweep" / "result.json"
    values, message = {
        "unknown key": ({"candidates": [], "metric": "top1", "grid": [1]},
                        "select: unknown keys ['grid'] (expected 'candidates', 'metric')"),
        "missing result": ({"candidates": [{"result": str(missing), "values": {"blr": 0.1}}], "metric": "top1"},
                           f"{missing}: "),
    }[case]
    out = tmp_path / "run"
    assert _run("select", _write(tmp_path, values), out) == 2
    assert _error(capsys).startswith(f"error: {message}")
    assert not out.exists()
