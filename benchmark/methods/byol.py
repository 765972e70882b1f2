"""BYOL: bootstrap your own latent (Grill et al., 2020).

Two augmented views of each image (asymmetric blur/solarisation, :class:`benchmark.methods.views.TwoViews`;
``blur_sigma`` is the blur's range in pixels, BYOL's 0.1-2 at 224 px by default).
The online network -- the ViT's pooled feature (class token), a projector MLP and a predictor
MLP (Linear -> BatchNorm -> ReLU -> Linear each) -- predicts the target network's projection of
the other view; the target (encoder + projector) is an EMA of the online network whose momentum
follows a cosine from ``momentum`` to 1.0. The loss is the normalised regression of both
directions, summed:

    loss = (2 - 2 cos(q(z1), z2')) + (2 - 2 cos(q(z2), z1'))      (batch means)

so it lies in [0, 8]. The online encoder is the one BYOL evaluates, and ``self.encoder`` (what
pre-training exports) is it. Batch norm normalises each view on its own (as BYOL, which runs each
view through the network separately); the target keeps batch norm in train mode (batch statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from benchmark.data.augment import Augmentation, ViewSpec
from benchmark.methods.base import JOINT_EMBEDDING, PretrainMethod, pooled_features, register_method
from benchmark.methods.ema import cosine_momentum, ema_update, make_ema_copy
from benchmark.methods.losses import byol_loss
from benchmark.methods.views import REFERENCE_BLUR_SIGMA, SIGMA_RANGE, TwoViews
from benchmark.training.config import at_least, in_unit


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector / predictor: Linear -> BatchNorm1d -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


@register_method
class BYOL(PretrainMethod):
    name = "byol"
    family = JOINT_EMBEDDING
    RULES = {
        "proj_dim": at_least(1), "proj_hidden": at_least(1), "pred_hidden": at_least(1),
        "momentum": in_unit(zero=True), "blur_sigma": SIGMA_RANGE,
    }

    def __init__(
        self,
        encoder: nn.Module,
        proj_dim: int = 256,
        proj_hidden: int = 4096,
        pred_hidden: int = 4096,
        momentum: float = 0.99,
        blur_sigma: Sequence[float] = REFERENCE_BLUR_SIGMA,
    ) -> None:
        super().__init__(encoder)
        self.momentum = momentum
        self.blur_sigma = tuple(blur_sigma)
        self.projector = mlp(encoder.embed_dim, proj_hidden, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim)
        self.target_encoder = make_ema_copy(encoder)
        self.target_projector = make_ema_copy(self.projector)

    def train_transform(self, aug: Augmentation) -> TwoViews:
        return TwoViews(aug.img_size, aug.crop_scale, aug.color_jitter, aug.hflip, self.blur_sigma)

    def view_specs(self, aug: Augmentation) -> list[ViewSpec]:
        return self.train_transform(aug).specs

    def forward(self, views: Any, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if isinstance(views, torch.Tensor) or len(views) != 2:
            raise ValueError("BYOL expects a batch of two views [view1, view2]")
        v1, v2 = views
        b = v1.shape[0]
        both = torch.cat([v1, v2])
        h1, h2 = pooled_features(self.encoder, both).split(b)  # one encoder pass (the ViT has no batch norm)
        p1, p2 = self.predictor(self.projector(h1)), self.predictor(self.projector(h2))
        with torch.no_grad():
            t1, t2 = pooled_features(self.target_encoder, both).split(b)
            z1, z2 = self.target_projector(t1), self.target_projector(t2)
        loss = byol_loss(p1, p2, z1, z2)
        with torch.no_grad():
            cos = 1 - loss.detach() / 4  # the mean cosine of both directions
        return {"loss": loss, "cos": cos}

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        m = cosine_momentum(self.momentum, step, total_steps)
        ema_update(self.target_encoder, self.encoder, m)
        ema_update(self.target_projector, self.projector, m)
