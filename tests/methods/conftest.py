"""The methods' shared smoke pre-trainings: one per method (``pretrained``), used by the contract
test and by each method's own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# Per method: the method_args and the PretrainConfig fields of its shared smoke pre-training, and
# how much its mean loss must fall from the first ten to the last ten steps (tests/methods/test_contract.py).
PRETRAIN_RUNS: dict[str, tuple[dict, dict, float]] = {
    "splitmask": ({"vocab_size": 64}, {"steps": 60, "batch_size": 32, "blr": 4e-3, "checkpoint_every": 30}, 0.3),
    "beit": ({"vocab_size": 64, "min_mask_patches": 4},
             {"steps": 40, "batch_size": 32, "blr": 4e-3, "checkpoint_every": 40}, 0.3),
    "mae": ({"decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 4},
            {"steps": 40, "batch_size": 32, "blr": 4e-3, "checkpoint_every": 40}, 0.15),
    "dino": ({"out_dim": 256, "head_hidden": 256, "head_bottleneck": 64, "local_crops": 2, "freeze_last_layer_steps": 3},
             {"steps": 40, "batch_size": 16, "blr": 1e-3, "checkpoint_every": 40}, 0.1),
    "byol": ({"proj_dim": 64, "proj_hidden": 256, "pred_hidden": 256},
             {"steps": 40, "batch_size": 16, "blr": 1e-3, "checkpoint_every": 40}, 0.4),
    "supervised": ({"mixup": 0.0, "cutmix": 0.0, "rand_augment": None, "random_erase": 0.0},
                   {"steps": 60, "batch_size": 32, "blr": 4e-3, "checkpoint_every": 60}, 0.2),
}


@pytest.fixture(scope="session")
def pretrained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """``pretrained(method)`` -> (config, run dir, encoder export) of the method's smoke
    pre-training (:data:`PRETRAIN_RUNS`) on the synthetic images, run once per session."""
    from benchmark.stages.pretrain import PretrainConfig, pretrain

    runs: dict[str, tuple] = {}

    def get(method: str) -> tuple:
        if method not in runs:
            method_args, fields, _ = PRETRAIN_RUNS[method]
            cfg = PretrainConfig(data_root=str(synthetic_root / "classification" / "train"), method=method,
                                 method_args=dict(method_args), arch="vit-smoke", img_size=64, warmup_steps=5,
                                 drop_path=0.0, crop_scale_min=0.5, log_every=1, seed=0, **fields)
            out = tmp_path_factory.mktemp(f"pretrain_{method}")
            runs[method] = (cfg, out, pretrain(cfg, out))
        return runs[method]

    return get


@pytest.fixture(scope="session")
def contract_runs() -> dict[str, tuple[dict, dict, float]]:
    return PRETRAIN_RUNS
