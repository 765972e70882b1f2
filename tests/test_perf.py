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
