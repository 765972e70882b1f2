"""torch.distributed set-up for runs started by torchrun (or SLURM through torchrun).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them a run is a single process. Under
torchrun a process always joins the process group, one process included (so that a one-GPU
torchrun exercises the same DDP and nccl path as eight). GPUs use nccl, CPUs gloo. The global batch
size stays what the config says: each process takes
``batch_size / (world_size * accum_steps)`` images per micro-step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1          # processes on this node (torchrun's LOCAL_WORLD_SIZE)
    joined: bool = False               # a member of a torch.distributed process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.joined


def init_distributed(device: torch.device) -> Context:
    """Joins the process group torchrun describes (once); a single-process Context otherwise."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Context()
    world = int(os.environ["WORLD_SIZE"])
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return Context(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world, joined=True)


def local_device(device: torch.device, ctx: Context) -> torch.device:
    """This process's GPU under torchrun (one per process), else ``device`` unchanged."""
    return torch.device("cuda", ctx.local_rank) if device.type == "cuda" and ctx.distributed else device


def mean_across(values: dict[str, float], ctx: Context) -> dict[str, float]:
    """The mean of each scalar over the processes (for logging)."""
    if not ctx.distributed or not values:
        return values
    # nccl reduces GPU tensors only; gloo takes CPU ones.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {k: float(v) / ctx.world_size for k, v in zip(values, tensor.tolist())}


def any_across(flag: bool, ctx: Context) -> bool:
    """Whether ``flag`` is set on any process."""
    if not ctx.distributed:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor([float(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def shutdown() -> None:
    """Leaves the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
