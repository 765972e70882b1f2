"""result.json: what the evaluations write and the report reads."""

from __future__ import annotations

import json
import time

import pytest

from benchmark.errors import ConfigError, ResultError
from benchmark.stages.finetune import FinetuneConfig
from benchmark.training.config import config_from_dict
from benchmark.utils.results import load_result, write_result


def test_written_result_follows_the_schema(tmp_path) -> None:
    ckpt = tmp_path / "w.bin"
    ckpt.write_bytes(b"abc")
    path = write_result(tmp_path, "finetune", {"top1": 51.5}, {"lr": 1e-3}, seed=3, started=time.time() - 2, checkpoint=ckpt)
    result = load_result(path)
    assert result["metrics"] == {"top1": 51.5}
    assert result["seed"] == 3 and result["wall_time_s"] >= 2
    assert result["checkpoint"]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert result["versions"]["torch"].startswith("2.13")


@pytest.mark.parametrize("breakage,message", [
    (lambda r: r.pop("metrics"), "missing field 'metrics'"),
    (lambda r: r["metrics"].update(top1="high"), "metric 'top1' is not a number"),
    (lambda r: r.update(seed="0"), "field 'seed'"),
    (lambda r: r.update(schema="other/1"), "schema"),
])
def test_broken_results_are_rejected(tmp_path, breakage, message) -> None:
    path = write_result(tmp_path, "finetune", {"top1": 1.0}, {}, seed=0, started=time.time())
    data = json.loads(path.read_text())
    breakage(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ResultError, match=message):
        load_result(path)


def test_config_rejects_unknown_keys_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="unknown key 'epoch'; did you mean 'epochs'"):
        config_from_dict(FinetuneConfig, {"data_root": "x", "epoch": 3})
    with pytest.raises(ConfigError, match="epochs='3' should be of type int"):
        config_from_dict(FinetuneConfig, {"data_root": "x", "epochs": "3"})
    assert config_from_dict(FinetuneConfig, {"data_root": "x", "checkpoint": None}).checkpoint is None
