"""Data sets held in memory on the training device, and augmented views made in whole batches there.

For small data sets (Fashion-MNIST, its scenes, the digits, any ImageFolder that fits) the per-image
path, PIL transforms in DataLoader workers, cannot keep a GPU busy: the model's step takes a few
milliseconds for thousands of images. Here instead:

- :class:`DeviceImages` holds a whole set as one uint8 tensor (N, C, H, W) on the device (images of
  different sizes padded to the largest by repeating their edges, each with its own height and
  width), with its labels;
- :class:`BatchViews` makes each view of a :class:`~benchmark.data.augment.ViewSpec` for a whole
  batch at once: the random resized crops as one ``roi_align`` over per-image boxes (bilinear;
  where a crop shrinks, the average of several bilinear samples per output pixel, so that it does
  not alias), then flip, colour jitter (brightness, contrast, saturation and hue in a random order
  per image), greyscale, Gaussian blur, solarisation and normalisation as tensor arithmetic with
  one parameter per image.

Every random parameter is drawn by the rules of torchvision's transforms (``RandomResizedCrop``'s
ten tries, ``ColorJitter``'s ranges and random order, the probabilities) from one CPU generator
that the caller seeds per batch (the pre-training stage: by seed, step, process and micro-step), and
only then moved to the device. So a batch is a function of its indices and its seed: a resumed run
repeats it, and the same batch made on the CPU and on a GPU differs only by floating point. The
views follow the PIL path's distribution, not its random stream (tests/data/test_batch_views.py
compares the two).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import roi_align

from benchmark.data.augment import RATIO, ViewSpec
from benchmark.data.folders import EpochSampler, SkipCorrupt, mix_seed
from benchmark.errors import ConfigError

CROP_TRIES = 10                       # torchvision's RandomResizedCrop.get_params
MAX_GIB = 16.0                        # the largest set held on the device (our choice: a quarter of a 64 GB GPU)
LOAD_BATCH = 256                      # images decoded per worker batch when a set is read into memory
VIEW_STREAM = 1                       # salts the views' random stream apart from a method's own (masks), which
                                      # the pre-training stage seeds by the same (seed, step, process)


# ------------------------------------------------------------------------------------------------
# The data set in memory
# ------------------------------------------------------------------------------------------------
@dataclass
class DeviceImages:
    """A data set as one uint8 tensor on ``device``: ``pixels`` (N, C, H, W), C 1 (greyscale) or 3,
    padded at the bottom and right where images differ in size; ``heights``/``widths`` (N,) the
    size of each; ``labels`` (N,) int64 (0 where the set has none)."""

    pixels: torch.Tensor
    heights: torch.Tensor
    widths: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    @classmethod
    def from_dataset(cls, dataset: Dataset, indices: Sequence[int], device: torch.device, *, workers: int = 0,
                     max_gib: float = MAX_GIB, skip_log: Any = None) -> DeviceImages:
        """Items ``indices`` of ``dataset`` (``(PIL image, label)`` items; a set that keeps its pixels
        as a uint8 array, Fashion-MNIST's ``images``, is copied without decoding). A set larger than
        ``max_gib`` is a one-line :class:`ConfigError`; corrupt images are replaced as the per-image
        path replaces them (:class:`~benchmark.data.folders.SkipCorrupt`)."""
        indices = list(indices)
        targets = getattr(dataset, "targets", None)
        labels = torch.tensor([int(targets[i]) for i in indices] if targets is not None else [0] * len(indices),
                              dtype=torch.int64)
        array = getattr(dataset, "images", None)
        if isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.ndim in (3, 4):
            _check_size(len(indices) * int(np.prod(array.shape[1:])), max_gib, dataset)
            chosen = torch.from_numpy(np.ascontiguousarray(array[indices]))
            pixels = chosen.unsqueeze(1) if array.ndim == 3 else chosen.permute(0, 3, 1, 2)
            n, _, h, w = pixels.shape
            return cls(pixels.contiguous().to(device), torch.full((n,), h), torch.full((n,), w), labels.to(device))
        return cls._decode(dataset, indices, labels, device, workers, max_gib, skip_log)

    @classmethod
    def _decode(cls, dataset: Dataset, indices: list[int], labels: torch.Tensor, device: torch.device, workers: int,
                max_gib: float, skip_log: Any) -> DeviceImages:
        reader = _Decoded(dataset, indices, skip_log)
        loader = DataLoader(reader, batch_size=LOAD_BATCH, num_workers=workers, collate_fn=list)
        arrays: list[np.ndarray] = []
        nbytes = 0
        for chunk in loader:
            arrays.extend(chunk)
            nbytes += sum(a.nbytes for a in chunk)
            _check_size(nbytes, max_gib, dataset)  # a set too large stops while it is read, not after
            if len(arrays) % (20 * LOAD_BATCH) < LOAD_BATCH:
                print(f"[data] read {len(arrays)}/{len(indices)} images into memory", file=sys.stderr, flush=True)
        heights = torch.tensor([a.shape[0] for a in arrays])
        widths = torch.tensor([a.shape[1] for a in arrays])
        h, w = int(heights.max()), int(widths.max())
        _check_size(len(arrays) * 3 * h * w, max_gib, dataset)
        pixels = torch.empty(len(arrays), 3, h, w, dtype=torch.uint8)
        for row, array in enumerate(arrays):
            # padded by repeating the last row and column: a crop at the image's edge reads (as
            # roi_align reads past a crop's edge) the edge, as it would at the tensor's own edge
            image = torch.from_numpy(np.array(array)).permute(2, 0, 1)
            pixels[row] = nnf.pad(image.unsqueeze(0).float(), (0, w - image.shape[2], 0, h - image.shape[1]),
                                  mode="replicate")[0].to(torch.uint8)
        return cls(pixels.to(device), heights, widths, labels.to(device))

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pixels (B, C, H, W), heights, widths (CPU) and labels (device) of ``rows``."""
        on_device = rows.to(self.device)
        return self.pixels[on_device], self.heights[rows], self.widths[rows], self.labels[on_device]


class _Decoded(Dataset):
    """Item ``k``: the (H, W, 3) uint8 pixels of ``dataset[indices[k]]``, a corrupt image replaced."""

    def __init__(self, dataset: Dataset, indices: list[int], skip_log: Any) -> None:
        self.dataset, self.indices, self.corrupt = dataset, indices, SkipCorrupt(skip_log)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> np.ndarray:
        image, _ = self.corrupt.read(lambda i: self.dataset[self.indices[i]], k, len(self.indices))
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _check_size(nbytes: int, max_gib: float, dataset: Dataset) -> None:
    if nbytes > max_gib * 2**30:
        raise ConfigError(f"{type(dataset).__name__}: {nbytes / 2**30:.1f} GiB of pixels, more than the {max_gib:g} GiB "
                          "held on the device; set images_on_device to false to stream it from disk")


# ------------------------------------------------------------------------------------------------
# Random parameters, drawn on the CPU by torchvision's rules
# ------------------------------------------------------------------------------------------------
def draw_crops(heights: torch.Tensor, widths: torch.Tensor, scale: Sequence[float], generator: torch.Generator,
               ratio: Sequence[float] = RATIO) -> torch.Tensor:
    """(B, 4) crops ``(top, left, height, width)`` by ``RandomResizedCrop.get_params``'s rule: ten
    tries of an area share in ``scale`` and a log-uniform aspect ratio, the first that fits, else
    the centre crop of the clamped ratio."""
    b = heights.shape[0]
    h_img, w_img = heights.double().unsqueeze(1), widths.double().unsqueeze(1)
    area = h_img * w_img * torch.empty(b, CROP_TRIES, dtype=torch.float64).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(b, CROP_TRIES, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                         generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((b,), -1, dtype=torch.int64))
    position = torch.rand(b, 2, dtype=torch.float64, generator=generator)
    found = first >= 0
    pick = first.clamp(min=0).unsqueeze(1)
    h_try, w_try = h.gather(1, pick).squeeze(1), w.gather(1, pick).squeeze(1)
    # the fallback: the whole image, its ratio clamped to the range, centred
    h_all, w_all = heights.double(), widths.double()
    in_ratio = w_all / h_all
    w_fb = torch.where(in_ratio < min(ratio), w_all, torch.where(in_ratio > max(ratio), torch.round(h_all * max(ratio)), w_all))
    h_fb = torch.where(in_ratio < min(ratio), torch.round(w_all / min(ratio)), h_all)
    h_crop, w_crop = torch.where(found, h_try, h_fb), torch.where(found, w_try, w_fb)
    top = torch.where(found, torch.floor(position[:, 0] * (h_all - h_crop + 1)), torch.floor((h_all - h_crop) / 2))
    left = torch.where(found, torch.floor(position[:, 1] * (w_all - w_crop + 1)), torch.floor((w_all - w_crop) / 2))
    return torch.stack([top, left, h_crop, w_crop], dim=1).long()


def _uniform(b: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(b, dtype=torch.float64).uniform_(low, high, generator=generator).float()


def _coin(b: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(b, generator=generator) < p


def draw_view(spec: ViewSpec, heights: torch.Tensor, widths: torch.Tensor, generator: torch.Generator
              ) -> dict[str, torch.Tensor]:
    """Every random parameter of ``spec``'s view for a batch of images of these sizes (CPU tensors).
    The jitter factors are ``ColorJitter``'s: brightness, contrast and saturation uniform in
    [max(0, 1 - s), 1 + s], hue in [-s, s]; ``order`` is a random permutation of the four."""
    b = heights.shape[0]
    strength = spec.jitter
    factors = torch.stack([_uniform(b, max(0.0, 1 - s), 1 + s, generator) for s in strength[:3]]
                          + [_uniform(b, -strength[3], strength[3], generator)], dim=1)
    return {"crop": draw_crops(heights, widths, spec.scale, generator), "flip": _coin(b, spec.hflip, generator),
            "jitter": _coin(b, spec.jitter_p, generator), "factors": factors,
            "order": torch.rand(b, 4, generator=generator).argsort(dim=1),
            "gray": _coin(b, spec.gray_p, generator), "blur": _coin(b, spec.blur_p, generator),
            "sigma": _uniform(b, *spec.blur_sigma, generator), "solarize": _coin(b, spec.solarize_p, generator)}


# ------------------------------------------------------------------------------------------------
# The view, made for a whole batch
# ------------------------------------------------------------------------------------------------
def crop_resize(pixels: torch.Tensor, crops: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, size, size) floats in [0, 1]: each image's crop ``(top, left, height, width)``
    resized, in one ``roi_align`` (pixel-aligned boxes; one bilinear sample per output pixel where
    the crop is enlarged, the mean of ceil(crop / size) per side where it is shrunk)."""
    top, left, h, w = (crops[:, k].to(pixels.device, torch.float32) for k in range(4))
    rows = torch.arange(pixels.shape[0], device=pixels.device, dtype=torch.float32)
    boxes = torch.stack([rows, left, top, left + w, top + h], dim=1)
    return roi_align(pixels.float(), boxes, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True) / 255.0


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's blend of float images, one factor per image."""
    return (factor.view(-1, 1, 1, 1) * images + (1 - factor.view(-1, 1, 1, 1)) * other).clamp(0, 1)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W): ITU-R 601-2 luma with torchvision's weights (``rgb_to_grayscale``; PIL's "L"
    conversion weighs red 0.299)."""
    r, g, b = images.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def shift_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each image's hue turned by ``shift`` (a share of the circle, in [-0.5, 0.5]), saturation and
    value kept: torchvision's ``adjust_hue`` with one factor per image."""
    r, g, b = images.unbind(dim=1)
    high, _ = images.max(dim=1)
    low, _ = images.min(dim=1)
    chroma = high - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(high == r, ((g - b) / safe) % 6, torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    hue = (hue + shift.view(-1, 1, 1)) % 1.0
    # back to RGB: channel k is value - chroma * clamp(min(t, 4 - t), 0, 1), t = (n + 6 hue) mod 6
    n = torch.tensor([5.0, 3.0, 1.0], device=images.device).view(1, 3, 1, 1)
    t = (n + 6 * hue.unsqueeze(1)) % 6
    return high.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(t, 4 - t).clamp(0, 1)


def color_jitter(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """``ColorJitter`` on float (B, 3, H, W) images in [0, 1], for the images where ``apply``:
    brightness, contrast, saturation (blends with black, the mean grey, the grey image) and hue,
    with factors (B, 4), in each image's ``order`` (B, 4, a permutation of 0..3)."""
    turns_hue = bool((factors[:, 3] != 0).any())  # read before the copy: no wait for the device
    factors, order, apply = factors.to(images.device), order.to(images.device), apply.to(images.device)
    jittered = images
    for position in range(4):
        op = order[:, position].view(-1, 1, 1, 1)
        gray = grayscale(jittered)
        options = (_blend(jittered, torch.zeros_like(jittered), factors[:, 0]),
                   _blend(jittered, gray.mean(dim=(-3, -2, -1), keepdim=True), factors[:, 1]),
                   _blend(jittered, gray, factors[:, 2]),
                   shift_hue(jittered, factors[:, 3]) if turns_hue else jittered)
        jittered = torch.where(op == 0, options[0], torch.where(op == 1, options[1],
                                                                 torch.where(op == 2, options[2], options[3])))
    return torch.where(apply.view(-1, 1, 1, 1), jittered, images)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Each image blurred with a Gaussian of its own ``sigma`` (pixels): a separable kernel of
    ``2 radius + 1`` taps, edges extended (as PIL's filter extends them)."""
    b, c, h, w = images.shape
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma.to(images.device).view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, taps)
    x = nnf.pad(images.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    x = nnf.conv2d(x, kernel.view(b * c, 1, 1, -1), groups=b * c)
    x = nnf.conv2d(x, kernel.view(b * c, 1, -1, 1), groups=b * c)
    return x.view(b, c, h, w)


def apply_view(spec: ViewSpec, pixels: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """``spec``'s view of uint8 ``pixels`` (B, C, H, W) with drawn ``params``: normalised float
    (B, 3, size, size) on the pixels' device."""
    device = pixels.device
    images = crop_resize(pixels, params["crop"], spec.size)
    if images.shape[1] == 1:  # a greyscale set: its RGB image, as PIL's convert("RGB")
        images = images.expand(-1, 3, -1, -1)
    flip = params["flip"].to(device).view(-1, 1, 1, 1)
    images = torch.where(flip, images.flip(-1), images)
    if spec.jitter_p > 0 and any(s > 0 for s in spec.jitter):
        images = color_jitter(images, params["factors"], params["order"], params["jitter"])
    if spec.gray_p > 0:
        images = torch.where(params["gray"].to(device).view(-1, 1, 1, 1), grayscale(images).expand(-1, 3, -1, -1), images)
    if spec.blur_p > 0:
        blurred = gaussian_blur(images, params["sigma"], spec.blur_radius())
        images = torch.where(params["blur"].to(device).view(-1, 1, 1, 1), blurred, images)
    if spec.solarize_p > 0:
        solarized = torch.where(images >= 128 / 255, 1 - images, images)
        images = torch.where(params["solarize"].to(device).view(-1, 1, 1, 1), solarized, images)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD, device=device).view(1, 3, 1, 1)
    return ((images - mean) / std).contiguous()


class BatchViews:
    """A method's views made for whole batches: ``specs`` a single :class:`ViewSpec` (the batch is
    one tensor, as a single-crop transform's) or a list of them (a list of tensors, one per view,
    as BYOL's and DINO's transforms give). With ``labels`` the batch is ``(views, labels)``."""

    def __init__(self, specs: ViewSpec | Sequence[ViewSpec], labels: bool = False) -> None:
        self.single = isinstance(specs, ViewSpec)
        self.specs = [specs] if isinstance(specs, ViewSpec) else list(specs)
        self.labels = labels

    def __call__(self, images: DeviceImages, rows: torch.Tensor, generator: torch.Generator) -> Any:
        pixels, heights, widths, labels = images.batch(rows)
        views = [apply_view(spec, pixels, draw_view(spec, heights, widths, generator)) for spec in self.specs]
        batch = views[0] if self.single else views
        return (batch, labels) if self.labels else batch


def eval_view(images: DeviceImages, rows: torch.Tensor, size: int, crop: float = 1.0) -> torch.Tensor:
    """The evaluation transform for a whole batch: the centre square of ``crop`` of each image's
    shorter side, resized to ``size``, normalised (timm's resize-then-centre-crop)."""
    pixels, heights, widths, _ = images.batch(rows)
    side = torch.round(torch.minimum(heights, widths).double() * crop)
    crops = torch.stack([torch.floor((heights - side) / 2), torch.floor((widths - side) / 2), side, side], dim=1)
    spec = ViewSpec(size, (1.0, 1.0), hflip=0.0, jitter=(0.0, 0.0, 0.0, 0.0), jitter_p=0.0)
    return apply_view(spec, pixels, {"crop": crops.long(), "flip": torch.zeros(rows.shape[0], dtype=torch.bool)})


class DeviceBatches:
    """A training run's micro-batches from a set held on the device: the rows of the stream of
    :class:`~benchmark.data.folders.EpochSampler` (the order the per-image loader would give, from
    ``start`` samples on, this process's share), and their ``views`` drawn from a generator seeded by
    ``mix_seed(seed, step, rank, micro_step, VIEW_STREAM)``: a resumed run makes the same batches."""

    def __init__(self, images: DeviceImages, views: BatchViews, seed: int, micro_batch: int, *, start: int = 0,
                 rank: int = 0, num_replicas: int = 1) -> None:
        self.images, self.views, self.seed, self.micro_batch, self.rank = images, views, seed, micro_batch, rank
        self.stream = iter(EpochSampler(len(images), seed, start=start, rank=rank, num_replicas=num_replicas))

    def __call__(self, step: int, micro_step: int = 0) -> Any:
        rows = torch.tensor([next(self.stream)[1] for _ in range(self.micro_batch)])
        generator = torch.Generator().manual_seed(mix_seed(self.seed, step, self.rank, micro_step, VIEW_STREAM))
        return self.views(self.images, rows, generator)
