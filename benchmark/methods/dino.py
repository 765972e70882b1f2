"""DINO: self-distillation with no labels (Caron et al., 2021), the joint-embedding baseline of
the SplitMask paper.

A student (ViT + DINO head) sees every crop of an image (2 global crops at ``img_size`` and
``local_crops`` smaller ones); a teacher of the same architecture, an EMA of the student, sees the
global crops only. For every pair of *different* views (teacher view i, student view v != i):

    CE = - sum_k softmax((t_i - c) / tau_t)_k * log_softmax(s_v / tau_s)_k

averaged over the batch and over the pairs. ``c`` (the centre, a buffer) is an EMA of the batch
mean of the teacher outputs (``center_momentum``), moved once per optimiser step in ``after_step``
with the mean over every micro-batch of the step and, under torch.distributed, every process;
``tau_t`` is warmed up linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
``warmup_teacher_temp_steps`` (reached at the last of them, as DINO's ``np.linspace``); the
teacher's momentum follows a cosine from ``momentum_teacher`` to 1.0; the head's last layer gets no
update during the first ``freeze_last_layer_steps`` steps;
the weight decay follows a cosine from the config's ``weight_decay`` to ``weight_decay_end``;
gradients are clipped per parameter (``clip_grad`` of the config), as DINO does.

Head: MLP (GELU) -> L2-normalised bottleneck -> weight-normalised linear layer to ``out_dim``
(magnitude fixed to 1 with ``norm_last_layer``).

Export: DINO evaluates the *teacher* (its k-NN, linear and fine-tuning results all load the
teacher's backbone, which is better than the student's throughout training), so by default
(``export="teacher"``) ``self.encoder`` -- the module the pre-training stage exports -- IS the teacher's
backbone and the student's backbone is ``self.student_encoder``. ``export="student"`` swaps
the roles (``self.encoder`` the student, ``self.teacher_encoder`` the teacher).

Views: :class:`benchmark.methods.views.MultiCrop`; ``blur_sigma`` is the Gaussian blur's range in
pixels (DINO's 0.1-2 at 224 px by default; a smaller image needs it scaled, ``views.blur_sigma_for``).

Local crops: the ViT must accept crops smaller than ``img_size``. If it was not built with
``dynamic_img_size=True``, it is switched to timm's dynamic mode here (position embeddings
resampled to the crop's grid); this changes no parameter, so the export still loads strictly
into ``create_vit(arch, img_size, num_classes=0)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Format, trunc_normal_
from torch.nn.utils.parametrizations import weight_norm

from benchmark.data.augment import Augmentation, ViewSpec
from benchmark.methods.base import JOINT_EMBEDDING, PretrainMethod, pooled_features, register_method
from benchmark.methods.ema import cosine_momentum, ema_update, make_ema_copy
from benchmark.methods.losses import dino_loss, teacher_probs
from benchmark.methods.views import REFERENCE_BLUR_SIGMA, SCALE_RANGE, SIGMA_RANGE, MultiCrop
from benchmark.training.config import at_least, in_unit, one_of, optional, positive
from benchmark.utils.schedule import cosine_schedule


class DINOHead(nn.Module):
    """MLP (``layers`` linear layers, GELU between) to a ``bottleneck`` dim, L2 normalisation,
    then a weight-normalised linear layer (no bias) to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048, bottleneck: int = 256, layers: int = 3,
                 norm_last_layer: bool = True) -> None:
        super().__init__()
        layers = max(int(layers), 1)
        if layers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck)
        else:
            mods: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.GELU()]
            for _ in range(layers - 2):
                mods += [nn.Linear(hidden, hidden), nn.GELU()]
            mods.append(nn.Linear(hidden, bottleneck))
            self.mlp = nn.Sequential(*mods)
        self.mlp.apply(_init_linear)
        self.last_layer = weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        if norm_last_layer:
            magnitude.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def enable_dynamic_img_size(vit: nn.Module) -> nn.Module:
    """Switches a timm VisionTransformer built without ``dynamic_img_size`` to it (in place):
    the patch embedding accepts any size divisible by the patch and the position embedding is
    resampled to the input's grid, exactly as ``timm.create_model(..., dynamic_img_size=True)``
    does. No parameter changes; at the training size the output is unchanged."""
    if getattr(vit, "dynamic_img_size", False):
        return vit
    pe = getattr(vit, "patch_embed", None)
    needed = ("strict_img_size", "flatten", "output_fmt")
    if pe is None or not all(hasattr(pe, a) for a in needed) or not hasattr(vit, "_pos_embed"):
        raise TypeError(
            "DINO's local crops need a timm VisionTransformer that accepts smaller inputs; build the "
            "encoder with create_vit(..., dynamic_img_size=True) or use local_crops=0"
        )
    vit.dynamic_img_size = True
    pe.strict_img_size = False
    pe.flatten = False
    pe.output_fmt = Format.NHWC
    return vit


def default_local_size(img_size: int, patch_size: int) -> int:
    """DINO's 96 px local crops at 224, scaled with ``img_size`` and rounded to whole patches."""
    return max(patch_size, int(round(img_size * 96 // 224 / patch_size)) * patch_size)


@register_method
class DINO(PretrainMethod):
    name = "dino"
    family = JOINT_EMBEDDING
    RULES = {
        "out_dim": at_least(1), "head_hidden": at_least(1), "head_bottleneck": at_least(1), "head_layers": at_least(1),
        "global_crops": at_least(1), "local_crops": at_least(0), "global_scale": optional(SCALE_RANGE),
        "local_scale": SCALE_RANGE, "local_size": optional(at_least(1)), "student_temp": positive(),
        "teacher_temp": positive(), "warmup_teacher_temp": positive(), "warmup_teacher_temp_steps": at_least(0),
        "center_momentum": in_unit(zero=True), "momentum_teacher": in_unit(zero=True),
        "freeze_last_layer_steps": optional(at_least(0)), "weight_decay_end": optional(at_least(0)),
        "export": one_of(("teacher", "student")), "blur_sigma": SIGMA_RANGE,
    }

    def __init__(
        self,
        encoder: nn.Module,
        out_dim: int = 65536,
        head_hidden: int = 2048,
        head_bottleneck: int = 256,
        head_layers: int = 3,
        norm_last_layer: bool = True,
        global_crops: int = 2,
        local_crops: int = 8,
        global_scale: Sequence[float] | None = None,
        local_scale: Sequence[float] = (0.05, 0.4),
        local_size: int | None = None,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_steps: int = 0,
        center_momentum: float = 0.9,
        momentum_teacher: float = 0.996,
        freeze_last_layer_steps: int | None = None,
        weight_decay_end: float | None = 0.4,
        export: str = "teacher",
        blur_sigma: Sequence[float] = REFERENCE_BLUR_SIGMA,
    ) -> None:
        super().__init__(encoder)
        if export not in ("teacher", "student"):
            raise ValueError(f"export must be 'teacher' or 'student', got {export!r}")
        if global_crops < 1 or local_crops < 0 or global_crops + local_crops < 2:
            raise ValueError(f"DINO needs >= 1 global crop and >= 2 crops in all, got {global_crops} global + "
                             f"{local_crops} local")
        self.export = export
        self.global_crops, self.local_crops = int(global_crops), int(local_crops)
        # DINO's defaults; without local crops DINO recommends a wider global range (0.14, 1).
        self.global_scale = tuple(global_scale) if global_scale is not None else ((0.4, 1.0) if local_crops else (0.14, 1.0))
        self.local_scale = tuple(local_scale)
        self.local_size = local_size
        self.student_temp = student_temp
        self.teacher_temp, self.warmup_teacher_temp = teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_steps = int(warmup_teacher_temp_steps)
        self.center_momentum = center_momentum
        self.momentum_teacher = momentum_teacher
        self.freeze_last_layer_steps = freeze_last_layer_steps
        self.weight_decay_end = weight_decay_end
        self.blur_sigma = tuple(blur_sigma)

        student = encoder
        if self.local_crops:
            enable_dynamic_img_size(student)
        self.student_head = DINOHead(student.embed_dim, out_dim, head_hidden, head_bottleneck, head_layers, norm_last_layer)
        teacher = make_ema_copy(student)  # same weights, frozen, no drop-path
        self.teacher_head = make_ema_copy(self.student_head)
        if export == "teacher":
            self.encoder = teacher  # what the pre-training stage exports
            self.student_encoder = student
        else:
            self.teacher_encoder = teacher
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))  # for the temperature schedule
        self._center_sum: torch.Tensor | None = None  # teacher outputs of the current step, summed
        self._center_rows = 0

    # ----------------------------------------------------------------------------------- parts
    @property
    def student_backbone(self) -> nn.Module:
        return self.student_encoder if self.export == "teacher" else self.encoder

    @property
    def teacher_backbone(self) -> nn.Module:
        return self.encoder if self.export == "teacher" else self.teacher_encoder

    def no_weight_decay(self) -> set[str]:
        prefix = "student_encoder" if self.export == "teacher" else "encoder"
        return {f"{prefix}.{name}" for name in self.student_backbone.no_weight_decay()}

    def train_transform(self, aug: Augmentation) -> MultiCrop:
        local_size = self.local_size or default_local_size(aug.img_size, self.patch_size)
        if self.local_crops and local_size % self.patch_size:
            raise ValueError(f"local_size {local_size} is not a multiple of the patch size {self.patch_size}")
        return MultiCrop(aug.img_size, local_size, self.global_crops, self.local_crops,
                         self.global_scale, self.local_scale, aug.color_jitter, aug.hflip, self.blur_sigma)

    def view_specs(self, aug: Augmentation) -> list[ViewSpec]:
        return self.train_transform(aug).specs

    # ------------------------------------------------------------------------------- schedules
    def teacher_temp_at(self, step: int) -> float:
        """DINO's warm-up of the teacher temperature, ``np.linspace(warmup_teacher_temp,
        teacher_temp, W)`` (``teacher_temp`` reached at step W - 1), then ``teacher_temp``;
        DINO counts W in epochs, the suite in steps."""
        w = self.warmup_teacher_temp_steps
        # base == final: constant after the warm-up
        return cosine_schedule(step, self.teacher_temp, self.teacher_temp, w + 1, w, start=self.warmup_teacher_temp)

    def freeze_steps(self, total_steps: int) -> int:
        """Steps during which the last layer is frozen. Default: DINO's one epoch of its 300-epoch
        ImageNet schedule, i.e. 1/300 of the run (the suite counts steps, not epochs)."""
        if self.freeze_last_layer_steps is not None:
            return int(self.freeze_last_layer_steps)
        return total_steps // 300

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """centre <- m * centre + (1 - m) * mean over rows of ``teacher_out`` (raw teacher outputs)."""
        self._apply_center(teacher_out.detach().float().mean(dim=0, keepdim=True))

    @torch.no_grad()
    def _apply_center(self, batch_mean: torch.Tensor) -> None:
        self.center.mul_(self.center_momentum).add_(batch_mean.to(self.center.dtype), alpha=1 - self.center_momentum)

    # --------------------------------------------------------------------------------- training
    def forward(self, crops: Any, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        crops = list(crops)
        num_views = len(crops)
        if num_views < self.global_crops or num_views < 2:
            raise ValueError(f"DINO expects {self.global_crops} global crops and more views, got {num_views} views")
        globals_ = torch.cat(crops[: self.global_crops])
        feats = [pooled_features(self.student_backbone, globals_)]
        local = crops[self.global_crops :]
        if local:
            if len({tuple(c.shape[-2:]) for c in local}) > 1:
                raise ValueError("DINO's local crops must share one size")
            feats.append(pooled_features(self.student_backbone, torch.cat(local)))
        student_out = self.student_head(torch.cat(feats))

        with torch.no_grad():
            teacher_out = self.teacher_head(pooled_features(self.teacher_backbone, globals_)).float()
            temp = self.teacher_temp_at(int(self.steps_done))
            probs = teacher_probs(teacher_out, self.center, temp)
        loss, _ = dino_loss(student_out, probs, num_views, self.student_temp)

        if self.training and torch.is_grad_enabled():  # the centre moves in after_step
            total = teacher_out.sum(dim=0, keepdim=True)
            self._center_sum = total if self._center_sum is None else self._center_sum + total
            self._center_rows += teacher_out.shape[0]
        with torch.no_grad():
            entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
            # Each teacher view meets the same number of student views, so the mean CE splits
            # into the teacher's mean entropy plus the mean KL(teacher || student).
            kl = loss.detach() - entropy
        return {"loss": loss, "kl": kl, "teacher_entropy": entropy,
                "teacher_temp": torch.tensor(temp)}

    def weight_decay_at(self, step: int, total_steps: int, base: float) -> float:
        """DINO's weight-decay schedule: a cosine from the config's weight decay (DINO: 0.04) at
        step 0 to ``weight_decay_end`` (0.4) at the end; constant if that is None."""
        if self.weight_decay_end is None:
            return base
        return cosine_schedule(step, base, self.weight_decay_end, total_steps)

    @torch.no_grad()
    def clip_gradients(self, max_norm: float) -> None:
        """DINO clips each parameter's gradient to norm ``max_norm`` on its own (its
        ``clip_gradients``), not the global norm."""
        for param in self.parameters():
            if param.grad is not None:
                norm = param.grad.norm()
                param.grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))

    def before_optimizer_step(self, step: int, total_steps: int) -> None:
        if step < self.freeze_steps(total_steps):
            for param in self.student_head.last_layer.parameters():
                param.grad = None  # as DINO: no update at all (AdamW skips parameters without grad)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        m = cosine_momentum(self.momentum_teacher, step, total_steps)
        ema_update(self.teacher_backbone, self.student_backbone, m)
        ema_update(self.teacher_head, self.student_head, m)
        if self._center_sum is not None and self._center_rows:
            total, rows = self._center_sum, self._center_sum.new_tensor([float(self._center_rows)])
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                # as DINO: the centre is the mean over the global batch, the same on every process
                packed = torch.cat([total.flatten(), rows])
                dist.all_reduce(packed)
                total, rows = packed[:-1].view_as(total), packed[-1:]
            self._apply_center(total / rows)
        self._center_sum, self._center_rows = None, 0
        self.steps_done.fill_(step + 1)
