"""JPEG decoding and augmentation on the device (benchmark.data.device_decode), run here on the CPU:
the same output as the PIL path in distribution, a pure function of the items' seeds, and a
pre-training that trains and resumes with it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torchvision.io import read_file

from benchmark.data.augment import Augmentation
from benchmark.data.device_decode import DeviceAugment, EncodedImages, collate_encoded
from benchmark.data.folders import ImageFiles, mix_seed, open_image
from benchmark.errors import DataError
from benchmark.methods import method_class
from benchmark.methods.base import PretrainMethod, supports_device_decode
from benchmark.stages.pretrain import PretrainConfig, main, pretrain
from benchmark.utils.io import read_log

CPU = torch.device("cpu")
COLOUR = (200, 80, 30)


def _jpegs(root: Path, count: int, constant: bool = False) -> Path:
    """``count`` JPEGs of varied sizes below ``root/<class>/``: noise, or one constant colour."""
    rng = np.random.default_rng(0)
    for i in range(count):
        shape = (40 + 3 * i % 17, 48 + 5 * i % 23, 3)
        pixels = np.full(shape, COLOUR, np.uint8) if constant else rng.integers(0, 256, shape, dtype=np.uint8)
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=95)
    return root


def _batch(root: Path, aug: Augmentation, seeds: list[int]) -> torch.Tensor:
    files = ImageFiles(root).files
    return DeviceAugment(aug)([read_file(str(files[i % len(files)])) for i in range(len(seeds))], seeds, CPU)


@pytest.mark.parametrize("color_jitter", [0.0, 0.4])
def test_a_constant_colour_comes_out_as_the_pil_path_s(color_jitter, tmp_path) -> None:
    root = _jpegs(tmp_path / "images", 4, constant=True)
    aug = Augmentation(16, (0.2, 1.0), color_jitter, 0.5)
    seeds = list(range(512))
    device = _batch(root, aug, seeds)
    assert device.shape == (512, 3, 16, 16) and device.dtype == torch.float32
    pil_tf = PretrainMethod.train_transform(None, aug)  # type: ignore[arg-type]
    files = ImageFiles(root).files
    torch.manual_seed(0)
    pil = torch.stack([pil_tf(open_image(files[i % len(files)])) for i in seeds])
    # Per image one colour; over the batch, per channel, the same mean and spread as the PIL path.
    # Two independent samples of 512: with jitter the per-image colours spread by up to 0.8, so
    # their means differ by 0.05 and their spreads by 0.035 (one standard error); the bounds are
    # three of those. (Without jitter, or with it misapplied, the spread would be near 0.)
    per_image_device, per_image_pil = device.mean((2, 3)), pil.mean((2, 3))
    assert torch.allclose(per_image_device.mean(0), per_image_pil.mean(0), atol=0.15)
    assert torch.allclose(per_image_device.std(0), per_image_pil.std(0), atol=0.1)
    assert device.std((2, 3)).max() < 0.02  # a crop of one colour is one colour
    if color_jitter == 0:
        expected = (torch.tensor(COLOUR) / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
        assert torch.allclose(per_image_device.mean(0), expected, atol=0.05)


def test_a_batch_is_a_function_of_its_seeds(tmp_path) -> None:
    root = _jpegs(tmp_path / "images", 6)
    aug = Augmentation(24, (0.08, 1.0), 0.4, 0.5)
    seeds = [mix_seed(0, 0, i) for i in range(6)]
    first, again = _batch(root, aug, seeds), _batch(root, aug, seeds)
    assert torch.equal(first, again)
    other = _batch(root, aug, [mix_seed(1, 0, i) for i in range(6)])
    assert all(not torch.equal(a, b) for a, b in zip(first, other))


def test_items_are_undecoded_bytes_with_their_seed_and_label(tmp_path) -> None:
    root = _jpegs(tmp_path / "images", 4)
    from benchmark.data.folders import image_folder

    data = EncodedImages(image_folder(root), seed=7, indices=[1, 3])
    jpeg, seed, label = data[(2, 1)]
    assert jpeg.dtype == torch.uint8 and jpeg.ndim == 1 and torch.equal(jpeg, read_file(str(data.paths[1])))
    assert seed == mix_seed(7, 2, 1) and label == 1
    batch = collate_encoded([data[(0, 0)], data[(0, 1)]])  # the bytes end to end: one tensor per batch
    assert batch.data.ndim == 1 and batch.seeds.tolist() == [mix_seed(7, 0, 0), mix_seed(7, 0, 1)]
    assert all(torch.equal(a, data[(0, i)][0]) for i, a in enumerate(batch.images())) and batch.labels.tolist() == [0, 1]


def test_a_file_that_is_not_a_jpeg_is_one_data_error_naming_it(tmp_path) -> None:
    root = _jpegs(tmp_path / "images", 2)
    png = root / "c0" / "x.png"
    Image.new("RGB", (8, 8)).save(png)
    with pytest.raises(DataError, match=rf"^{png}: not a JPEG"):
        EncodedImages(ImageFiles(root), seed=0)
    png.rename(root / "c0" / "x.jpg")  # a PNG under a JPEG's name: found when read
    data = EncodedImages(ImageFiles(root), seed=0)
    with pytest.raises(DataError, match=r"x\.jpg: not a JPEG file \(its content\)"):
        [data[i] for i in range(len(data))]


def test_only_methods_of_the_base_transform_are_supported() -> None:
    assert [name for name in ("splitmask", "beit", "mae", "dino", "byol", "supervised")
            if supports_device_decode(method_class(name))] == ["splitmask", "beit", "mae"]


def _config(root: Path, **overrides) -> PretrainConfig:
    values = dict(data_root=str(root), method="splitmask", method_args={"vocab_size": 16}, arch="vit-smoke",
                  img_size=32, steps=6, batch_size=8, blr=4e-3, warmup_steps=1, drop_path=0.1, checkpoint_every=3,
                  log_every=1, seed=2, num_workers=0, decode_on_device=True)
    return PretrainConfig(**{**values, **overrides})


def test_pretraining_decodes_on_the_device_trains_and_resumes_to_the_same_weights(tmp_path,
                                                                                   pretrain_to_first_checkpoint) -> None:
    cfg = _config(_jpegs(tmp_path / "images", 16))
    pretrain(cfg, tmp_path / "whole")
    losses = [r["loss"] for r in read_log(tmp_path / "whole")]
    assert len(losses) == 6 and all(np.isfinite(losses)) and losses[-1] < losses[0]

    pretrain_to_first_checkpoint(cfg, tmp_path / "resumed")
    cfg.num_workers = 2  # workers read the bytes; the batch is the same
    pretrain(cfg, tmp_path / "resumed")
    a = load_file(str(tmp_path / "whole" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "encoder.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in read_log(tmp_path / "resumed")] == losses


@pytest.mark.parametrize("method, args, message", [
    ("dino", {}, "error: decode_on_device supports the methods of the single-crop augmentation only "
                 "(splitmask, beit, mae), not dino"),
    ("splitmask", {"vocab_size": 16}, "not a JPEG; decode_on_device decodes JPEG files only"),
])
def test_decode_on_device_refused_before_anything_is_written(method, args, message, tmp_path, capsys) -> None:
    root = _jpegs(tmp_path / "images", 8)
    Image.new("RGB", (8, 8)).save(root / "c1" / "z.png")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(asdict(_config(root, method=method, method_args=args))))
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()
