"""Multi-view augmentations of the joint-embedding methods, built from torchvision transforms.

- :func:`reference_view`: one augmented view as in BYOL (Grill et al., 2020, Table 6) and DINO
  (Caron et al., 2021, ``DataAugmentationDINO``): random resized crop (bicubic), horizontal
  flip, colour jitter (brightness s, contrast s, saturation s/2, hue s/4, applied with p=0.8),
  grayscale (p=0.2), Gaussian blur (sigma in [0.1, 2] pixels of a 224 px view by default;
  :class:`GaussianBlur`), solarisation (threshold 128), ImageNet normalisation, as a
  :class:`~benchmark.data.augment.ViewSpec`, which :func:`view_transform` makes per image with PIL and
  :mod:`benchmark.data.batch_views` for whole batches;
- :class:`TwoViews`: BYOL's two asymmetric views (blur p=1.0 / 0.1, solarise p=0.0 / 0.2);
- :class:`MultiCrop`: DINO's global crops (same asymmetry as BYOL) plus smaller local crops
  (blur p=0.5, no solarisation).

All randomness comes from torch's global generator (torchvision draws with ``torch.rand``), which
:class:`benchmark.data.folders.SeededTransform` seeds per item, so a resumed run repeats the crops.
Each transform maps a PIL image to a list of tensors; the pre-training stage's default collate batches it
into a list of (B, 3, H, W) tensors, one per view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image, ImageFilter
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from benchmark.data.augment import ViewSpec
from benchmark.training.config import Rule

# BYOL's and DINO's blur, in pixels of their 224 px global views (96 px local crops cut from a
# fifth of the image see about the same pixels per object). On smaller images the same range blurs
# far more of the object: scale it with blur_sigma_for.
REFERENCE_BLUR_SIGMA = (0.1, 2.0)
REFERENCE_VIEW_SIZE = 224


def _pair(v: object) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and v[0] <= v[1]


# The rules of the views' arguments (method RULES): a crop's scale range, a blur's sigma range.
SCALE_RANGE = Rule(lambda v: _pair(v) and 0 < v[0] <= v[1] <= 1, "[low, high] with 0 < low <= high <= 1")
SIGMA_RANGE = Rule(lambda v: _pair(v) and v[0] > 0, "[low, high] with 0 < low <= high (pixels)")


def blur_sigma_for(img_size: int) -> tuple[float, float]:
    """The reference blur range scaled to global views of ``img_size`` px (the same blur relative
    to the object as at 224 px)."""
    ratio = img_size / REFERENCE_VIEW_SIZE
    return (REFERENCE_BLUR_SIGMA[0] * ratio, REFERENCE_BLUR_SIGMA[1] * ratio)


class GaussianBlur:
    """Gaussian blur of a PIL image with probability ``p``, sigma drawn uniformly from ``sigma``
    (BYOL and DINO: [0.1, 2]; BYOL's 23-pixel kernel at 224 px spans more than 5 sigma, so it
    is a full Gaussian). PIL's filter, as DINO's reference code uses: torchvision's tensor blur
    took 4x the time of the rest of a view (15 of 18.5 ms at 224 px on one core). Draws from
    torch's global generator, like the torchvision transforms around it."""

    def __init__(self, p: float, sigma: Sequence[float] = (0.1, 2.0)) -> None:
        self.p, self.sigma = p, (float(sigma[0]), float(sigma[1]))

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.p < 1 and float(torch.rand(())) >= self.p:
            return image
        radius = float(torch.empty(()).uniform_(*self.sigma))
        return image.filter(ImageFilter.GaussianBlur(radius=radius))


def reference_view(size: int, scale: Sequence[float], color_jitter: float = 0.4, blur_p: float = 1.0,
                   solarize_p: float = 0.0, hflip: float = 0.5, blur_sigma: Sequence[float] = REFERENCE_BLUR_SIGMA
                   ) -> ViewSpec:
    """One of BYOL's and DINO's views as a :class:`ViewSpec`: bicubic crop, flip, colour jitter
    (brightness s, contrast s, saturation s/2, hue s/4) with p 0.8, greyscale with p 0.2, blur,
    solarisation."""
    s = color_jitter
    return ViewSpec(size, (float(scale[0]), float(scale[1])), hflip, (s, s, s / 2, min(s / 4, 0.5)),
                    jitter_p=0.8 if s > 0 else 0.0, gray_p=0.2, blur_p=blur_p,
                    blur_sigma=(float(blur_sigma[0]), float(blur_sigma[1])), solarize_p=solarize_p, interpolation="bicubic")


def view_transform(spec: ViewSpec) -> T.Compose:
    """``spec``'s view of one image: PIL image -> normalised (3, size, size) float tensor."""
    ops: list[Any] = [
        T.RandomResizedCrop(spec.size, scale=spec.scale, interpolation=InterpolationMode(spec.interpolation)),
        T.RandomHorizontalFlip(p=spec.hflip),
    ]
    if spec.jitter_p > 0 and any(s > 0 for s in spec.jitter):
        ops.append(T.RandomApply([T.ColorJitter(*spec.jitter)], p=spec.jitter_p))
    if spec.gray_p > 0:
        ops.append(T.RandomGrayscale(p=spec.gray_p))
    if spec.blur_p > 0:
        ops.append(GaussianBlur(p=spec.blur_p, sigma=spec.blur_sigma))
    if spec.solarize_p > 0:
        ops.append(T.RandomSolarize(threshold=128, p=spec.solarize_p))
    ops += [T.ToTensor(), T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
    return T.Compose(ops)


class SpecViews:
    """Several views of one image, one per spec of ``specs``: PIL image -> list of tensors."""

    def __init__(self, specs: Sequence[ViewSpec]) -> None:
        self.specs = list(specs)
        self.views = [view_transform(spec) for spec in self.specs]

    def __call__(self, image: Any) -> list[torch.Tensor]:
        return [view(image) for view in self.views]


class TwoViews(SpecViews):
    """BYOL's two views of an image: ``[view1, view2]`` with asymmetric blur and solarisation."""

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0), color_jitter: float = 0.4, hflip: float = 0.5,
                 blur_sigma: Sequence[float] = REFERENCE_BLUR_SIGMA) -> None:
        super().__init__([
            reference_view(size, scale, color_jitter, blur_p=1.0, solarize_p=0.0, hflip=hflip, blur_sigma=blur_sigma),
            reference_view(size, scale, color_jitter, blur_p=0.1, solarize_p=0.2, hflip=hflip, blur_sigma=blur_sigma),
        ])


class MultiCrop(SpecViews):
    """DINO's multi-crop: ``global_crops`` crops of ``size`` (the first with blur p=1.0, the second
    with blur p=0.1 and solarisation p=0.2, alternating beyond two) followed by ``local_crops``
    crops of ``local_size`` (blur p=0.5). Returns the list ``[global..., local...]``."""

    def __init__(
        self,
        size: int,
        local_size: int,
        global_crops: int = 2,
        local_crops: int = 8,
        global_scale: Sequence[float] = (0.4, 1.0),
        local_scale: Sequence[float] = (0.05, 0.4),
        color_jitter: float = 0.4,
        hflip: float = 0.5,
        blur_sigma: Sequence[float] = REFERENCE_BLUR_SIGMA,
    ) -> None:
        if global_crops < 1 or local_crops < 0:
            raise ValueError(f"need at least one global crop and no negative count, got {global_crops} global, "
                             f"{local_crops} local")
        self.global_crops, self.local_crops = global_crops, local_crops
        self.size, self.local_size = size, local_size
        global_views = [
            reference_view(size, global_scale, color_jitter, blur_p=1.0, solarize_p=0.0, hflip=hflip, blur_sigma=blur_sigma),
            reference_view(size, global_scale, color_jitter, blur_p=0.1, solarize_p=0.2, hflip=hflip, blur_sigma=blur_sigma),
        ]
        local_view = reference_view(local_size, local_scale, color_jitter, blur_p=0.5, solarize_p=0.0, hflip=hflip,
                                    blur_sigma=blur_sigma)
        super().__init__([global_views[i % 2] for i in range(global_crops)] + [local_view] * local_crops)
