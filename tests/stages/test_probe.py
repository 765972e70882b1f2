"""Linear probing and weighted k-NN on frozen features (benchmark.stages.probe)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from benchmark import REPO
from benchmark.data.classification import load_classification
from benchmark.models.checkpoints.export import save_encoder
from benchmark.models.vit import create_vit, model_spec
from benchmark.stages.probe import (
    ProbeConfig,
    build_encoder,
    build_head_optimizer,
    linear_probe,
    main,
    make_head,
    probe,
)
from benchmark.training.features import knn_classify, nearest_neighbours, weighted_votes
from benchmark.utils.io import read_log
from benchmark.utils.results import load_result
from benchmark.utils.schedule import cosine_schedule

CHANCE = 100.0 / 6  # six shape classes in the synthetic set
CPU = torch.device("cpu")


def _clusters(centres: torch.Tensor, per_class: int, spread: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` points around each centre; their norms vary (cosine similarity ignores them)."""
    labels = torch.arange(len(centres)).repeat_interleave(per_class)
    feats = centres[labels] + spread * torch.randn(len(labels), centres.shape[1], generator=gen)
    return feats * (1 + 4 * torch.rand(len(labels), 1, generator=gen)), labels


# ----------------------------------------------------------------------------- k-NN


def test_knn_is_perfect_on_tight_clusters_and_chance_on_shuffled_labels() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(10, 32, generator=gen), dim=1)
    train, train_labels = _clusters(centres, 40, 0.05, gen)
    val, val_labels = _clusters(centres, 20, 0.05, gen)
    # Small chunks: the blockwise running top-k must agree with the one-shot search.
    scores = knn_classify(train, train_labels, val, 10, ks=(20, 10), temperature=0.07, query_chunk=7)
    for k in (20, 10):
        assert (scores[k].argmax(1) == val_labels).float().mean() == 1.0
    sims, index = nearest_neighbours(train, val, 20, query_chunk=7, bank_chunk=33)
    full = torch.nn.functional.normalize(val, dim=1) @ torch.nn.functional.normalize(train, dim=1).T
    ref_sims, _ = full.topk(20, dim=1)
    torch.testing.assert_close(sims, ref_sims)
    torch.testing.assert_close(full.gather(1, index), ref_sims)  # the indices point at those similarities

    shuffled = train_labels[torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(2))]
    acc = float((knn_classify(train, shuffled, val, 10, ks=(20,))[20].argmax(1) == val_labels).float().mean())
    assert acc < 0.25, f"shuffled labels still give {acc:.0%} (chance 10%)"


def test_knn_votes_are_weighted_by_exp_similarity_over_temperature() -> None:
    # The query is (1, 0). One neighbour of class 0 at cosine 0.9, two of class 1 at cosine 0.5,
    # and one of class 2 at cosine -1, outside k = 3.
    train = torch.tensor([[0.9, math.sqrt(1 - 0.81)], [0.5, math.sqrt(0.75)], [0.5, -math.sqrt(0.75)], [-2.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[3.0, 0.0]])
    votes = knn_classify(train, labels, query, 3, ks=(3,), temperature=0.07)[3]
    expected = torch.tensor([[math.exp(0.9 / 0.07), 2 * math.exp(0.5 / 0.07), 0.0]])
    torch.testing.assert_close(votes, expected, rtol=1e-4, atol=1e-6)
    assert votes.argmax() == 0  # weighted: the one very close neighbour wins ...
    assert torch.bincount(labels[:3], minlength=3).argmax() == 1  # ... where a plain majority says class 1
    # A high temperature flattens the weights towards the majority vote.
    assert knn_classify(train, labels, query, 3, ks=(3,), temperature=10.0)[3].argmax() == 1
    # weighted_votes on its own: neighbours' similarities and labels -> class scores.
    direct = weighted_votes(torch.tensor([[0.9, 0.5, 0.5]]), torch.tensor([[0, 1, 1]]), 3, 0.07)
    torch.testing.assert_close(direct, expected, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- the head and LARS


def test_probe_head_is_mae_s_batchnorm_without_affine_and_small_linear() -> None:
    torch.manual_seed(0)
    head = make_head(384, 1000)
    bn, linear = head
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and bn.weight is None and bn.bias is None
    assert bn.eps == 1e-6
    assert [name for name, _ in head.named_parameters()] == ["1.weight", "1.bias"]
    assert abs(float(linear.weight.detach().std()) - 0.01) < 0.0005  # MAE: trunc_normal_(std=0.01)
    assert torch.all(linear.bias == 0)


def test_lars_adapts_the_weight_matrix_even_without_weight_decay() -> None:
    torch.manual_seed(0)
    head = make_head(16, 4)
    optimizer = build_head_optimizer(head, "lars", lr=0.5, weight_decay=0.0)
    w0, b0 = head[1].weight.detach().clone(), head[1].bias.detach().clone()
    head.train()
    loss = nn.functional.cross_entropy(head(torch.randn(32, 16)), torch.randint(0, 4, (32,)))
    loss.backward()
    grad_b = head[1].bias.grad.clone()
    optimizer.step()
    # Matrix: the step is lr * trust_coeff * |w| (MAE's LARS), whatever the gradient's size.
    step = (head[1].weight.detach() - w0).norm()
    assert float(step) == pytest.approx(0.5 * 1e-3 * float(w0.norm()), rel=1e-3)
    # Bias: plain momentum SGD (no trust ratio).
    torch.testing.assert_close(head[1].bias.detach(), b0 - 0.5 * grad_b)


# ----------------------------------------------------------------------------- linear probe


def _cfg(root: Path, **overrides) -> ProbeConfig:
    base = dict(data_root=str(root / "classification"), arch="vit-smoke", img_size=64, batch_size=64, log_every=1)
    return ProbeConfig(**{**base, **overrides})


def _splits(root: Path):
    return (load_classification("imagefolder", root / "classification", "train"),
            load_classification("imagefolder", root / "classification", "val"))


def test_linear_probe_on_cached_features_beats_chance_and_leaves_the_encoder_alone(synthetic_root, tmp_path) -> None:
    train_set, val_set = _splits(synthetic_root)
    top1s = []
    for seed in (0, 1, 2):
        cfg = _cfg(synthetic_root, augment=False, epochs=30, optimizer="adamw", blr=0.01, warmup_epochs=2, seed=seed)
        torch.manual_seed(seed)
        encoder = build_encoder(cfg)
        before = {k: v.clone() for k, v in encoder.state_dict().items()}
        metrics, head = linear_probe(cfg, encoder, train_set, val_set, CPU, tmp_path / f"s{seed}")
        after = encoder.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before), "the frozen encoder changed"
        assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
        assert not head[0].affine and set(dict(head.named_parameters())) == {"1.weight", "1.bias"}
        records = read_log(tmp_path / f"s{seed}")
        assert len(records) == 30 * (288 // 64)
        # MAE's adjust_learning_rate (pinned in test_parity.py): warm-up lr * s / W over W = 2 epochs
        # of 4 steps, then the cosine; record k holds the lr set for step k.
        total, lr = len(records), cfg.blr * 64 / 256
        expected = [cosine_schedule(k, lr, cfg.min_lr, total, 2 * 4, warmup_rule="mae") for k in range(1, total + 1)]
        assert [r["lr"] for r in records] == pytest.approx(expected, rel=1e-9, abs=1e-15)
        # The head learns its training features, and generalises above chance to val.
        assert sum(r["train_acc"] for r in records[-4:]) / 4 > 0.3
        assert metrics["top1"] > CHANCE, f"seed {seed}: top-1 {metrics['top1']:.1f}% is not above chance"
        assert metrics["top5"] >= metrics["top1"]
        top1s.append(metrics["top1"])
    assert sum(top1s) / len(top1s) > CHANCE + 5, top1s


def test_linear_probe_with_augmentation_runs_end_to_end(synthetic_root, tmp_path) -> None:
    # 6 images per class (train_fraction 1/8), one batch of 36 augmented crops per epoch.
    cfg = _cfg(synthetic_root, augment=True, epochs=12, optimizer="adamw", blr=0.1, warmup_epochs=1,
               crop_scale_min=0.5, train_fraction=0.125)
    metrics = probe(cfg, tmp_path)
    result = load_result(tmp_path / "result.json")
    assert result["kind"] == "linear" and set(result["metrics"]) == {"top1", "top5"}
    assert result["metrics"]["top1"] == pytest.approx(metrics["top1"]) and 0 <= metrics["top1"] <= 100
    assert result["config"]["augment"] is True
    records = read_log(tmp_path)
    assert len(records) == 12
    losses = [r["loss"] for r in records]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2, losses


def test_knn_probe_end_to_end_writes_a_knn_result(synthetic_root, tmp_path) -> None:
    metrics = probe(_cfg(synthetic_root, mode="knn", train_fraction=0.5), tmp_path)
    result = load_result(tmp_path / "result.json")
    assert result["kind"] == "knn"
    assert set(metrics) == {"top1", "top5", "top1_k10", "top5_k10"}
    assert all(0 <= v <= 100 for v in metrics.values())


def test_checkpoint_weights_are_the_probed_encoder(synthetic_root, tmp_path) -> None:
    torch.manual_seed(123)
    vit = create_vit("vit-smoke", 64)
    path = save_encoder(vit, model_spec("vit-smoke", 64), tmp_path / "enc.safetensors")
    encoder = build_encoder(_cfg(synthetic_root, checkpoint=str(path)))
    reference = vit.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in encoder.state_dict().items())


# ----------------------------------------------------------------------------- CLI


def _run_cli(tmp_path: Path, config: dict, capsys) -> tuple[int, str]:
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(config))
    code = main(["--config", str(cfg_path), "--out", str(tmp_path / "run")])
    return code, capsys.readouterr().err


def test_cli_rejects_bad_configs_with_one_line_errors(synthetic_root, tmp_path, capsys) -> None:
    root = str(synthetic_root / "classification")
    code, err = _run_cli(tmp_path, {"data_root": root, "epoch": 3}, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and "'epochs'" in err  # suggests the key
    code, err = _run_cli(tmp_path, {"data_root": root, "mode": "kmeans"}, capsys)
    assert code == 2 and err.count("\n") == 1 and "mode" in err
    code, err = _run_cli(tmp_path, {"data_root": str(tmp_path / "nowhere")}, capsys)
    assert code == 2 and err.count("\n") == 1 and "no such directory" in err
    code, err = _run_cli(tmp_path, {"mode": "knn"}, capsys)
    assert code == 2 and err.count("\n") == 1 and "data_root" in err
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["--config", str(tmp_path / "broken.json"), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert not (tmp_path / "run" / "result.json").exists()


# ----------------------------------------------------------------------------- torchrun


def _run_probe(cfg: ProbeConfig, out: Path, processes: int) -> None:
    cfg_path = out.parent / f"{out.name}.json"
    cfg_path.write_text(json.dumps(asdict(cfg)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    cmd = [sys.executable, *launcher, "-m", "benchmark.probe", "--config", str(cfg_path), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_probe_as_one_process(synthetic_root, tmp_path) -> None:
    """``python -m benchmark.probe`` under torchrun: the k-NN metrics are those of one process
    exactly, and the cached-feature linear probe's head (BN over the global batch, DDP over the
    halves of each global batch) ends where one process's does."""
    # One image fewer per split (287 train, 95 val): the two processes' shares differ in length.
    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "classification", data / "classification")
    for split in ("train", "val"):
        sorted((data / "classification" / split / "circle").iterdir())[0].unlink()
    knn = _cfg(data, mode="knn", batch_size=32, k=5, seed=1)
    linear = _cfg(data, augment=False, epochs=3, batch_size=32, blr=0.5, warmup_epochs=1, seed=1)
    for name, cfg in (("knn", knn), ("linear", linear)):
        for processes in (1, 2):
            _run_probe(cfg, tmp_path / f"{name}{processes}", processes)

    results = {d: load_result(tmp_path / d / "result.json") for d in ("knn1", "knn2", "linear1", "linear2")}
    assert results["knn1"]["metrics"] == results["knn2"]["metrics"]  # exactly
    assert set(results["knn1"]["metrics"]) == {"top1", "top5", "top1_k10", "top5_k10"}
    one, two = (torch.load(tmp_path / d / "head.pth", weights_only=True) for d in ("linear1", "linear2"))
    assert set(one) == set(two) == {"0.running_mean", "0.running_var", "0.num_batches_tracked", "1.weight", "1.bias"}
    assert int(one["0.num_batches_tracked"]) == int(two["0.num_batches_tracked"]) == 3 * (287 // 32)
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4, msg=key)
    top1 = [results[d]["metrics"]["top1"] for d in ("linear1", "linear2")]
    assert top1[0] == pytest.approx(top1[1], abs=100 / 95 + 1e-6)  # at most one image apart
    logs = [[r["loss"] for r in read_log(tmp_path / d)] for d in ("linear1", "linear2")]
    assert logs[0] == pytest.approx(logs[1], abs=1e-4)  # the logged loss is the global batch's
    # Rank 0 alone writes: one set of records, one result.
    assert len(logs[1]) == 3 * (287 // 32)
