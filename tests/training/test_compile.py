"""``PretrainConfig.compile``: the transformer blocks compiled, the same computation and the same
checkpoint names as eager (whether it is faster is measured by ``python -m benchmark.perf --compile``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from safetensors.torch import load_file

from benchmark.stages.pretrain import PretrainConfig, pretrain
from benchmark.utils.io import read_log


@pytest.mark.slow
def test_a_compiled_run_computes_the_eager_losses_and_exports_the_same_keys(synthetic_root, tmp_path) -> None:
    cfg = PretrainConfig(
        data_root=str(synthetic_root / "classification" / "train"), method="splitmask",
        method_args={"vocab_size": 32}, arch="vit-smoke", img_size=64, steps=3, batch_size=8, blr=4e-3,
        warmup_steps=1, drop_path=0.0, checkpoint_every=3, log_every=1, seed=3, num_workers=0,
    )
    pretrain(cfg, tmp_path / "eager")
    pretrain(replace(cfg, compile=True), tmp_path / "compiled")
    eager, compiled = read_log(tmp_path / "eager"), read_log(tmp_path / "compiled")
    # Fused kernels sum in another order: equal to float32 rounding, not bit for bit.
    assert [r["loss"] for r in compiled] == pytest.approx([r["loss"] for r in eager], rel=1e-4)
    a = load_file(str(tmp_path / "eager" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "compiled" / "encoder.safetensors"))
    assert a.keys() == b.keys()  # no "_orig_mod." names: downstream converters read it unchanged
