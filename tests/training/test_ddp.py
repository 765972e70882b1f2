"""DDP through torchrun: two gloo processes train as one process would on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmark import REPO
from benchmark.models.vit import create_vit
from benchmark.stages.pretrain import PretrainConfig
from benchmark.training.runtime import seed_everything
from benchmark.utils.io import read_log


def _run(cfg_path: Path, out: Path, processes: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    cmd = [sys.executable, *launcher, "-m", "benchmark.pretrain", "--config", str(cfg_path), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(synthetic_root, tmp_path) -> None:
    # Supervised without Mixup: no per-process randomness in the loss, so one process over the
    # global batch and two processes over its halves must take the same steps (up to float sums).
    cfg = PretrainConfig(
        data_root=str(synthetic_root / "classification" / "train"), method="supervised",
        method_args={"mixup": 0.0, "cutmix": 0.0, "rand_augment": None, "random_erase": 0.0},
        arch="vit-smoke", img_size=64, steps=3, batch_size=16, accum_steps=2, blr=1e-3, warmup_steps=1,
        drop_path=0.0, checkpoint_every=3, log_every=1, seed=3,
    )
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(asdict(cfg)))
    _run(cfg_path, tmp_path / "one", processes=1)
    _run(cfg_path, tmp_path / "two", processes=2)

    one, two = load_file(str(tmp_path / "one" / "encoder.safetensors")), load_file(str(tmp_path / "two" / "encoder.safetensors"))
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key
    # Adam's first moment is a running mean of the gradients: the same gradients on both sides.
    moments = [torch.load(tmp_path / d / "checkpoint.pth", weights_only=True)["optimizer"]["state"] for d in ("one", "two")]
    assert moments[0].keys() == moments[1].keys()
    for index in moments[0]:
        a, b = moments[0][index]["exp_avg"], moments[1][index]["exp_avg"]
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * float(a.abs().max()) + 1e-12), index
    seed_everything(cfg.seed)  # the initial weights, as both runs built them
    initial = create_vit(cfg.arch, cfg.img_size, num_classes=0).state_dict()
    assert max(float((one[k] - initial[k]).abs().max()) for k in one) > 5e-5  # training moved them (lr ~6e-5)
    logs = [[r["loss"] for r in read_log(tmp_path / d)] for d in ("one", "two")]
    assert logs[0] == pytest.approx(logs[1], abs=1e-4)  # the logged loss is the mean over processes


def _info_nce_worker(rank: int, world: int, init_file: str, a: torch.Tensor, b: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    from benchmark.methods.losses import info_nce

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = slice(rank * a.shape[0] // world, (rank + 1) * a.shape[0] // world)
        mine_a, mine_b = a[rows].clone().requires_grad_(True), b[rows].clone().requires_grad_(True)
        loss = info_nce(mine_a, mine_b, temperature=0.2)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad_a": mine_a.grad, "grad_b": mine_b.grad}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_info_nce_negatives_span_the_global_batch(tmp_path) -> None:
    """SplitMask's InfoNCE under DDP: with the batch split over two processes, the negatives are
    still every other image of the global batch: the mean of the two losses equals the
    one-process loss, and each process's gradients, averaged by DDP, equal the one-process ones."""
    import torch.multiprocessing as mp

    from benchmark.methods.losses import info_nce

    torch.manual_seed(0)
    a, b = torch.randn(8, 5), torch.randn(8, 5)
    whole_a, whole_b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss = info_nce(whole_a, whole_b, temperature=0.2)
    loss.backward()
    whole = loss.detach()

    out = str(tmp_path / "part")
    mp.spawn(_info_nce_worker, args=(2, str(tmp_path / "init"), a, b, out), nprocs=2, join=True)
    parts = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    assert float(sum(p["loss"] for p in parts) / 2) == pytest.approx(float(whole), rel=1e-6)
    # A local-batch InfoNCE would give a different loss: it has fewer negatives.
    local = sum(float(info_nce(a[r * 4:(r + 1) * 4], b[r * 4:(r + 1) * 4], 0.2)) for r in range(2)) / 2
    assert abs(local - float(whole)) > 1e-3
    # DDP divides the summed gradients by the number of processes.
    assert torch.allclose(torch.cat([p["grad_a"] for p in parts]) / 2, whole_a.grad, atol=1e-6)
    assert torch.allclose(torch.cat([p["grad_b"] for p in parts]) / 2, whole_b.grad, atol=1e-6)


@pytest.mark.slow
def test_finetuning_on_two_gloo_processes_matches_one_process(synthetic_root, tmp_path) -> None:
    """Fine-tuning under torchrun: two processes over the halves of each global batch take the
    same steps as one process (no Mixup or drop path: nothing random differs per process)."""
    from benchmark.stages.finetune import FinetuneConfig

    cfg = FinetuneConfig(
        data_root=str(synthetic_root / "classification"), arch="vit-smoke", img_size=64, epochs=1, batch_size=32,
        blr=2e-3, warmup_epochs=0.5, drop_path=0.0, rand_augment="rand-m9-mstd0.5-inc1", mixup=0.0, cutmix=0.0,
        log_every=1, seed=2,
    )
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(asdict(cfg)))
    for processes, out in ((1, "one"), (2, "two")):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
        cmd = [sys.executable, *launcher, "-m", "benchmark.finetune", "--config", str(cfg_path), "--out", str(tmp_path / out)]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (torch.load(tmp_path / d / "checkpoint.pth", weights_only=True)["model"] for d in ("one", "two"))
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key
    results = [json.loads((tmp_path / d / "result.json").read_text())["metrics"] for d in ("one", "two")]
    assert results[0]["top1"] == pytest.approx(results[1]["top1"], abs=100 / 96 + 1e-6)  # at most one image apart
    logs = [[r["loss"] for r in read_log(tmp_path / d)] for d in ("one", "two")]
    assert logs[0] == pytest.approx(logs[1], abs=1e-4)
