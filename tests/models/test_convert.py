"""Checkpoint formats: an encoder export reaches every consumer with exact key accounting."""

from __future__ import annotations

import pytest
import torch

from benchmark.errors import CheckpointError
from benchmark.models.checkpoints.export import load_pretrained, read_checkpoint, read_spec, save_encoder, to_mm
from benchmark.models.vit import create_vit, model_spec


@pytest.fixture()
def exported(tmp_path):
    torch.manual_seed(0)
    vit = create_vit("vit-smoke", 64, num_classes=0)
    path = save_encoder(vit, model_spec("vit-smoke", 64), tmp_path / "encoder.safetensors")
    return vit, path


def test_both_formats_hold_the_same_weights(exported, tmp_path) -> None:
    vit, path = exported
    mm = to_mm(path, tmp_path / "mm_backbone.pth")
    (a, spec_a, fmt_a), (b, spec_b, fmt_b) = read_checkpoint(path), read_checkpoint(mm)
    assert (fmt_a, fmt_b) == ("encoder.safetensors", "mm_backbone.pth")
    assert read_spec(path) == (spec_a, fmt_a) and read_spec(mm) == (spec_b, fmt_b)  # header only, same answer
    assert spec_a == spec_b == {"arch": "vit-smoke", "img_size": 64}
    assert a.keys() == b.keys() == {k for k in vit.state_dict() if not k.startswith("head.")}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(mm, weights_only=True)["meta"]["model"] == spec_a  # plain values only


def test_classifier_loads_export_at_another_resolution(exported) -> None:
    vit, path = exported
    clf = create_vit("vit-smoke", 96, num_classes=7)
    load_pretrained(clf, path, "vit-smoke")
    assert clf.pos_embed.shape[1] == 1 + 6 * 6
    assert torch.equal(clf.blocks[2].mlp.fc1.weight, vit.blocks[2].mlp.fc1.weight)
    # At the pre-training size nothing is resampled and the features are the source's.
    same = create_vit("vit-smoke", 64, num_classes=7)
    load_pretrained(same, path, "vit-smoke")
    x = torch.randn(2, 3, 64, 64)
    vit.eval(), same.eval()
    assert torch.allclose(same.forward_features(x), vit.forward_features(x))


def test_wrong_size_or_garbage_is_rejected(exported, tmp_path) -> None:
    _, path = exported
    with pytest.raises(CheckpointError, match="holds a vit-smoke encoder, the config asks for vit-ti16"):
        load_pretrained(create_vit("vit-ti16", 64, num_classes=2), path, "vit-ti16")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint at all")
    for reader in (read_checkpoint, read_spec):
        with pytest.raises(CheckpointError, match="unknown checkpoint format"):
            reader(junk)


def test_beit_export_fine_tunes_with_a_table_per_block(tmp_path) -> None:
    """A BEiT encoder pre-trained with one shared relative position table fine-tunes as BEiT does:
    the table copied to every block, resized at another image size, no key left over or missing."""
    from benchmark.models.vit import downstream_kwargs

    torch.manual_seed(0)
    beit = create_vit("beit-smoke", 64, num_classes=0).eval()
    path = save_encoder(beit, model_spec("beit-smoke", 64), tmp_path / "encoder.safetensors")
    same = create_vit("beit-smoke", 64, num_classes=6, **downstream_kwargs("beit-smoke")).eval()
    load_pretrained(same, path, "beit-smoke")
    assert same.rel_pos_bias is None and all(b.attn.relative_position_bias_table is not None for b in same.blocks)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(same.forward_features(x), beit.forward_features(x), atol=1e-5)
    larger = create_vit("beit-smoke", 96, num_classes=6, **downstream_kwargs("beit-smoke")).eval()
    load_pretrained(larger, path, "beit-smoke")
    with torch.no_grad():
        assert torch.isfinite(larger(torch.randn(1, 3, 96, 96))).all()
