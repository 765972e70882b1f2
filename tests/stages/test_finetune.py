"""Classification fine-tuning: it learns, LP-FT's head is the logistic regression on the frozen
features, and an interrupted run resumes to the same weights."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.data.augment import eval_transform
from benchmark.data.classification import Transformed, load_splits
from benchmark.models.vit import create_vit
from benchmark.stages.finetune import FinetuneConfig, finetune, fit_head, main
from benchmark.training.features import SINGLE, extract_features
from benchmark.training.log import RunLog
from benchmark.utils.io import read_log
from benchmark.utils.schedule import cosine_schedule


def _config(root, **overrides) -> FinetuneConfig:
    values = dict(
        data_root=str(root), arch="vit-smoke", img_size=64, epochs=15, batch_size=32, blr=4e-3, warmup_epochs=1,
        layer_decay=0.75, drop_path=0.1, smoothing=0.1, rand_augment=None, mixup=0.0, cutmix=0.0, log_every=5,
        checkpoint_every=10, seed=1,
    )
    return FinetuneConfig(**{**values, **overrides})


def test_random_init_learns_the_synthetic_classes(synthetic_root, tmp_path) -> None:
    cfg = _config(synthetic_root / "classification")
    metrics = finetune(cfg, tmp_path)
    assert metrics["top1"] > 2 * 100 / 6, metrics  # six classes: chance is 16.7%
    assert json.loads((tmp_path / "result.json").read_text())["metrics"]["top1"] == metrics["top1"]
    # BEiT's cosine_scheduler (pinned in test_parity.py), warm-up of one epoch; the head's group
    # (lr_scale 1) is logged, the record of step k holding the lr set for step k.
    records = [r for r in read_log(tmp_path) if "lr" in r]
    total = records[-1]["step"]
    lr = cfg.blr * cfg.batch_size / 256
    expected = [cosine_schedule(r["step"], lr, cfg.min_lr, total, total // cfg.epochs) for r in records]
    assert [r["lr"] for r in records] == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_linear_probe_head_classifies_as_the_logistic_regression(synthetic_root) -> None:
    train_set, _ = load_splits("imagefolder", str(synthetic_root / "classification"), "val")
    labelled = Transformed(train_set, eval_transform(64, 1.0))
    model = create_vit("vit-smoke", 64, num_classes=len(train_set.classes))
    fitted = fit_head(model, labelled, 16, torch.device("cpu"), SINGLE)
    features, labels = extract_features(model, labelled, 16, torch.device("cpu"))
    with torch.no_grad():
        predicted = model.head(features).argmax(-1)
    # The head's own top-1 on the frozen features is the fit's: its rows are in class order.
    assert 100.0 * float((predicted == labels).float().mean()) == pytest.approx(fitted)
    assert fitted > 100 / 6 + 30  # six synthetic classes, separable from random features


def test_a_head_fit_that_runs_out_of_iterations_says_so_in_one_line(synthetic_root, monkeypatch, capsys, recwarn) -> None:
    # on the ceiling's 50,000 random-init features L-BFGS used all its iterations, and scikit-learn's
    # warning spread eight lines over the log
    from benchmark.stages import finetune as stage

    train_set, _ = load_splits("imagefolder", str(synthetic_root / "classification"), "val")
    labelled = Transformed(train_set, eval_transform(64, 1.0))
    model = create_vit("vit-smoke", 64, num_classes=len(train_set.classes))
    fit_head(model, labelled, 16, torch.device("cpu"), SINGLE)
    assert "L-BFGS" not in capsys.readouterr().err  # these features converge
    monkeypatch.setattr(stage, "HEAD_FIT_ITERS", 2)
    fit_head(model, labelled, 16, torch.device("cpu"), SINGLE)
    lines = [line for line in capsys.readouterr().err.splitlines() if "L-BFGS" in line]
    assert lines == ["[finetune] the head's logistic regression used all its 2 L-BFGS iterations without converging; "
                     "fine-tuning goes on from that head"]
    assert not [w for w in recwarn if "converge" in str(w.message).lower()]


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("head_init, images_on_device", [("random", False), ("linear-probe", False), ("random", True)])
def test_interrupted_run_resumes_to_the_same_weights(synthetic_root, tmp_path, monkeypatch, head_init,
                                                     images_on_device) -> None:
    # Mixup/CutMix (numpy's RNG), RandAugment (per-image seeds) and drop path (torch's global RNG)
    # are all on: a resumed run must repeat each of them (LP-FT's head comes from the checkpoint).
    # With the images held on the device, its crops (drawn per step) replace RandAugment.
    cfg = _config(synthetic_root / "classification", epochs=2, mixup=0.8, cutmix=1.0,
                  rand_augment=None if images_on_device else "rand-m9-mstd0.5-inc1", log_every=1, checkpoint_every=5,
                  head_init=head_init, images_on_device=images_on_device)
    whole = finetune(cfg, tmp_path / "whole")

    real_step = RunLog.step

    def stop_after_step_12(self, step, *args, **kwargs):
        real_step(self, step, *args, **kwargs)
        if step == 12:
            raise Interrupted

    monkeypatch.setattr(RunLog, "step", stop_after_step_12)
    with pytest.raises(Interrupted):
        finetune(cfg, tmp_path / "cut")
    assert torch.load(tmp_path / "cut" / "checkpoint.pth", weights_only=True)["step"] == 10
    monkeypatch.setattr(RunLog, "step", real_step)
    resumed = finetune(cfg, tmp_path / "cut")

    a = torch.load(tmp_path / "whole" / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed == whole


def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"data_root": str(tmp_path), "epochz": 3}))
    assert main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "epochz" in err and "epochs" in err and "\n" not in err
