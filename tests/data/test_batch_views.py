"""Views made for whole batches from a set held in memory (benchmark.data.batch_views), run here on
the CPU: their random parameters follow the per-image transforms' distributions (crop area and
aspect, positions, the centre-crop fallback, flip rate, jitter ranges and order), each operation
equals torchvision's on the same parameters, whole views match the PIL path in distribution, a
batch is a function of its rows and seed, and pre-training learns with it (every method's
pre-training and fine-tuning resume bit for bit with it: tests/methods/test_contract.py,
tests/stages/test_finetune.py)."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F

from benchmark.data.augment import Augmentation, ViewSpec, single_crop_spec, single_crop_transform
from benchmark.data.batch_views import (
    BatchViews,
    DeviceBatches,
    DeviceImages,
    color_jitter,
    crop_resize,
    draw_crops,
    draw_view,
    eval_view,
    gaussian_blur,
    grayscale,
    shift_hue,
)
from benchmark.data.fashion_mnist import FashionMNIST
from benchmark.errors import ConfigError
from benchmark.methods import build_method
from benchmark.methods.views import TwoViews
from benchmark.models.vit import create_vit
from benchmark.stages.pretrain import PretrainConfig, pretrain
from benchmark.utils.io import read_log

N = 4000          # draws per distribution comparison
P_MIN = 1e-3      # a two-sample KS test rejects equal distributions below this p-value


def _torchvision_crops(h: int, w: int, scale: tuple[float, float], count: int) -> torch.Tensor:
    torch.manual_seed(0)
    image = torch.empty(1, h, w, device="meta")
    return torch.tensor([T.RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3]) for _ in range(count)],
                        dtype=torch.float64)


@pytest.mark.parametrize("h, w, scale", [(28, 28, (0.4, 1.0)), (28, 28, (0.05, 0.4)), (64, 48, (0.08, 1.0)),
                                         (10, 60, (0.8, 1.0))])  # the last mostly falls back to the centre crop
def test_crops_follow_torchvisions_rule(h, w, scale) -> None:
    ours = draw_crops(torch.full((N,), h), torch.full((N,), w), scale, torch.Generator().manual_seed(1)).double()
    theirs = _torchvision_crops(h, w, scale, N)
    for name, pick in (("area share", lambda c: c[:, 2] * c[:, 3] / (h * w)),
                       ("log aspect", lambda c: torch.log(c[:, 3] / c[:, 2])),
                       ("top", lambda c: (c[:, 0] + c[:, 2] / 2) / h), ("left", lambda c: (c[:, 1] + c[:, 3] / 2) / w)):
        assert ks_2samp(pick(ours).numpy(), pick(theirs).numpy()).pvalue > P_MIN, name
    inside = (ours[:, 0] >= 0) & (ours[:, 1] >= 0) & (ours[:, 0] + ours[:, 2] <= h) & (ours[:, 1] + ours[:, 3] <= w)
    assert bool(inside.all()) and bool((ours[:, 2:] > 0).all())


def test_flips_jitter_and_order_follow_the_specs_probabilities_and_ranges() -> None:
    spec = ViewSpec(16, (0.5, 1.0), hflip=0.3, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, gray_p=0.2, blur_p=0.5,
                    blur_sigma=(0.1, 2.0), solarize_p=0.2)
    params = draw_view(spec, torch.full((N,), 28), torch.full((N,), 28), torch.Generator().manual_seed(2))
    noise = 4 * math.sqrt(0.25 / N)  # four standard errors of a rate
    for key, p in (("flip", 0.3), ("jitter", 0.8), ("gray", 0.2), ("blur", 0.5), ("solarize", 0.2)):
        assert abs(float(params[key].float().mean()) - p) < noise, key
    uniform = np.random.default_rng(0).uniform
    for column, (low, high) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]):
        values = params["factors"][:, column].numpy()
        assert low <= values.min() and values.max() <= high
        assert ks_2samp(values, uniform(low, high, N)).pvalue > P_MIN
    assert ks_2samp(params["sigma"].numpy(), uniform(0.1, 2.0, N)).pvalue > P_MIN
    orders = [tuple(row) for row in params["order"].tolist()]
    counts = [orders.count(p) for p in permutations(range(4))]
    assert min(counts) > N / 24 * 0.6 and max(counts) < N / 24 * 1.4  # every order, about equally often


def test_each_operation_equals_torchvisions_on_the_same_parameters() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 12, 12)
    factors = torch.tensor([[1.3, 0.7, 1.2, 0.05]] * 3 + [[0.8, 1.4, 0.6, -0.08]] * 3)
    orders = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]] * 2)
    ours = color_jitter(images, factors, orders, torch.tensor([True] * 5 + [False]))
    ops = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    for i in range(6):
        expected = images[i]
        for op in orders[i].tolist() if i < 5 else []:
            expected = ops[op](expected, float(factors[i, op]))
        assert torch.allclose(ours[i], expected, atol=1e-5), i
    assert torch.allclose(shift_hue(images, torch.zeros(6)), images, atol=1e-5)
    assert torch.allclose(grayscale(images), F.rgb_to_grayscale(images), atol=1e-6)
    blurred = gaussian_blur(images, torch.tensor([0.5, 1.0, 1.5, 0.7, 2.0, 0.3]), radius=6)
    for i, sigma in enumerate([0.5, 1.0, 1.5, 0.7, 2.0, 0.3]):
        reference = F.gaussian_blur(images[i], [13, 13], [sigma, sigma])  # reflect padding: compare the interior
        assert torch.allclose(blurred[i, :, 6:-6, 6:-6], reference[:, 6:-6, 6:-6], atol=1e-5)
    # An enlarged crop is bilinear resizing, as torchvision's resized_crop without antialiasing,
    # except where an output pixel falls within half a source pixel of the crop's edge: roi_align
    # reads the pixels just outside the crop there, where resized_crop repeats the crop's edge.
    pixels = (torch.rand(3, 1, 28, 28) * 255).round().to(torch.uint8)
    crops = torch.tensor([[3, 5, 14, 11], [0, 0, 28, 28], [10, 2, 9, 20]])
    resized = crop_resize(pixels, crops, 32)
    for i, (top, left, h, w) in enumerate(crops.tolist()):
        reference = F.resized_crop(pixels[i].float() / 255, top, left, h, w, [32, 32], antialias=False)
        inside_h = ((torch.arange(32) + 0.5) * h / 32 - 0.5).clamp(-1, h).sub(h - 1).le(0) & \
            ((torch.arange(32) + 0.5) * h / 32).ge(0.5)
        inside_w = ((torch.arange(32) + 0.5) * w / 32).ge(0.5) & ((torch.arange(32) + 0.5) * w / 32).le(w - 0.5)
        inner = inside_h.view(-1, 1) & inside_w.view(1, -1)
        assert inner.float().mean() > 0.75
        assert torch.allclose(resized[i][:, inner], reference[:, inner], atol=1e-5)


def _pil_items(count: int) -> list[Image.Image]:
    """Items like Fashion-MNIST's: a bright garment-like shape on black, varied in place and size."""
    rng = np.random.default_rng(0)
    items = []
    for _ in range(count):
        pixels = np.zeros((28, 28), np.uint8)
        top, left, h, w = rng.integers(2, 8), rng.integers(2, 8), rng.integers(10, 18), rng.integers(8, 18)
        pixels[top:top + h, left:left + w] = rng.integers(120, 255)
        items.append(Image.fromarray(pixels, mode="L").convert("RGB"))
    return items


@pytest.mark.parametrize("kind", ["single crop", "byol"])
def test_whole_views_match_the_pil_path_in_distribution(kind) -> None:
    items = _pil_items(64)
    aug = Augmentation(32, (0.4, 1.0), 0.4, 0.5)
    if kind == "single crop":
        specs, pil = [single_crop_spec(aug)], [single_crop_transform(aug)]
    else:
        two = TwoViews(32, (0.4, 1.0), 0.4, 0.5, (0.0143, 0.286))
        specs, pil = two.specs, two.views
    store = DeviceImages(torch.from_numpy(np.stack([np.asarray(i)[:, :, 0] for i in items])).unsqueeze(1),
                         torch.full((64,), 28), torch.full((64,), 28), torch.zeros(64, dtype=torch.int64))
    rows = torch.arange(1024) % 64
    torch.manual_seed(0)
    for spec, transform in zip(specs, pil):
        ours = BatchViews(spec)(store, rows, torch.Generator().manual_seed(3))
        theirs = torch.stack([transform(items[i]) for i in rows.tolist()])
        # Per view: its mean brightness (crop share of garment, jitter) and its spread (contrast,
        # blur); the two samples of 1,024 must not be told apart.
        for stat in (lambda v: v.mean((1, 2, 3)), lambda v: v.std((1, 2, 3)), lambda v: v[:, 0] - v[:, 1]):
            a, b = stat(ours).flatten().numpy(), stat(theirs).flatten().numpy()
            assert ks_2samp(a[:: max(1, len(a) // 4000)], b[:: max(1, len(b) // 4000)]).pvalue > P_MIN


def test_a_batch_is_a_function_of_its_rows_and_seed_and_a_resumed_stream_repeats_it(make_fashion_mnist, tmp_path) -> None:
    data = FashionMNIST(make_fashion_mnist(tmp_path / "fm", train=120, test=20), "train")
    store = DeviceImages.from_dataset(data, list(range(len(data))), torch.device("cpu"))
    assert store.pixels.shape == (len(data), 1, 28, 28) and torch.equal(store.pixels[5, 0], torch.from_numpy(data.images[5]))
    views = BatchViews(TwoViews(32, (0.4, 1.0)).specs)
    whole = DeviceBatches(store, views, seed=4, micro_batch=16)
    batches = [whole(step) for step in range(6)]
    resumed = DeviceBatches(store, views, seed=4, micro_batch=16, start=3 * 16)
    for step in range(3, 6):
        assert all(torch.equal(a, b) for a, b in zip(batches[step], resumed(step)))
    assert not torch.equal(batches[0][0], batches[1][0])
    full = eval_view(store, torch.arange(4), 32)
    reference = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BILINEAR), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    expected = torch.stack([reference(data[i][0]) for i in range(4)])
    assert (full - expected).abs().mean() < 0.02  # PIL's resize rounds to bytes and filters a little wider


def test_a_set_too_large_for_the_device_is_refused_in_one_line(make_fashion_mnist, tmp_path) -> None:
    data = FashionMNIST(make_fashion_mnist(tmp_path / "fm", train=120, test=20), "train")
    with pytest.raises(ConfigError, match="GiB of pixels.*images_on_device"):
        DeviceImages.from_dataset(data, list(range(len(data))), torch.device("cpu"), max_gib=1e-6)


def test_an_image_folder_of_different_sizes_is_padded_and_cropped_inside_each_image(tmp_path) -> None:
    from benchmark.data.folders import ImageFiles

    for i, (h, w) in enumerate([(20, 30), (40, 16), (33, 33)]):
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 50 + 60 * i, np.uint8)).save(tmp_path / "c" / f"{i}.png")
    store = DeviceImages.from_dataset(ImageFiles(tmp_path), [0, 1, 2], torch.device("cpu"))
    assert store.pixels.shape == (3, 3, 40, 33) and store.heights.tolist() == [20, 40, 33]
    crops = draw_crops(store.heights.repeat(200), store.widths.repeat(200), (0.08, 1.0), torch.Generator())
    assert bool((crops[:, 0] + crops[:, 2] <= store.heights.repeat(200)).all())
    assert bool((crops[:, 1] + crops[:, 3] <= store.widths.repeat(200)).all())
    # a constant image's view is its one colour, never the padding's black
    view = BatchViews(ViewSpec(8, (0.08, 1.0), jitter_p=0.0))(store, torch.tensor([0, 1, 2] * 10),
                                                             torch.Generator().manual_seed(0))
    grey = view * 0.229 + 0.485  # the red channel, un-normalised
    expected = (torch.tensor([50.0, 110.0, 170.0] * 10) / 255).view(-1, 1, 1)
    assert torch.allclose(grey[:, 0], expected.expand(-1, 8, 8), atol=1e-4)


def test_pretraining_on_the_device_learns(make_fashion_mnist, tmp_path) -> None:
    root = make_fashion_mnist(tmp_path / "fm", train=480, test=20)
    cfg = PretrainConfig(data_root=str(root), dataset="fashion-mnist", method="mae",
                         method_args={"decoder_dim": 64, "decoder_depth": 1, "decoder_heads": 4}, arch="vit-mini",
                         img_size=32, steps=60, batch_size=32, blr=4e-3, warmup_steps=5, drop_path=0.0,
                         log_every=1, images_on_device=True)
    pretrain(cfg, tmp_path / "run")
    losses = [r["loss"] for r in read_log(tmp_path / "run")]
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def test_supervised_with_randaugment_has_no_batched_form() -> None:
    model = build_method("supervised", create_vit("vit-mini", 32), num_classes=10)
    with pytest.raises(ConfigError, match="rand_augment"):
        model.view_specs(Augmentation(32))
