"""ViTPyramid: pyramid geometry, exact checkpoint loading through both registries, init order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from benchmark import REPO
from benchmark.downstream.mm import ViTPyramid
from benchmark.downstream.mm.backbone import default_out_indices, vit_embed_dim
from benchmark.errors import CheckpointError
from benchmark.models.checkpoints.export import MM_PREFIX, save_encoder, to_mm
from benchmark.models.vit import PER_BLOCK_REL_POS, create_vit, model_spec
from benchmark.utils.io import torch_save

DET_CONFIG = REPO / "configs_mm" / "mask_rcnn_vit_fpn_smoke.py"
SEG_CONFIG = REPO / "configs_mm" / "upernet_vit_smoke.py"
PRETRAIN_SIZE = 64
EMBED_DIM = 192  # vit-smoke keeps ViT-Ti's width


@pytest.fixture(scope="module")
def source_vit() -> nn.Module:
    """A 'pre-trained' encoder: random weights, but not the ones a fresh ViTPyramid would draw."""
    torch.manual_seed(1234)
    vit = create_vit("vit-smoke", PRETRAIN_SIZE).eval()
    with torch.no_grad():  # make every tensor distinctive (timm zero-inits some biases)
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return vit


@pytest.fixture(scope="module")
def beit_source() -> nn.Module:
    """A BEiT-pre-trained encoder as our pipeline exports it: shared relative position table, fc_norm."""
    torch.manual_seed(4321)
    beit = create_vit("beit-smoke", PRETRAIN_SIZE).eval()
    with torch.no_grad():
        for p in beit.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return beit


@pytest.fixture(scope="module")
def beit_checkpoint(tmp_path_factory: pytest.TempPathFactory, beit_source: nn.Module) -> Path:
    out = tmp_path_factory.mktemp("mm_beit")
    encoder = save_encoder(beit_source, model_spec("beit-smoke", PRETRAIN_SIZE), out / "encoder.safetensors")
    return to_mm(encoder, out / "mm_backbone.pth")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, source_vit: nn.Module) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("mm_ckpt")
    encoder = save_encoder(source_vit, model_spec("vit-smoke", PRETRAIN_SIZE), out / "encoder.safetensors")
    return {"encoder": encoder, "mm": to_mm(encoder, out / "mm_backbone.pth")}


def _assert_same_vit(vit: nn.Module, source: nn.Module) -> None:
    got, want = vit.state_dict(), {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def _edited_checkpoint(src: Path, dst: Path, edit) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch_save(ckpt, dst)
    return dst


# ---------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("arch", ["vit-smoke", "beit-smoke", "vit-mini"])
@pytest.mark.parametrize("size", [(128, 128), (96, 160)])
def test_pyramid_strides_and_channels(size: tuple[int, int], arch: str) -> None:
    backbone = ViTPyramid(arch=arch, img_size=PRETRAIN_SIZE if arch != "vit-mini" else 32).eval()
    backbone.init_weights()
    h, w = size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        outs = backbone(x)
        tokens = backbone.forward_vit(x)
    assert isinstance(outs, tuple) and len(outs) == 4
    for out, stride in zip(outs, (4, 8, 16, 32)):
        assert out.shape == (2, vit_embed_dim(arch), h // stride, w // stride), (stride, out.shape)
    if backbone.patch_size == 16:  # stride 16 is the third selected block's patch grid itself; stride 32 its 2x2 max-pool
        assert torch.equal(outs[2], tokens[2])
        assert torch.equal(outs[3], nn.functional.max_pool2d(tokens[3], 2))
        assert isinstance(backbone.fpn1, nn.Sequential) and isinstance(backbone.fpn2, nn.ConvTranspose2d)  # BEiT's keys
    else:  # 8x8 patches: stride 8 is the second block's grid, 16 and 32 its 2x2 and 4x4 max-pools
        assert torch.equal(outs[1], tokens[1])
        assert torch.equal(outs[2], nn.functional.max_pool2d(tokens[2], 2))
        assert torch.equal(outs[3], nn.functional.max_pool2d(tokens[3], 4))


def test_default_out_indices_and_embed_dim() -> None:
    assert default_out_indices(12) == (2, 5, 8, 11)
    assert default_out_indices(4) == (0, 1, 2, 3)
    assert ViTPyramid(arch="vit-smoke", img_size=PRETRAIN_SIZE).out_indices == (0, 1, 2, 3)
    assert vit_embed_dim("vit-smoke") == EMBED_DIM and vit_embed_dim("vit-s16") == 384
    with pytest.raises(ValueError, match="out_indices"):
        ViTPyramid(arch="vit-smoke", img_size=PRETRAIN_SIZE, out_indices=(0, 1, 2, 4))


def test_syncbn_falls_back_to_bn_without_distributed() -> None:
    backbone = ViTPyramid(arch="vit-smoke", img_size=PRETRAIN_SIZE, norm_cfg=dict(type="SyncBN", requires_grad=True))
    norms = [m for m in backbone.fpn1 if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 1 and not isinstance(norms[0], nn.SyncBatchNorm)
    backbone.train()
    backbone(torch.randn(2, 3, 64, 64))  # SyncBN would fail here in a single CPU process


# ---------------------------------------------------------------------------- checkpoint loading


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
@pytest.mark.parametrize("fmt", ["mm", "encoder"])
def test_checkpoint_loads_exactly_through_registry(
    scope: str, fmt: str, checkpoints: dict[str, Path], source_vit: nn.Module
) -> None:
    from mmengine.registry import DefaultScope

    registry = __import__(f"{scope}.registry", fromlist=["MODELS"]).MODELS
    assert registry.get("ViTPyramid") is ViTPyramid
    with DefaultScope.overwrite_default_scope(scope):
        backbone = registry.build(
            dict(type="ViTPyramid", arch="vit-smoke", img_size=PRETRAIN_SIZE, checkpoint=str(checkpoints[fmt]))
        )
    fresh = {k: v.clone() for k, v in backbone.vit.state_dict().items()}
    backbone.init_weights()
    _assert_same_vit(backbone.vit, source_vit)
    assert not torch.equal(fresh["blocks.0.attn.qkv.weight"], backbone.vit.state_dict()["blocks.0.attn.qkv.weight"])

    # same final-block patch features as the source model at the pre-training size
    backbone.eval()
    x = torch.randn(2, 3, PRETRAIN_SIZE, PRETRAIN_SIZE)
    captured: list[torch.Tensor] = []
    hook = source_vit.blocks[-1].register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        source_vit.forward_features(x)
        got = backbone.forward_vit(x)[-1]
    hook.remove()
    grid = PRETRAIN_SIZE // 16
    want = captured[0][:, source_vit.num_prefix_tokens:].transpose(1, 2).reshape(2, EMBED_DIM, grid, grid)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_checkpoint_spec_fills_arch_and_img_size(checkpoints: dict[str, Path]) -> None:
    backbone = ViTPyramid(arch=None, img_size=None, checkpoint=str(checkpoints["mm"]))
    assert backbone.arch == "vit-smoke" and backbone.img_size == PRETRAIN_SIZE


def test_pos_embed_resampled_when_img_size_differs(checkpoints: dict[str, Path], source_vit: nn.Module) -> None:
    backbone = ViTPyramid(arch="vit-smoke", img_size=128, checkpoint=str(checkpoints["mm"]))
    backbone.init_weights()
    assert backbone.vit.pos_embed.shape == (1, 1 + 8 * 8, EMBED_DIM)
    assert torch.equal(backbone.vit.pos_embed[:, 0], source_vit.pos_embed[:, 0])  # cls position kept
    assert torch.equal(backbone.vit.blocks[0].mlp.fc1.weight, source_vit.blocks[0].mlp.fc1.weight)


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["state_dict"].pop(MM_PREFIX + "blocks.1.attn.qkv.weight"), "blocks.1.attn.qkv.weight"),
        (lambda c: c["state_dict"].__setitem__(MM_PREFIX + "extra_token", torch.zeros(1)), "extra_token"),
        (lambda c: c["state_dict"].__setitem__("backbone.fpn1.0.weight", torch.zeros(1)), "backbone.fpn1.0.weight"),
    ],
    ids=["dropped", "extra", "foreign"],
)
def test_key_mismatch_raises_naming_the_key(edit, key: str, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    bad = _edited_checkpoint(checkpoints["mm"], tmp_path / "bad.pth", edit)
    backbone = ViTPyramid(arch="vit-smoke", img_size=PRETRAIN_SIZE, checkpoint=str(bad))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        backbone.init_weights()


def test_other_arch_spec_raises(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    bad = _edited_checkpoint(checkpoints["mm"], tmp_path / "ti.pth", lambda c: c["meta"]["model"].update(arch="vit-ti16"))
    backbone = ViTPyramid(arch="vit-smoke", img_size=PRETRAIN_SIZE, checkpoint=str(bad))
    with pytest.raises(CheckpointError, match="vit-ti16"):
        backbone.init_weights()
    backbone = ViTPyramid(arch="vit-ti16", img_size=PRETRAIN_SIZE, checkpoint=str(checkpoints["mm"]))
    with pytest.raises(CheckpointError, match="arch"):
        backbone.init_weights()


def test_unknown_checkpoint_format_raises(tmp_path: Path) -> None:
    junk = tmp_path / "weights.bin"
    junk.write_text("not a checkpoint at all\n")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        ViTPyramid(arch="vit-smoke", img_size=PRETRAIN_SIZE, checkpoint=str(junk)).init_weights()


# ---------------------------------------------------------------------------- BEiT backbones


def test_beit_checkpoint_expanded_per_block_gives_the_source_features(beit_checkpoint: Path, beit_source: nn.Module) -> None:
    backbone = ViTPyramid(arch=None, img_size=None, checkpoint=str(beit_checkpoint)).eval()
    assert backbone.arch == "beit-smoke" and backbone.input_size == (PRETRAIN_SIZE, PRETRAIN_SIZE)
    assert backbone.vit.rel_pos_bias is None  # per-block tables, no shared one
    backbone.init_weights()
    shared = beit_source.rel_pos_bias.relative_position_bias_table
    for block in backbone.vit.blocks:
        assert torch.equal(block.attn.relative_position_bias_table, shared)
    x = torch.randn(2, 3, PRETRAIN_SIZE, PRETRAIN_SIZE)
    captured: list[torch.Tensor] = []
    hook = beit_source.blocks[-1].register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        beit_source.forward_features(x)
        got = backbone.forward_vit(x)[-1]
    hook.remove()
    grid = PRETRAIN_SIZE // 16
    want = captured[0][:, 1:].transpose(1, 2).reshape(2, EMBED_DIM, grid, grid)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_beit_tables_resized_to_input_size_and_any_grid_runs(beit_checkpoint: Path, beit_source: nn.Module) -> None:
    backbone = ViTPyramid(arch="beit-smoke", img_size=PRETRAIN_SIZE, input_size=128, checkpoint=str(beit_checkpoint))
    backbone.init_weights()
    table = backbone.vit.blocks[0].attn.relative_position_bias_table
    assert table.shape == (15 * 15 + 3, 3)  # window 8x8 (was 4x4)
    assert torch.equal(table[-3:], beit_source.rel_pos_bias.relative_position_bias_table[-3:])
    # at the window's own grid the bias is timm's; the native Beit forward agrees with ours
    reference = create_vit("beit-smoke", 128, num_classes=0, **PER_BLOCK_REL_POS).eval()
    reference.load_state_dict(backbone.vit.state_dict(), strict=True)
    backbone.eval()
    x = torch.randn(1, 3, 128, 128)
    captured: list[torch.Tensor] = []
    hook = reference.blocks[-1].register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        reference.forward_features(x)
        got = backbone.forward_vit(x)[-1]
    hook.remove()
    torch.testing.assert_close(got, captured[0][:, 1:].transpose(1, 2).reshape(1, EMBED_DIM, 8, 8), rtol=1e-5, atol=1e-5)
    # smaller grids read the central offsets, larger ones resize on the fly; gradients reach the tables
    backbone.train()
    for h, w in [(64, 96), (96, 176)]:
        outs = backbone(torch.randn(2, 3, h, w))
        assert [o.shape[-2:] for o in outs] == [(h // s, w // s) for s in (4, 8, 16, 32)]
        outs[2].mean().backward()
        assert backbone.vit.blocks[0].attn.relative_position_bias_table.grad.abs().sum() > 0
        backbone.zero_grad()


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["state_dict"].pop(MM_PREFIX + "blocks.1.attn.q_bias"), "blocks.1.attn.q_bias"),
        (lambda c: c["state_dict"].pop(MM_PREFIX + "rel_pos_bias.relative_position_bias_table"),
         "rel_pos_bias.relative_position_bias_table"),
        (lambda c: c["state_dict"].__setitem__(MM_PREFIX + "blocks.0.attn.relative_position_index", torch.zeros(1)),
         "blocks.0.attn.relative_position_index"),
    ],
    ids=["dropped", "no-table", "extra"],
)
def test_beit_key_mismatch_raises_naming_the_key(edit, key: str, beit_checkpoint: Path, tmp_path: Path) -> None:
    bad = _edited_checkpoint(beit_checkpoint, tmp_path / "bad.pth", edit)
    backbone = ViTPyramid(arch="beit-smoke", img_size=PRETRAIN_SIZE, checkpoint=str(bad))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        backbone.init_weights()


# ---------------------------------------------------------------------------- whole models


def _model_cfg(path: Path, ckpt: Path, arch: str = "vit-smoke"):
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    model = cfg.model
    model.backbone.update(arch=arch, img_size=PRETRAIN_SIZE, checkpoint=str(ckpt))
    return cfg, model


def test_detector_init_weights_keeps_loaded_vit(checkpoints: dict[str, Path], source_vit: nn.Module) -> None:
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    cfg, model = _model_cfg(DET_CONFIG, checkpoints["mm"])
    model.roi_head.bbox_head.num_classes = model.roi_head.mask_head.num_classes = 6
    with DefaultScope.overwrite_default_scope("mmdet"):
        detector = MODELS.build(model)
    before = detector.neck.lateral_convs[0].conv.weight.clone()
    detector.init_weights()
    _assert_same_vit(detector.backbone.vit, source_vit)
    assert not torch.equal(before, detector.neck.lateral_convs[0].conv.weight)  # the neck did get initialised
    detector.init_weights()  # a second call (as mmengine may do) changes nothing
    _assert_same_vit(detector.backbone.vit, source_vit)


def test_segmentor_init_weights_keeps_loaded_vit(checkpoints: dict[str, Path], source_vit: nn.Module) -> None:
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    cfg, model = _model_cfg(SEG_CONFIG, checkpoints["encoder"])
    model.decode_head.num_classes = model.auxiliary_head.num_classes = 7
    with DefaultScope.overwrite_default_scope("mmseg"):
        segmentor = MODELS.build(model)
    segmentor.init_weights()
    _assert_same_vit(segmentor.backbone.vit, source_vit)
    segmentor.eval()
    with torch.no_grad():
        logits = segmentor(torch.randn(1, 3, 96, 128), mode="tensor")
    assert logits.shape[1] == 7


def test_segmentor_with_beit_backbone(beit_checkpoint: Path, beit_source: nn.Module) -> None:
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    cfg, model = _model_cfg(SEG_CONFIG, beit_checkpoint, arch="beit-smoke")
    model.decode_head.num_classes = model.auxiliary_head.num_classes = 7
    with DefaultScope.overwrite_default_scope("mmseg"):
        segmentor = MODELS.build(model)
    segmentor.init_weights()
    vit = segmentor.backbone.vit
    assert torch.equal(vit.blocks[3].attn.relative_position_bias_table, beit_source.rel_pos_bias.relative_position_bias_table)
    assert torch.equal(vit.blocks[2].mlp.fc1.weight, beit_source.blocks[2].mlp.fc1.weight)
    segmentor.eval()
    with torch.no_grad():
        logits = segmentor(torch.randn(1, 3, 96, 128), mode="tensor")
    assert logits.shape[1] == 7
