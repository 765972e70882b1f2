"""What every training loop in the suite shares: configs, seeding, the optimiser and schedule
built from timm, checkpoints, progress and the JSON-lines log."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2
from timm.scheduler.scheduler import Scheduler

from benchmark.utils.io import DiskFull, read_log, torch_save, write_json, write_text  # noqa: F401  (read_log re-exported)
from benchmark.utils.schedule import WARMUP_RULES, cosine_schedule
from benchmark.utils.stop import (  # noqa: F401  (re-exported: the trainers' stop on SIGTERM)
    EXIT_PREEMPTED,
    Preempted,
    StopSignal,
    stop_signals_blocked,
    stopped_message,
)

if TYPE_CHECKING:
    from benchmark.distributed import Context

C = TypeVar("C")


class ConfigError(ValueError):
    """A config key that does not exist or a value of the wrong type."""


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Builds dataclass ``cls`` from ``values``, rejecting unknown keys (with the nearest valid
    key suggested) and values of the wrong type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{cls.__name__}: expected a JSON object of fields, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    missing = [name for name, f in fields.items() if name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{cls.__name__}: missing required key {missing[0]!r}")
    for key, value in values.items():
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{cls.__name__}: unknown key {key!r}{hint}")
        expected = fields[key].type if isinstance(fields[key].type, str) else fields[key].type.__name__
        if not _type_ok(value, expected):
            raise ConfigError(f"{cls.__name__}: {key}={value!r} should be of type {expected}")
    return cls(**values)


def check_kwargs(fn: Any, values: dict[str, Any], where: str, skip: tuple[str, ...] = ()) -> None:
    """Rejects keys of ``values`` that ``fn`` (a class: its ``__init__``) takes no argument of,
    suggesting the nearest one, before anything is built."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n in params if n not in skip and n != "self"]
    for key in values:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; expected one of {names}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def error_line(err: BaseException) -> str:
    """An error's message on one line. An error raised in a data-loader worker comes back wrapped
    in a traceback; its own message is the last line."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())


def _type_ok(value: Any, annotation: str) -> bool:
    allowed = {
        "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,),
    }
    options = [a.strip() for a in annotation.replace("Optional[", "").rstrip("]").split("|")]
    for option in options:
        base = option.split("[")[0]
        if base == "None" and value is None:
            return True
        if base in allowed and isinstance(value, allowed[base]) and not (base != "bool" and isinstance(value, bool)):
            return True
        if base not in allowed and base != "None":
            return True  # complex annotations are not checked
    return False


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def fast_float32_matmul(device: torch.device) -> None:
    """On a GPU, float32 matrix products (those autocast leaves in float32: a codebook's
    nearest-centre search, losses) run on TF32 tensor cores, as timm's training script does."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def start_run(config: Any, out: Path, save_config: bool = True) -> tuple[torch.device, "Context"]:
    """What every training entry point does first: picks the device (``config.device``), joins
    the process group under torchrun (this process's GPU), lets float32 products use TF32 on a
    GPU, writes ``out/config.json`` on rank 0 (unless ``save_config`` is False: a run that may
    resume writes it once its checkpoint is found to be of the same config) and seeds every RNG
    with ``config.seed``."""
    from benchmark.distributed import init_distributed, local_device

    device = pick_device(config.device)
    ctx = init_distributed(device)
    device = local_device(device, ctx)
    fast_float32_matmul(device)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if save_config:
            write_config(out / "config.json", config)
    seed_everything(config.seed)
    return device, ctx


def autocast(device: torch.device):
    """bf16 autocast on GPUs that support it; a no-op context on CPU."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float | None = None, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Optimizer:
    """AdamW from timm: no weight decay on norms, biases and ``model.no_weight_decay()``;
    optional layer-wise learning-rate decay (timm's ``layer_decay``). On a GPU, torch's fused
    AdamW kernel (one launch for all parameters; the same update)."""
    on_gpu = next(model.parameters()).is_cuda
    extra = {"fused": True} if on_gpu else {}
    return create_optimizer_v2(model, "adamw", lr=lr, weight_decay=weight_decay, layer_decay=layer_decay, betas=betas,
                               **extra)


def set_weight_decay(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Sets the weight decay of the decayed parameter groups (norms, biases and embeddings, in
    groups of weight decay 0, stay undecayed)."""
    for group in optimizer.param_groups:
        if group["weight_decay"] > 0:
            group["weight_decay"] = value


class ReferenceCosineScheduler(Scheduler):
    """timm's scheduler interface (``step_update`` once per optimiser step, ``state_dict``, each
    group's ``lr_scale`` from layer decay applied) over the reference implementations' rule:
    :func:`benchmark.utils.schedule.cosine_schedule`, from 0 through the warm-up to ``base`` and by
    a half cosine to ``min_lr`` at the end of the run. timm's own ``CosineLRScheduler`` cannot
    express it: its warm-up reaches the peak one step after BEiT's ``np.linspace``."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: float, min_lr: float,
                 warmup_rule: str = "beit") -> None:
        if warmup_rule not in WARMUP_RULES:
            raise ValueError(f"warmup_rule must be one of {WARMUP_RULES}, got {warmup_rule!r}")
        self.total_steps, self.warmup_steps, self.min_lr = max(1, total_steps), warmup_steps, min_lr
        self.warmup_rule = warmup_rule
        super().__init__(optimizer, "lr", t_in_epochs=False)
        self.step_update(0)

    def _get_lr(self, t: int) -> list[float]:
        return [cosine_schedule(t, base, self.min_lr, self.total_steps, self.warmup_steps, warmup_rule=self.warmup_rule)
                for base in self.base_values]


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: float, min_lr: float,
                    warmup_rule: str = "beit") -> ReferenceCosineScheduler:
    """Linear warm-up from 0, then a cosine to ``min_lr`` at the last step, stepped once per
    optimiser step (``step_update``). ``warmup_rule``: "beit" (BEiT and DINO, pre-training and
    fine-tuning) or "mae" (MAE's linear probe); see :mod:`benchmark.utils.schedule`."""
    return ReferenceCosineScheduler(optimizer, total_steps, warmup_steps, min_lr, warmup_rule)


class NonFiniteLoss(RuntimeError):
    pass


def _non_finite(value: float, step: int, checkpoint: Path) -> NonFiniteLoss:
    return NonFiniteLoss(f"the loss is {value} at step {step}; stopping. The last good checkpoint is {checkpoint} "
                         "(lower the learning rate or raise the warm-up, then resume)")


class FiniteGuard:
    """Watches the loss for NaN and inf without making the host wait for the GPU at every step:
    the first non-finite loss and its step stay on the loss's device, and :meth:`check` (called
    before a log line or a checkpoint is written) reads them and raises :class:`NonFiniteLoss`.
    Steps after the first bad one may run before the check; nothing they produce is saved."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.first: torch.Tensor | None = None  # (step, loss) of the first non-finite loss; step -1: none yet

    def watch(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().to(torch.float64)
        if self.first is None:
            self.first = torch.tensor([-1.0, 0.0], dtype=torch.float64, device=loss.device)
        record = torch.stack([torch.full((), float(step), dtype=torch.float64, device=loss.device), loss])
        is_first = ~torch.isfinite(loss) & (self.first[0] < 0)
        self.first = torch.where(is_first, record, self.first)

    def check(self) -> None:
        """Raises if a watched loss was not finite, here or (under DDP) on any other process,
        so that every process stops at the same step."""
        step, value = self.first.tolist() if self.first is not None else (-1.0, 0.0)
        if torch.distributed.is_initialized():
            device = self.first.device if self.first is not None else None
            flag = torch.tensor([float(step >= 0)], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() > 0 and step < 0:
                raise NonFiniteLoss(f"another process's loss is not finite; stopping. The last good checkpoint is "
                                    f"{self.checkpoint}")
        if step >= 0:
            raise _non_finite(value, int(step), self.checkpoint)


def save_state(path: Path, **state: Any) -> None:
    """Writes a training checkpoint atomically. Holds tensors and plain values only, so that
    ``torch.load(weights_only=True)`` reads it back. On a full disk the previous checkpoint stays
    as it was and :class:`DiskFull` says so."""
    try:
        torch_save(state, path)
    except DiskFull as err:
        before = "the previous checkpoint is unchanged" if path.is_file() else "there is no earlier checkpoint"
        full = DiskFull(f"{path}: no space left on device while writing the step {state.get('step')} checkpoint; "
                        f"{before}: free some space, then run the same command again to resume")
        full.errno = err.errno
        raise full from None


TRAINING_KEYS = ("model", "optimizer", "scheduler", "step", "rng", "config")
# Config fields that change how fast a run goes, not what it computes: a run resumes across them.
# (decode_on_device is not one: its crops are drawn differently from the PIL path's.)
RUNTIME_FIELDS = {"num_workers", "compile"}


def load_state(path: Path) -> dict[str, Any]:
    """A training checkpoint (:func:`save_state`), read with ``weights_only=True``; a one-line
    :class:`~benchmark.convert.CheckpointError` for anything else."""
    from benchmark.convert import CheckpointError, load_failure

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, unpickling and storage errors of many types
        raise CheckpointError(f"{path}: not a readable training checkpoint ({load_failure(err)}); move it away, "
                              "or use --resume never to start over") from None
    missing = [k for k in TRAINING_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint of this suite (missing {missing}); move it away, "
                              "or use --resume never to start over")
    return state


def restore_training(path: Path, config: Any, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any) -> dict[str, Any]:
    """Loads a training checkpoint (:func:`save_state`) into the run's objects and returns it;
    refuses a checkpoint written with another config, naming the fields that differ (other than
    :data:`RUNTIME_FIELDS`)."""
    state, current = load_state(path), dataclasses.asdict(config)
    changed = sorted(k for k in set(state["config"]) | set(current)
                     if k not in RUNTIME_FIELDS and state["config"].get(k) != current.get(k))
    if changed:
        raise ConfigError(f"{path} was written with another config (differs in {changed}); "
                          "use another --out, or --resume never to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class RunLog:
    """A JSON-lines log (one object per line) plus a one-line progress display on stderr with
    loss, learning rate, images/s and time left."""

    def __init__(self, path: Path, total_steps: int, start_step: int, desc: str, every: int = 10) -> None:
        self.path = path
        self.total, self.start, self.desc, self.every = total_steps, start_step, desc, every
        self.t0 = time.time()
        self.images = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            # A resumed run repeats the steps after its checkpoint: drop their old records.
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= start_step]
            write_text(path, "".join(f"{line}\n" for line in kept))
        self.fh = open(path, "a")

    def step(self, step: int, batch_size: int, **scalars: float) -> None:
        self.images += batch_size
        done = step + 1
        if done % self.every and done != self.total:
            return
        elapsed = max(time.time() - self.t0, 1e-9)
        rate = self.images / elapsed
        left = (self.total - done) * elapsed / max(done - self.start, 1)
        record = {"step": done, "time": round(elapsed, 3), "img_per_s": round(rate, 2), **{k: float(v) for k, v in scalars.items()}}
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        shown = " ".join(f"{k} {float(v):.4g}" for k, v in scalars.items())
        print(f"[{self.desc}] step {done}/{self.total} {shown} | {rate:.1f} img/s | ETA {_fmt_time(left)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.fh.close()


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def write_config(path: Path, config: Any) -> None:
    write_json(path, dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config)


def is_transformer_block(module: nn.Module) -> bool:
    """A timm transformer block (ViT's or BEiT's ``Block``): the unit the throughput floor and
    :func:`compile_blocks` work on."""
    return type(module).__name__ == "Block"


def compile_blocks(model: nn.Module) -> int:
    """Compiles every transformer block of ``model`` in place (``nn.Module.compile``: parameter
    names, checkpoints and exports are unchanged) and returns how many. Only the blocks: the
    masking, gathers and losses between them hold host-side logic and data-dependent shapes that
    would break a whole-model graph into pieces and recompile it. Whether it pays is measured by
    ``python -m benchmark.perf --compile``, not assumed."""
    blocks = [m for m in model.modules() if is_transformer_block(m)]
    for block in blocks:
        block.compile()
    return len(blocks)
