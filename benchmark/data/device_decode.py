"""JPEG decoding and augmentation on the training device, for when the CPU cannot keep up.

With ``PretrainConfig.decode_on_device`` the data-loader workers only read files:
:class:`EncodedImages` yields each item's raw JPEG bytes and its seed, and :class:`DeviceAugment`
decodes a whole batch with torchvision's ``decode_jpeg`` (nvJPEG's batched decoder on a GPU) and
applies the default single-crop pre-training augmentation there (:func:`~benchmark.data.augment.single_crop_transform`:
timm's random resized crop, horizontal flip, colour jitter, ImageNet normalisation).

Every random draw of an item comes from a ``torch.Generator`` seeded by the item's seed, the same
``mix_seed(seed, epoch, index)`` as :class:`~benchmark.data.folders.SeededTransform`: a batch is a
function of its seeds alone, so a resumed run repeats it, for any number of workers. The draws
follow the PIL path's recipe, not its random stream: the crops differ from that path's, their
distribution does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from benchmark.data.augment import RATIO, Augmentation
from benchmark.data.batch_views import color_jitter
from benchmark.data.folders import mix_seed
from benchmark.errors import DataError

JPEG_SUFFIXES = (".jpg", ".jpeg")
JPEG_MAGIC = b"\xff\xd8\xff"


def image_paths(dataset: Dataset) -> list[Path]:
    """The file of each item of an image data set (an ImageFolder's ``samples``, or ``files``)."""
    if hasattr(dataset, "samples"):
        return [Path(sample[0]) for sample in dataset.samples]
    if hasattr(dataset, "files"):
        return [Path(f) for f in dataset.files]
    raise DataError(f"{type(dataset).__name__}: decode_on_device needs a data set of image files")


class EncodedImages(Dataset):
    """Item ``(epoch, index)`` of ``indices`` as ``(jpeg_bytes, seed, label)``: the file's bytes
    (a uint8 tensor, undecoded), the item's augmentation seed ``mix_seed(seed, epoch, index)``
    and its label (0 where the data set has none). Only JPEG files are accepted: a file of
    another kind is a one-line :class:`DataError` naming it, here for its name and at reading
    for its content."""

    def __init__(self, dataset: Dataset, seed: int, indices: Sequence[int] | None = None) -> None:
        paths = image_paths(dataset)
        self.indices = list(indices) if indices is not None else list(range(len(paths)))
        self.paths = [paths[i] for i in self.indices]
        targets = getattr(dataset, "targets", None)
        self.labels = [int(targets[i]) for i in self.indices] if targets is not None else [0] * len(self.indices)
        self.seed = seed
        for path in self.paths:
            if path.suffix.lower() not in JPEG_SUFFIXES:
                raise DataError(f"{path}: not a JPEG; decode_on_device decodes JPEG files only "
                                "(set it to false for other images)")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        path = self.paths[index]
        data = read_file(str(path))
        if bytes(data[:3].tolist()) != JPEG_MAGIC:
            raise DataError(f"{path}: not a JPEG file (its content); decode_on_device decodes JPEG files only")
        return data, mix_seed(self.seed, epoch, index), self.labels[index]


class EncodedBatch(NamedTuple):
    """A batch of :class:`EncodedImages` items. The files' bytes travel end to end in one tensor
    (one shared-memory block from a worker, not one per image: a list of a batch's tensors costs
    a file descriptor each and, from ``read_file``, cannot be shared at all)."""

    data: torch.Tensor      # uint8: the JPEG files, one after the other
    lengths: torch.Tensor   # int64 (B,): the size of each
    seeds: torch.Tensor     # int64 (B,)
    labels: torch.Tensor    # int64 (B,)

    def images(self) -> list[torch.Tensor]:
        """The encoded images, one uint8 tensor each (views of ``data``)."""
        return list(self.data.split(self.lengths.tolist()))


def collate_encoded(items: list[tuple[torch.Tensor, int, int]]) -> EncodedBatch:
    """The DataLoader ``collate_fn`` of :class:`EncodedImages`."""
    data, seeds, labels = zip(*items)
    return EncodedBatch(torch.cat(data), torch.tensor([len(d) for d in data], dtype=torch.int64),
                        torch.tensor(seeds, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64))


class DeviceAugment:
    """Decodes a batch of JPEGs on ``device`` and augments it there as
    ``PretrainMethod.train_transform(aug)`` does on the CPU: a random resized crop
    (``aug.crop_scale``, ratios 3/4 to 4/3, the rule timm's and torchvision's share; bilinear with
    antialiasing, timm's default interpolation), a horizontal flip with probability ``aug.hflip``, colour jitter of strength
    ``aug.color_jitter`` on brightness, contrast and saturation (torchvision's ColorJitter: a
    random order), ImageNet normalisation. Returns float (B, 3, img_size, img_size)."""

    def __init__(self, aug: Augmentation) -> None:
        self.aug = aug
        self.mean, self.std = list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD)

    def draw(self, seed: int, height: int, width: int) -> dict[str, Any]:
        """One item's random parameters, drawn by torchvision's own rules (``RandomResizedCrop``'s
        and ``ColorJitter``'s ``get_params``) from torch's RNG seeded by ``seed``; the caller's
        RNG state is restored afterwards."""
        j = self.aug.color_jitter
        strength = [max(0.0, 1 - j), 1 + j]
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))  # the CPU's alone (see SeededTransform)
            shape_only = torch.empty(1, height, width, device="meta")  # get_params reads the size alone
            crop = T.RandomResizedCrop.get_params(shape_only, list(self.aug.crop_scale), list(RATIO))
            flip = bool(torch.rand(1) < self.aug.hflip)
            order, bright, contrast, saturation, _ = T.ColorJitter.get_params(strength, strength, strength, None)
        return {"crop": crop, "flip": flip, "order": order,  # 3, hue: not jittered (factor 0)
                "factors": torch.tensor([bright, contrast, saturation, 0.0])}

    def __call__(self, encoded: Sequence[torch.Tensor], seeds: Sequence[int] | torch.Tensor,
                 device: torch.device) -> torch.Tensor:
        seeds = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
        if len(encoded) != len(seeds):
            raise ValueError(f"{len(encoded)} images but {len(seeds)} seeds")
        try:
            images = decode_jpeg([data.cpu() for data in encoded], mode=ImageReadMode.RGB, device=device)
        except RuntimeError as err:
            raise DataError(f"a JPEG of this batch cannot be decoded ({' '.join(str(err).split())}); "
                            "decode_on_device skips no corrupt image: set it to false to skip them") from None
        size = [self.aug.img_size, self.aug.img_size]
        crops, params = [], []
        for image, seed in zip(images, seeds):
            p = self.draw(seed, image.shape[-2], image.shape[-1])
            crops.append(F.resized_crop(image, *p["crop"], size=size, interpolation=InterpolationMode.BILINEAR,
                                        antialias=True))
            params.append(p)
        batch = F.to_dtype(torch.stack(crops), torch.float32, scale=True)
        flip = torch.tensor([p["flip"] for p in params], device=device).view(-1, 1, 1, 1)
        batch = torch.where(flip, F.horizontal_flip(batch), batch)
        if self.aug.color_jitter > 0:
            batch = color_jitter(batch, torch.stack([p["factors"] for p in params]), torch.stack([p["order"] for p in params]),
                                 torch.ones(len(params), dtype=torch.bool))
        return F.normalize(batch, self.mean, self.std)
