"""ViTLayerDecayOptimizerConstructor: per-layer learning rates, weight-decay exemptions, registries."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn as nn

import benchmark.downstream.mm
from benchmark import REPO
from benchmark.downstream.mm.optim import ViTLayerDecayOptimizerConstructor, no_weight_decay, vit_layer_id
from benchmark.models.vit import create_vit

DET_CONFIG = REPO / "configs_mm" / "mask_rcnn_vit_fpn_smoke.py"
SEG_CONFIG = REPO / "configs_mm" / "upernet_vit_smoke.py"
NAME = "ViTLayerDecayOptimizerConstructor"
BASE_LR, WD, RATE = 1e-3, 0.05, 0.5  # rate 0.5: every expected lr below is an exact power of two
DEPTH = 4  # vit-smoke


def _build_model(scope: str) -> nn.Module:
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    cfg = Config.fromfile(str(DET_CONFIG if scope == "mmdet" else SEG_CONFIG))
    cfg.model.backbone.update(arch="vit-smoke", img_size=64)
    registry = importlib.import_module(f"{scope}.registry").MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg.model)


@pytest.fixture(scope="module")
def detector() -> nn.Module:
    return _build_model("mmdet")


@pytest.fixture(scope="module")
def segmentor() -> nn.Module:
    return _build_model("mmseg")


def _optim_wrapper(model: nn.Module, scope: str, **paramwise):
    """Builds the optimizer wrapper by constructor *name* through ``scope``'s registry (as a config does)."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    cfg = dict(
        type="OptimWrapper",
        optimizer=dict(type="AdamW", lr=BASE_LR, betas=(0.9, 0.999), weight_decay=WD),
        constructor=NAME,
        paramwise_cfg=dict(layer_decay_rate=RATE, **paramwise),
    )
    with DefaultScope.overwrite_default_scope(scope):
        return build_optim_wrapper(model, cfg)


def _settings(model: nn.Module, wrapper) -> dict[str, tuple[float, float]]:
    """``name -> (lr, weight_decay)`` of every trainable parameter; each must be in exactly one group."""
    where: dict[int, tuple[float, float]] = {}
    for group in wrapper.optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in where, "a parameter is in two groups"
            where[id(p)] = (group["lr"], group["weight_decay"])
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(where) == len(named)
    return {n: where[id(p)] for n, p in named.items()}


# ---------------------------------------------------------------------------- learning rates


# (parameter, lr multiplier written out: layer ids 0 .. DEPTH + 1 = 5, multiplier RATE ** (5 - id))
DET_EXPECTED = {
    "backbone.vit.pos_embed": 1 / 32,  # id 0
    "backbone.vit.cls_token": 1 / 32,  # id 0
    "backbone.vit.patch_embed.proj.weight": 1 / 32,  # id 0
    "backbone.vit.blocks.0.attn.qkv.weight": 1 / 16,  # id 1
    "backbone.vit.blocks.0.norm1.weight": 1 / 16,
    "backbone.vit.blocks.2.mlp.fc1.bias": 1 / 4,  # id 3
    "backbone.vit.blocks.3.mlp.fc2.weight": 1 / 2,  # id 4: the last block
    "backbone.vit.norm.weight": 1.0,  # id 5: everything that is not embedding or block
    "backbone.fpn1.0.weight": 1.0,
    "backbone.fpn1.1.weight": 1.0,  # the pyramid's BN
    "backbone.fpn2.weight": 1.0,
    "neck.lateral_convs.0.conv.weight": 1.0,
    "rpn_head.rpn_conv.weight": 1.0,
    "roi_head.bbox_head.fc_cls.weight": 1.0,
    "roi_head.mask_head.conv_logits.weight": 1.0,
}


def test_detector_lr_per_layer(detector: nn.Module) -> None:
    settings = _settings(detector, _optim_wrapper(detector, "mmdet"))
    for name, mult in DET_EXPECTED.items():
        assert settings[name][0] == pytest.approx(BASE_LR * mult, rel=1e-12), name
    # every block's parameters share one lr, increasing with depth
    block_lrs = [{lr for n, (lr, _) in settings.items() if n.startswith(f"backbone.vit.blocks.{i}.")} for i in range(DEPTH)]
    assert all(len(s) == 1 for s in block_lrs)
    assert [s.pop() for s in block_lrs] == pytest.approx([BASE_LR * RATE ** (DEPTH - i) for i in range(DEPTH)])


def test_segmentor_lr_per_layer(segmentor: nn.Module) -> None:
    settings = _settings(segmentor, _optim_wrapper(segmentor, "mmseg"))
    assert settings["backbone.vit.pos_embed"][0] == pytest.approx(BASE_LR / 32)
    assert settings["backbone.vit.blocks.0.attn.proj.weight"][0] == pytest.approx(BASE_LR / 16)
    assert settings["backbone.vit.blocks.3.attn.proj.weight"][0] == pytest.approx(BASE_LR / 2)
    for name in ("decode_head.conv_seg.weight", "decode_head.fpn_bottleneck.conv.weight",
                 "auxiliary_head.conv_seg.weight", "backbone.fpn1.0.weight"):
        assert settings[name][0] == pytest.approx(BASE_LR), name


def test_weight_decay_exemptions(detector: nn.Module, segmentor: nn.Module) -> None:
    settings = _settings(detector, _optim_wrapper(detector, "mmdet"))
    no_decay = ["backbone.vit.pos_embed", "backbone.vit.cls_token", "backbone.vit.patch_embed.proj.bias",
                "backbone.vit.blocks.1.norm1.weight", "backbone.vit.blocks.1.norm1.bias",
                "backbone.vit.blocks.1.attn.qkv.bias", "backbone.vit.norm.weight",
                "backbone.fpn1.1.weight", "backbone.fpn1.1.bias", "backbone.fpn1.0.bias",
                "neck.lateral_convs.0.conv.bias", "roi_head.bbox_head.fc_cls.bias"]
    decay = ["backbone.vit.patch_embed.proj.weight", "backbone.vit.blocks.1.attn.qkv.weight",
             "backbone.vit.blocks.3.mlp.fc1.weight", "backbone.fpn1.0.weight",
             "neck.lateral_convs.0.conv.weight", "roi_head.bbox_head.fc_cls.weight"]
    for name in no_decay:
        assert settings[name][1] == 0.0, name
    for name in decay:
        assert settings[name][1] == WD, name
    # the rule as a whole: decay exactly the >= 2-D tensors that are not position embedding / tokens
    for name, p in detector.named_parameters():
        exempt = p.ndim <= 1 or name.endswith((".pos_embed", ".cls_token"))
        assert settings[name][1] == (0.0 if exempt else WD), name
    seg = _settings(segmentor, _optim_wrapper(segmentor, "mmseg"))
    assert seg["decode_head.fpn_bottleneck.bn.weight"][1] == 0.0
    assert seg["decode_head.fpn_bottleneck.conv.weight"][1] == WD


def test_beit_names_relative_position_tables() -> None:
    """timm's Beit (relative position bias, layer scale, q/v biases): ids and exemptions by name."""

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.vit = create_vit("beit-smoke", 64)
            self.head = nn.Linear(192, 3)

    model = Wrapped()
    settings = _settings(model, _optim_wrapper(model, "mmseg"))  # 4 blocks: blocks.2 = id 3 -> RATE ** 2
    assert settings["backbone.vit.rel_pos_bias.relative_position_bias_table"] == (pytest.approx(BASE_LR), 0.0)
    assert settings["backbone.vit.blocks.2.gamma_1"] == (pytest.approx(BASE_LR / 4), 0.0)
    assert settings["backbone.vit.blocks.2.attn.q_bias"] == (pytest.approx(BASE_LR / 4), 0.0)
    assert settings["backbone.vit.blocks.2.attn.qkv.weight"] == (pytest.approx(BASE_LR / 4), WD)
    assert settings["backbone.vit.cls_token"] == (pytest.approx(BASE_LR / 32), 0.0)
    assert settings["head.weight"] == (pytest.approx(BASE_LR), WD)
    assert vit_layer_id("backbone.vit.blocks.11.attn.relative_position_bias_table", 12) == 12
    table = nn.Parameter(torch.zeros(732, 12))  # 2-D, still exempt by name
    assert no_weight_decay("backbone.vit.blocks.0.attn.relative_position_bias_table", table)


def test_layer_ids_for_vit_b_match_beit() -> None:
    """ViT-B/16: BEiT's num_layers=12 gives 14 ids; the patch embedding gets rate ** 13, the last block rate."""
    assert vit_layer_id("backbone.vit.patch_embed.proj.weight", 12) == 0
    assert vit_layer_id("backbone.vit.blocks.0.norm1.weight", 12) == 1
    assert vit_layer_id("backbone.vit.blocks.11.mlp.fc2.weight", 12) == 12
    assert vit_layer_id("backbone.vit.norm.weight", 12) == 13
    assert vit_layer_id("decode_head.conv_seg.weight", 12) == 13
    assert vit_layer_id("backbone.fpn1.0.weight", 12) == 13


# ---------------------------------------------------------------------------- num_layers and config checks


def test_explicit_num_layers_shifts_scales(detector: nn.Module) -> None:
    settings = _settings(detector, _optim_wrapper(detector, "mmdet", num_layers=6))
    assert settings["backbone.vit.pos_embed"][0] == pytest.approx(BASE_LR * RATE ** 7)
    assert settings["backbone.vit.blocks.3.attn.qkv.weight"][0] == pytest.approx(BASE_LR * RATE ** 3)
    assert settings["neck.lateral_convs.0.conv.weight"][0] == pytest.approx(BASE_LR)


def test_num_layers_below_depth_is_an_error(detector: nn.Module) -> None:
    with pytest.raises(ValueError, match="smaller than"):
        _optim_wrapper(detector, "mmdet", num_layers=2)


@pytest.mark.parametrize("paramwise", [dict(layer_decay_rate=1.5), dict(layer_decay_rate=0.0),
                                       dict(layer_decay_rate=0.9, custom_keys={}), dict(num_layers=12)])
def test_bad_paramwise_cfg_rejected(paramwise: dict) -> None:
    cfg = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=BASE_LR, weight_decay=WD))
    with pytest.raises(ValueError):
        ViTLayerDecayOptimizerConstructor(cfg, paramwise)


def test_no_decay_rate_one_gives_base_lr_everywhere(segmentor: nn.Module) -> None:
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    cfg = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=BASE_LR, weight_decay=WD),
               constructor=NAME, paramwise_cfg=dict(layer_decay_rate=1.0))
    with DefaultScope.overwrite_default_scope("mmseg"):
        wrapper = build_optim_wrapper(segmentor, cfg)
    assert {g["lr"] for g in wrapper.optimizer.param_groups} == {BASE_LR}


# ---------------------------------------------------------------------------- registries


@pytest.mark.parametrize("scope", ["mmengine", "mmdet", "mmseg"])
def test_registered_by_name_and_idempotent(scope: str) -> None:
    registry = importlib.import_module(f"{scope}.registry").OPTIM_WRAPPER_CONSTRUCTORS
    assert registry.get(NAME) is ViTLayerDecayOptimizerConstructor
    importlib.reload(benchmark.downstream.mm)  # registering again must not raise
    assert registry.get(NAME) is importlib.import_module("benchmark.downstream.mm").ViTLayerDecayOptimizerConstructor
