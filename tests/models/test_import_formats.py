"""Importing published checkpoints (timm/DeiT, MAE, DINO, BEiT, mmpretrain) into our formats.

Every source file is synthesised here from a small timm model of our ``vit-smoke`` / ``beit-smoke``
arch, with its keys renamed as the release names them and the extra keys the release carries
(decoders, heads, mask tokens, prefixes). The import must give exactly the arch's keys and the
source model's features, in timm and in ``ViTPyramid`` (mmdet and mmseg).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
from timm.layers import resize_rel_pos_bias_table
from timm.models.beit import gen_relative_position_index

from benchmark.downstream.mm import ViTPyramid  # noqa: F401  (registers the mm backbone)
from benchmark.downstream.mm.backbone import rel_pos_index
from benchmark.errors import CheckpointError
from benchmark.models.checkpoints.cli import main
from benchmark.models.checkpoints.export import read_checkpoint, save_encoder_state, to_mm
from benchmark.models.checkpoints.geometry import adapt_state_dict, expand_shared_rel_pos, resize_rel_pos_table
from benchmark.models.checkpoints.published import DROPPED, import_checkpoint
from benchmark.models.vit import PER_BLOCK_REL_POS, create_vit, spec_kwargs

SIZE = 64  # pre-training size of the synthetic sources: a 4x4 grid
DIM = 192


def _distinctive(model: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere (timm zero-inits some biases and relative position tables)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()


@pytest.fixture(scope="module")
def vit_src() -> nn.Module:
    """The 'published' ViT: timm vit-smoke with a 5-class head."""
    torch.manual_seed(0)
    return _distinctive(create_vit("vit-smoke", SIZE, num_classes=5), 1)


@pytest.fixture(scope="module")
def vit_global_pool() -> nn.Module:
    """MAE's fine-tuned model (global_pool=True): average pooling, ``fc_norm``, no ``norm``, a head."""
    torch.manual_seed(4)
    return _distinctive(create_vit("vit-smoke", SIZE, num_classes=5, global_pool="avg"), 5)


@pytest.fixture(scope="module")
def vit_student() -> nn.Module:
    torch.manual_seed(1)
    return _distinctive(create_vit("vit-smoke", SIZE, num_classes=0), 2)


@pytest.fixture(scope="module")
def beit_src() -> nn.Module:
    """BEiT's pre-training encoder: shared relative position table, layer-scale, final ``norm``."""
    torch.manual_seed(2)
    return _distinctive(create_vit("beit-smoke", SIZE, num_classes=0, global_pool=""), 3)


@pytest.fixture(scope="module")
def beit_ft_src() -> nn.Module:
    """A fine-tuned BEiT: per-block relative position tables, ``fc_norm`` and a head."""
    torch.manual_seed(3)
    return _distinctive(create_vit("beit-smoke", SIZE, num_classes=5, **PER_BLOCK_REL_POS), 4)


def _sd(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _encoder(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in _sd(model).items() if not k.startswith("head.")}


# ---------------------------------------------------------------------------- release layouts

_TO_MMPRETRAIN = [
    (r"^patch_embed\.proj\.", "patch_embed.projection."),
    (r"^blocks\.(\d+)\.norm1\.", r"layers.\1.ln1."),
    (r"^blocks\.(\d+)\.norm2\.", r"layers.\1.ln2."),
    (r"^blocks\.(\d+)\.attn\.", r"layers.\1.attn."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"layers.\1.ffn.layers.0.0."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"layers.\1.ffn.layers.1."),
    (r"^norm\.", "ln1."),
]


def _mmpretrain_name(key: str) -> str:
    for pattern, repl in _TO_MMPRETRAIN:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return key


def timm_release(m: dict[str, nn.Module]) -> dict[str, Any]:
    return {"model": _sd(m["vit"])}  # DeiT / timm: encoder + classifier head


def deit_bare(m: dict[str, nn.Module]) -> dict[str, Any]:
    return _sd(m["vit"])  # a bare state dict (e.g. pytorch_model.bin)


def mae_release(m: dict[str, nn.Module]) -> dict[str, Any]:
    state = _encoder(m["vit"])
    state.update({
        "mask_token": torch.randn(1, 1, 128),
        "decoder_embed.weight": torch.randn(128, DIM),
        "decoder_embed.bias": torch.randn(128),
        "decoder_pos_embed": torch.randn(1, 17, 128),
        "decoder_blocks.0.attn.qkv.weight": torch.randn(384, 128),
        "decoder_blocks.0.norm1.weight": torch.randn(128),
        "decoder_norm.weight": torch.randn(128),
        "decoder_pred.weight": torch.randn(768, 128),
    })
    return {"model": state, "epoch": 799, "args": argparse.Namespace(model="mae_vit_smoke", mask_ratio=0.75)}


def mae_finetuned_release(m: dict[str, nn.Module]) -> dict[str, Any]:
    state = _sd(m["mae_ft"])
    assert "fc_norm.weight" in state and "norm.weight" not in state  # the layout of MAE's fine-tuned releases
    return {"model": state, "epoch": 99, "args": argparse.Namespace(model="vit_smoke", global_pool=True)}


def _dino_head(prefix: str) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}head.mlp.0.weight": torch.randn(64, DIM),
        f"{prefix}head.mlp.0.bias": torch.randn(64),
        f"{prefix}head.last_layer.weight_g": torch.randn(100, 1),
        f"{prefix}head.last_layer.weight_v": torch.randn(100, 64),
    }


def dino_training(m: dict[str, nn.Module]) -> dict[str, Any]:
    teacher = {f"backbone.{k}": v for k, v in _encoder(m["vit"]).items()} | _dino_head("")
    student = {f"module.backbone.{k}": v for k, v in _encoder(m["student"]).items()} | _dino_head("module.")
    return {
        "teacher": teacher,
        "student": student,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", out_dim=65536, lr=0.0005),
        "dino_loss": {"center": torch.zeros(1, 100)},
    }


def dino_backbone(m: dict[str, nn.Module]) -> dict[str, Any]:
    return _encoder(m["vit"])  # DINO's released backbone-only weights: timm-style keys, no head


def mmpretrain_release(m: dict[str, nn.Module]) -> dict[str, Any]:
    state = {f"backbone.{_mmpretrain_name(k)}": v for k, v in _encoder(m["vit"]).items()}
    state.update({"head.layers.head.weight": torch.randn(5, DIM), "head.layers.head.bias": torch.randn(5)})
    return {"meta": {"mmpretrain_version": "1.2.0", "dataset_meta": {"classes": ("a", "b")}}, "state_dict": state}


def beit_pretrain_release(m: dict[str, nn.Module]) -> dict[str, Any]:
    state = _sd(m["beit"])
    state.update({
        "rel_pos_bias.relative_position_index": gen_relative_position_index((4, 4)),
        "mask_token": torch.randn(1, 1, DIM),
        "lm_head.weight": torch.randn(8192, DIM),
        "lm_head.bias": torch.randn(8192),
    })
    return {"model": state}


def beit_finetuned_release(m: dict[str, nn.Module]) -> dict[str, Any]:
    state = _sd(m["beit_ft"])
    for i in range(4):
        state[f"blocks.{i}.attn.relative_position_index"] = gen_relative_position_index((4, 4))
    return {"model": state}


# name -> (builder, detected source, source model key, keys the import must drop, a block key as the release names it)
FORMATS: dict[str, tuple[Callable[[dict[str, nn.Module]], dict[str, Any]], str, str, set[str], str]] = {
    "timm": (timm_release, "timm", "vit", {"head.weight", "head.bias"}, "blocks.2.mlp.fc1.weight"),
    "deit-bare": (deit_bare, "timm", "vit", {"head.weight", "head.bias"}, "blocks.2.mlp.fc1.weight"),
    "mae": (mae_release, "mae", "vit", {"mask_token", "decoder_embed.weight", "decoder_embed.bias", "decoder_pos_embed",
                                        "decoder_blocks.0.attn.qkv.weight", "decoder_blocks.0.norm1.weight",
                                        "decoder_norm.weight", "decoder_pred.weight"}, "blocks.2.mlp.fc1.weight"),
    "mae-finetuned": (mae_finetuned_release, "mae", "mae_ft", {"head.weight", "head.bias"}, "blocks.2.mlp.fc1.weight"),
    "dino-teacher": (dino_training, "dino:teacher", "vit", set(_dino_head("")), "backbone.blocks.2.mlp.fc1.weight"),
    "dino-backbone": (dino_backbone, "timm", "vit", set(), "blocks.2.mlp.fc1.weight"),
    "mmpretrain": (mmpretrain_release, "mmpretrain", "vit", {"head.layers.head.weight", "head.layers.head.bias"},
                   "backbone.layers.2.ffn.layers.0.0.weight"),
    "beit-pretrain": (beit_pretrain_release, "beit", "beit",
                      {"rel_pos_bias.relative_position_index", "mask_token", "lm_head.weight", "lm_head.bias",
                       "norm.weight", "norm.bias"}, "blocks.2.mlp.fc1.weight"),
    "beit-finetuned": (beit_finetuned_release, "beit", "beit_ft",
                       {"head.weight", "head.bias"} | {f"blocks.{i}.attn.relative_position_index" for i in range(4)},
                       "blocks.2.mlp.fc1.weight"),
}


@pytest.fixture(scope="module")
def models(vit_src, vit_global_pool, vit_student, beit_src, beit_ft_src) -> dict[str, nn.Module]:
    return {"vit": vit_src, "mae_ft": vit_global_pool, "student": vit_student, "beit": beit_src, "beit_ft": beit_ft_src}


@pytest.fixture(scope="module")
def release_files(tmp_path_factory: pytest.TempPathFactory, models) -> dict[str, Path]:
    """Every release layout written with torch.save, as the projects publish them."""
    out = tmp_path_factory.mktemp("releases")
    files = {}
    for name, (build, *_rest) in FORMATS.items():
        files[name] = out / f"{name}.pth"
        torch.save(build(models), files[name])
    return files


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_features(x)


def _last_block(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's tokens (before any final norm)."""
    captured: list[torch.Tensor] = []
    hook = model.blocks[-1].register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        _features(model, x)
    finally:
        hook.remove()
    return captured[0]


# ---------------------------------------------------------------------------- every format


@pytest.mark.parametrize("name", list(FORMATS))
def test_import_is_exact_and_gives_the_source_features(name: str, release_files, models) -> None:
    _, source, model_key, drops, _ = FORMATS[name]
    result = import_checkpoint(release_files[name])  # auto-detected
    assert result.source == source
    arch = "beit-smoke" if model_key.startswith("beit") else "vit-smoke"
    assert result.spec["arch"] == arch and result.spec["img_size"] == SIZE
    assert {k for k, _ in result.dropped} == drops
    if name == "beit-finetuned":
        assert result.spec["rel_pos_bias"] == "per-block"

    model = create_vit(arch, SIZE, num_classes=0, **spec_kwargs(result.spec)).eval()
    model.load_state_dict(result.state, strict=True)  # zero missing, zero unexpected
    src = models[model_key]
    x = torch.randn(2, 3, SIZE, SIZE)
    if name == "beit-pretrain":
        # the release's final norm feeds its lm_head; our encoder stops before it (fc_norm is filled fresh)
        torch.testing.assert_close(src.norm(_features(model, x)), _features(src, x), rtol=0, atol=1e-6)
        assert torch.equal(result.state["fc_norm.weight"], torch.ones(DIM)) and result.notes
    elif name == "mae-finetuned":
        # the release's pooling kept: fc_norm of the mean of the patch tokens, its pooled feature exactly
        assert result.spec["global_pool"] == "avg" and "global_pool" in result.notes[0]
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(pooled, src.forward_head(src.forward_features(x), pre_logits=True), rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(_features(model, x), _features(src, x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_imported_checkpoint_loads_exactly_into_vit_pyramid(name: str, scope: str, release_files, models, tmp_path) -> None:
    from mmengine.registry import DefaultScope

    _, _, model_key, _, _ = FORMATS[name]
    result = import_checkpoint(release_files[name])
    encoder = save_encoder_state(result.state, result.spec, tmp_path / "encoder.safetensors")
    mm = to_mm(encoder, tmp_path / "mm_backbone.pth")
    assert torch.load(mm, weights_only=True)["meta"]["model"] == result.spec
    registry = __import__(f"{scope}.registry", fromlist=["MODELS"]).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        backbone = registry.build(dict(type="ViTPyramid", arch=None, img_size=None, checkpoint=str(mm)))
    backbone.init_weights()  # strict: raises on any missing / unexpected key
    backbone.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        got = backbone.forward_vit(x)[-1]
    want = _last_block(models[model_key], x)[:, 1:].transpose(1, 2).reshape(2, DIM, SIZE // 16, SIZE // 16)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _corrupt(ckpt: dict[str, Any], edit: Callable[[dict[str, torch.Tensor]], None]) -> dict[str, Any]:
    """Applies ``edit`` to the state dict inside a release layout (the teacher for DINO)."""
    for key in ("teacher", "state_dict", "model"):
        if key in ckpt:
            edit(ckpt[key])
            return ckpt
    edit(ckpt)
    return ckpt


@pytest.mark.parametrize("name", list(FORMATS))
def test_corrupted_release_is_refused_naming_the_key(name: str, models) -> None:
    build, _, _, _, block_key = FORMATS[name]
    timm_key = "blocks.2.mlp.fc1.weight"
    missing = _corrupt(build(models), lambda s: s.pop(block_key))
    with pytest.raises(CheckpointError, match=r"missing \[.*'" + re.escape(timm_key)):
        import_checkpoint(missing)
    prefix = block_key[: block_key.index("blocks.")] if "blocks." in block_key else "backbone."
    extra = _corrupt(build(models), lambda s: s.__setitem__(prefix + "extra_token", torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"unexpected \[.*extra_token"):
        import_checkpoint(extra)


def test_dino_student_and_forced_formats(release_files, models) -> None:
    student = import_checkpoint(release_files["dino-teacher"], which="student")
    assert student.source == "dino:student"
    assert all(torch.equal(student.state[k], v) for k, v in _encoder(models["student"]).items())
    forced = import_checkpoint(release_files["dino-backbone"], source="dino", arch="vit-smoke")
    assert forced.source == "dino" and forced.spec == {"arch": "vit-smoke", "img_size": SIZE}
    with pytest.raises(CheckpointError, match="beit-\\* arch, not vit-smoke"):
        import_checkpoint(release_files["beit-pretrain"], arch="vit-smoke")
    with pytest.raises(CheckpointError, match="vit-ti16"):
        import_checkpoint(release_files["timm"], arch="vit-ti16")  # width matches, depth does not


def test_distilled_deit_and_unknown_layouts_are_refused(models) -> None:
    state = _sd(models["vit"])
    state["dist_token"] = torch.zeros(1, 1, DIM)
    state["head_dist.weight"] = torch.zeros(5, DIM)
    with pytest.raises(CheckpointError, match="distilled DeiT"):
        import_checkpoint({"model": state})
    with pytest.raises(CheckpointError, match=r"cannot tell the checkpoint's format.*conv1\.weight"):
        import_checkpoint({"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="no arch has embed dim 96"):
        import_checkpoint({"cls_token": torch.zeros(1, 1, 96), "patch_embed.proj.weight": torch.zeros(96, 3, 16, 16),
                           "blocks.0.norm1.weight": torch.zeros(96)})


def test_dropped_patterns_are_explicit() -> None:
    assert set(DROPPED) == {"timm", "deit", "mae", "dino", "beit", "mmpretrain"}
    assert "decoder_*" in DROPPED["mae"] and "lm_head.*" in DROPPED["beit"] and "head.*" in DROPPED["dino"]


# ---------------------------------------------------------------------------- BEiT relative position bias


def test_shared_table_expanded_per_block_gives_identical_outputs(beit_src) -> None:
    state = import_checkpoint(beit_pretrain_release({"beit": beit_src})).state
    shared = create_vit("beit-smoke", SIZE, num_classes=0).eval()
    shared.load_state_dict(state, strict=True)
    per_block = create_vit("beit-smoke", SIZE, num_classes=0, **PER_BLOCK_REL_POS).eval()
    adapted = dict(state)
    notes = adapt_state_dict(adapted, per_block)
    assert notes == ["shared relative position table copied to each of 4 blocks"]
    per_block.load_state_dict(adapted, strict=True)
    x = torch.randn(2, 3, SIZE, SIZE)
    torch.testing.assert_close(_features(per_block, x), _features(shared, x), rtol=1e-5, atol=1e-5)
    expanded = expand_shared_rel_pos(state, 4)
    assert "rel_pos_bias.relative_position_bias_table" not in expanded
    assert all(torch.equal(expanded[f"blocks.{i}.attn.relative_position_bias_table"],
                           state["rel_pos_bias.relative_position_bias_table"]) for i in range(4))


def test_larger_resolution_resizes_tables_and_runs(beit_src) -> None:
    state = import_checkpoint(beit_pretrain_release({"beit": beit_src})).state
    table = state["rel_pos_bias.relative_position_bias_table"]
    model = create_vit("beit-smoke", 128, num_classes=3, **PER_BLOCK_REL_POS).eval()
    notes = adapt_state_dict(state, model)
    assert "4 relative position table(s) resized 4x4 -> 8x8" in notes
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert unexpected == [] and sorted(missing) == ["head.bias", "head.weight"]
    resized = state["blocks.0.attn.relative_position_bias_table"]
    assert resized.shape == (15 * 15 + 3, 3)
    assert torch.equal(resized[-3:], table[-3:])  # cls rows kept
    center = lambda t, side: t[:-3].view(side, side, -1)[side // 2, side // 2]  # noqa: E731
    torch.testing.assert_close(center(resized, 15), center(table, 7))  # offset (0, 0) keeps its bias
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128))
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_per_block_checkpoint_into_shared_model_is_refused(beit_ft_src) -> None:
    state = import_checkpoint(beit_finetuned_release({"beit_ft": beit_ft_src})).state
    with pytest.raises(CheckpointError, match="downstream_kwargs"):
        adapt_state_dict(dict(state), create_vit("beit-smoke", SIZE, num_classes=0))


@pytest.mark.filterwarnings("ignore::UserWarning")  # timm's interpolator, used as the reference
def test_resize_rel_pos_table_in_torch() -> None:
    table = torch.randn(27 * 27 + 3, 4)
    assert resize_rel_pos_table(table, 14, 14) is table
    small = resize_rel_pos_table(table, 14, 8)  # shrinking keeps the central offsets exactly
    assert torch.equal(small[:-3], table[:-3].view(27, 27, 4)[6:21, 6:21].reshape(-1, 4))
    big = resize_rel_pos_table(table, 14, 24)  # growing: BEiT's interpolation, as timm computes it
    want = resize_rel_pos_bias_table(table, (24, 24), (47 * 47 + 3, 4))
    torch.testing.assert_close(big, want, rtol=1e-5, atol=1e-5)
    wide = resize_rel_pos_table(table.requires_grad_(), (14, 14), (10, 20))  # non-square, differentiable
    assert wide.shape == (19 * 39 + 3, 4)
    wide.sum().backward()
    assert table.grad is not None and table.grad.abs().sum() > 0
    with pytest.raises(CheckpointError, match="window 5x5"):
        resize_rel_pos_table(torch.zeros(10, 2), 5, 6)


def test_rel_pos_index_matches_timm_and_crops() -> None:
    assert torch.equal(rel_pos_index((4, 6), (4, 6)), gen_relative_position_index((4, 6)))
    full = gen_relative_position_index((5, 5))
    crop = rel_pos_index((3, 3), (5, 5))
    # the 3x3 grid's tokens are (0..2, 0..2) of the 5x5 one: same table rows for the same offsets
    keep = torch.tensor([0] + [1 + r * 5 + c for r in range(3) for c in range(3)])
    assert torch.equal(crop, full[keep][:, keep])


# ---------------------------------------------------------------------------- command line


def test_cli_import_then_mm(release_files, tmp_path, capsys) -> None:
    out = tmp_path / "mae.safetensors"
    assert main(["import", str(release_files["mae"]), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "source format: mae" in printed and "decoder_*: 7 key(s)" in printed and "mask_token: 1 key(s)" in printed
    state, spec, fmt = read_checkpoint(out)
    assert fmt == "encoder.safetensors" and spec == {"arch": "vit-smoke", "img_size": SIZE}
    assert main(["mm", str(out), str(tmp_path / "a.pth")]) == 0  # named sub-command
    assert main([str(out), str(tmp_path / "b.pth")]) == 0  # the original form
    assert read_checkpoint(tmp_path / "b.pth")[0].keys() == state.keys()
    assert main(["import", str(release_files["dino-teacher"]), str(tmp_path / "s.safetensors"), "--which", "student",
                 "--from", "dino", "--arch", "vit-smoke"]) == 0
    assert "dino:student" in capsys.readouterr().out
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}}, bad)
    assert main(["import", str(bad), str(tmp_path / "x.safetensors")]) == 2
    assert "cannot tell the checkpoint's format" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


class _Payload:
    """Unpickling it would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused_naming_the_global(tmp_path) -> None:
    marker = tmp_path / "ran"
    torch.save({"model": {"cls_token": _Payload(marker)}}, tmp_path / "release.pth")
    with pytest.raises(CheckpointError, match=r"not readable as a weights-only torch checkpoint \(.*GLOBAL posix\.system"):
        import_checkpoint(tmp_path / "release.pth")
    assert not marker.exists()


def test_a_forced_mae_or_dino_import_of_a_plain_timm_state_says_so(release_files) -> None:
    for source in ("mae", "dino"):
        result = import_checkpoint(release_files["deit-bare"], source=source)
        assert result.source == source
        assert any(note.startswith(f"no {source.upper()}-specific key in the file (a plain timm state dict)")
                   for note in result.notes), result.notes
    assert not import_checkpoint(release_files["mae"], source="mae").notes  # an MAE release shows its decoder


def test_an_mae_fine_tuned_release_gives_the_official_models_feature(tmp_path) -> None:
    """Golden values from MAE's own models_vit.VisionTransformer(global_pool=True) (tests/golden/README.md):
    the same weights imported (auto-detected) give its feature, fc_norm of the mean of the patch tokens,
    to float precision, and its head on that feature its classes. The class token after a final
    norm, as MAE's fine-tuned releases were imported before, gives another feature."""
    import importlib.util
    import json

    from safetensors import safe_open

    from benchmark.models.checkpoints.export import save_encoder_state
    from benchmark.models.vit import pooled_features, spec_kwargs

    golden = Path(__file__).resolve().parents[1] / "golden"
    spec = importlib.util.spec_from_file_location("golden_record", golden / "record.py")
    record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record)
    with safe_open(str(golden / "mae_vit.safetensors"), framework="pt") as fh:
        shapes, values = json.loads(fh.metadata()["shapes"]), {k: fh.get_tensor(k) for k in fh.keys()}
    release = record.seeded_state(shapes, record.MAE_VIT["seed"])  # the weights the official model ran with
    torch.save({"model": release, "epoch": 99}, tmp_path / "mae_finetuned.pth")
    imported = import_checkpoint(tmp_path / "mae_finetuned.pth")
    assert imported.source == "mae" and imported.spec == {"arch": "vit-smoke", "img_size": 32, "global_pool": "avg"}
    save_encoder_state(imported.state, imported.spec, tmp_path / "encoder.safetensors")
    encoder = create_vit("vit-smoke", 32, num_classes=0, **spec_kwargs(imported.spec)).eval()
    encoder.load_state_dict(imported.state, strict=True)
    with torch.no_grad():
        feature = pooled_features(encoder, values["mae_vit_images"])
        logits = feature @ release["head.weight"].T + release["head.bias"]
    torch.testing.assert_close(feature, values["mae_vit_features"], rtol=0, atol=1e-5)
    assert torch.equal(logits.argmax(1), values["mae_vit_logits"].argmax(1))
    # the earlier import (fc_norm as the final norm, the class token): not the official feature
    token = create_vit("vit-smoke", 32, num_classes=0).eval()
    earlier = {("norm." + k[len("fc_norm."):] if k.startswith("fc_norm.") else k): v for k, v in imported.state.items()}
    token.load_state_dict(earlier, strict=True)
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(pooled_features(token, values["mae_vit_images"]),
                                                       values["mae_vit_features"])
    assert cosine.max() < 0.95
