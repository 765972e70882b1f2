"""The interface every pre-training method implements.

A method wraps a timm ViT (``self.encoder``, the only part exported for downstream use) and
adds its own parts (decoders, heads, tokenizers, EMA targets). The pre-training stage only sees:

- ``train_transform(aug)``: the augmentation of one image (a PIL image in, a tensor or a list
  of tensors out, e.g. DINO's multi-crop); the pre-training stage batches its output and passes it on;
- ``view_specs(aug)``: the same views as data (one :class:`~benchmark.data.augment.ViewSpec` or a
  list), which :mod:`benchmark.data.batch_views` makes for whole batches on the device when the
  images are held there (``images_on_device``);
- ``prepare(batches, cache)``: fit data-dependent parts (a tokenizer's codebook) before step 0;
- ``forward(batch, generator)``: a dict of scalar tensors, ``"loss"`` being the one to minimise;
  all of the method's randomness (masks, splits) is drawn from ``generator`` so that a resumed
  run repeats it exactly;
- ``before_optimizer_step(step, total_steps)``: after backward, before the update (e.g. DINO
  freezing its last layer's gradient during the first epoch);
- ``after_step(step, total_steps)``: per-step updates outside the gradient (EMA, schedules);
- ``weight_decay_at(step, total_steps, base)``: the weight decay of the decayed parameters at
  ``step`` (a schedule, such as DINO's); the config's value throughout by default;
- ``clip_gradients(max_norm)``: gradient clipping (global norm by default; DINO per parameter).

What the planner and the report need to know of a method are class attributes: its ``family``, whether
it predicts a tokenizer's codes (``uses_tokenizer``) and its arguments on the small pre-training sets
(``small_set_args``).

A method's keyword arguments (a pre-training's ``method_args``) are checked before it is built, as a
stage config's fields are (:func:`benchmark.training.config.check_kwargs`): the names, the types of
their annotations, and the ranges the class declares in ``RULES`` (argument -> ``Rule``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import default_collate

from benchmark.data.augment import Augmentation, ViewSpec, single_crop_spec, single_crop_transform
from benchmark.models.vit import pooled_features  # noqa: F401  (the methods' pooled feature, defined with the ViTs)
from benchmark.training.config import Rule

METHODS: dict[str, type[PretrainMethod]] = {}  # name -> class, filled by @register_method

# The paper's two families of self-supervised methods: those that reconstruct masked content, and
# those that match the embeddings of two views of an image.
DENOISING = "denoising autoencoder"
JOINT_EMBEDDING = "joint-embedding"


def methods_of(family: str) -> tuple[str, ...]:
    """The registered methods of ``family``, in the order they were registered."""
    return tuple(name for name, cls in METHODS.items() if cls.family == family)


def register_method(cls: type[PretrainMethod]) -> type[PretrainMethod]:
    """Class decorator: adds a method to :data:`METHODS` under its ``name``, beside its definition."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


class PretrainMethod(nn.Module):
    name: ClassVar[str]
    # True for methods that learn from labels (supervised): the pre-training stage then reads an ImageFolder
    # and passes ``(images, labels)`` to forward, with ``num_classes`` among the method's arguments.
    needs_labels: ClassVar[bool] = False
    family: ClassVar[str | None] = None  # DENOISING, JOINT_EMBEDDING, or None (supervised)
    # True: predicts the codes of a tokenizer, which the planner names (the comparison's, else the scale's)
    uses_tokenizer: ClassVar[bool] = False
    # method arguments on the small pre-training sets (Stanford Cars, DomainNet), over the scale's
    small_set_args: ClassVar[dict[str, Any]] = {}
    RULES: ClassVar[dict[str, Rule]] = {}  # argument -> its range (training.config.check_kwargs)

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def patch_size(self) -> int:
        return int(self.encoder.patch_embed.patch_size[0])

    @property
    def num_patches(self) -> int:
        return int(self.encoder.patch_embed.num_patches)

    def train_transform(self, aug: Augmentation) -> Callable[[Any], Any]:
        """Default (BEiT): random resized crop, horizontal flip, colour jitter, normalisation."""
        return single_crop_transform(aug)

    def view_specs(self, aug: Augmentation) -> ViewSpec | list[ViewSpec]:
        """:meth:`train_transform`'s views as data: one spec (the batch is one tensor) or a list (a
        list of tensors). Default: the single crop of :meth:`train_transform`."""
        return single_crop_spec(aug)

    def prepare(self, batches: Iterable[torch.Tensor], cache: Path | None = None) -> None:
        """Fits data-dependent parts on a few batches of training images. ``cache``, where given,
        is a path prefix unique to those images (the pre-training stage derives it from the files, the subset
        and the transform): a method may keep what it fitted at ``<cache>-<its own key>`` and load
        it in the next run on the same images instead of fitting again. Default: nothing."""

    def forward(self, batch: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def before_optimizer_step(self, step: int, total_steps: int) -> None:
        """Called after backward and before the optimiser step. Default: nothing."""

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimiser step. Default: nothing."""

    def weight_decay_at(self, step: int, total_steps: int, base: float) -> float:
        """The weight decay of the decayed parameters at ``step``. Default: ``base`` throughout."""
        return base

    def clip_gradients(self, max_norm: float) -> None:
        """Clips the gradients before the update. Default (BEiT, MAE): their global norm."""
        torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay besides norms and biases (timm's rule)."""
        return {f"encoder.{name}" for name in self.encoder.no_weight_decay()}

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding plus position embedding: (B, prefix + N, D), prefix (cls) tokens first."""
        return self.encoder._pos_embed(self.encoder.patch_embed(images))

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Runs the encoder's blocks and final norm on an already embedded token sequence."""
        enc = self.encoder
        return enc.norm(enc.blocks(enc.norm_pre(enc.patch_drop(tokens))))


def init_new_weights(module: nn.Module, linear: str = "trunc_normal") -> None:
    """Initialises a method's own Linear and LayerNorm layers (use with ``module.apply``):
    Linear weights truncated-normal (std 0.02, BEiT/timm) or ``"xavier"`` (MAE's decoder),
    zero biases, LayerNorm to identity."""
    if isinstance(module, nn.Linear):
        if linear == "xavier":
            nn.init.xavier_uniform_(module.weight)
        else:
            nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, D), index (B, K) -> (B, K, D): the tokens at ``index``, per sample."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def synthetic_batch(method: nn.Module, img_size: int, batch_size: int, seed: int = 0) -> Any:
    """A batch of random images shaped as the method's own augmentation shapes it (crops, views,
    labels): what a FLOP count or a throughput measurement feeds the method."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (img_size + 32, img_size + 32, 3), dtype=np.uint8))
    transform = method.train_transform(Augmentation(img_size))
    batch = default_collate([transform(image) for _ in range(batch_size)])
    if method.needs_labels:
        return batch, torch.arange(batch_size) % getattr(method, "num_classes", 2)
    return batch


def supports_device_decode(method: type[PretrainMethod] | PretrainMethod) -> bool:
    """Whether the method trains on the default single-crop augmentation, the one
    :class:`~benchmark.data.device_decode.DeviceAugment` reproduces (SplitMask, BEiT, MAE; not
    DINO's or BYOL's views)."""
    cls = method if isinstance(method, type) else type(method)
    return cls.train_transform is PretrainMethod.train_transform
