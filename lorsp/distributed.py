"""Multi-process training with DistributedDataParallel, started by torchrun.

``torchrun --nproc_per_node N -m lorsp train ...`` starts N processes; each reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from its environment, joins a process group (NCCL on GPUs, gloo on
CPU), trains on its shard of every global batch (``batch_size / N`` images, the union over ranks being
exactly the single-process batch, see :class:`lorsp.train.EpochSampler`), averages gradients through DDP,
reduces its metrics across ranks (:func:`all_reduce_sums`) and lets rank 0 alone write checkpoints and
records. A plain ``lorsp train`` (no torchrun) is the world of one process: nothing here does anything then.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_from_env", "all_reduce_sums", "all_gather_rows", "barrier", "cleanup",
           "wrap_ddp", "env_world_size"]


@dataclass
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def init_from_env(device_type: str) -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL for ``cuda``, gloo otherwise).

    Returns a one-process context when not started by torchrun. An already initialised default group
    (e.g. set up by the caller) is used as it is.
    """
    world_size = env_world_size()
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                           dist.get_backend(), False)
    if world_size <= 1:
        return DistContext()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistContext(rank, world_size, local_rank, backend, True)


def all_reduce_sums(values: list[float], ctx: DistContext, device=None) -> list[float]:
    """Sum a list of numbers over all ranks (identity for one process)."""
    if not ctx.enabled:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64,
                          device=device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def all_gather_rows(local: torch.Tensor, n_total: int, ctx: DistContext) -> torch.Tensor:
    """Reassemble a ``[n_total, ...]`` tensor whose rows ``rank::world_size`` each rank computed."""
    if not ctx.enabled:
        return local
    per_rank = -(-n_total // ctx.world_size)
    padded = local.new_zeros((per_rank, *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, padded)
    out = local.new_empty((n_total, *local.shape[1:]))
    for rank, rows in enumerate(gathered):
        count = len(range(rank, n_total, ctx.world_size))
        out[rank::ctx.world_size] = rows[:count]
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_ddp(module: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` in a multi-process world, else ``module`` itself.

    Buffers are not broadcast: the only buffers are the frozen backbone's, identical on every rank.
    """
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group this module joined (not one the caller set up)."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
