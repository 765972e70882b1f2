"""The throughput benchmark's accounting: which transformer blocks a method runs, on how many tokens.
(Timings themselves are reported by `python -m benchmark.perf`, never asserted in tests.)"""

from __future__ import annotations

import pandas as pd

from benchmark.perf import run_pretrain


def test_block_accounting_matches_each_methods_workload(tmp_path) -> None:
    out = tmp_path / "perf.csv"
    import torch

    run_pretrain(["splitmask", "supervised", "mae"], ["vit-smoke"], img_size=64, batch_size=4, steps=1, warmup=0,
                 out=out, device=torch.device("cpu"))
    rows = pd.read_csv(out).set_index("method")
    b, n, depth = 4, 16, 4  # batch, patches of a 64x64 image, vit-smoke blocks
    # SplitMask: both halves in ONE encoder pass (2B sequences of cls + N/2 tokens) through the
    # 4 encoder blocks, then its 2 decoder blocks on 2B sequences of N tokens.
    assert rows.loc["splitmask", "block_calls"] == depth + 2
    assert rows.loc["splitmask", "block_tokens"] == depth * 2 * b * (1 + n // 2) + 2 * 2 * b * n
    # Supervised: the plain encoder on cls + N tokens.
    assert rows.loc["supervised", "block_tokens"] == depth * b * (1 + n)
    # MAE: the encoder on the visible quarter only (+ cls), then its decoder on the full sequence.
    mae_decoder = rows.loc["mae", "block_calls"] - depth
    assert mae_decoder > 0
    assert rows.loc["mae", "block_tokens"] == depth * b * (1 + n // 4) + mae_decoder * b * (1 + n)
    assert (rows.img_per_s > 0).all() and (rows.step_ms > 0).all()


def test_bare_floor_runs_each_stack_of_blocks_as_one_chain() -> None:
    """DINO runs three stacks of blocks per step: the teacher on the global crops (no gradients),
    the student on the global crops and the student on the local crops. The floor must time
    each as one chain of `depth` blocks, not as one forward and backward per block."""
    import torch

    from benchmark.methods import method_class
    from benchmark.models import create_vit
    from benchmark.perf import chains, record_blocks, synthetic_batch

    torch.manual_seed(0)
    method = method_class("dino")(create_vit("vit-smoke", 64), local_crops=2, out_dim=64)
    batch = synthetic_batch(method, 64, batch_size=2)
    calls = record_blocks(method, lambda: method(batch, torch.Generator().manual_seed(0))["loss"].backward())
    groups = [(g[0].shape[:2], g[0].trained, len(g)) for g in chains(calls)]
    local_size = batch[-1].shape[-1]
    global_tokens, local_tokens = 1 + (64 // 16) ** 2, 1 + (local_size // 16) ** 2
    assert sorted(groups) == sorted([
        ((2 * 2, global_tokens), False, 4),   # teacher: 2 global crops of 2 images
        ((2 * 2, global_tokens), True, 4),    # student, global crops
        ((2 * 2, local_tokens), True, 4),     # student, local crops
    ])
