"""Running under ``torchrun``: the process group, this rank's place in it, and the few collectives the trainer needs.

``torchrun --nproc_per_node N -m fracture train ...`` starts N copies of the
command with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. When
``WORLD_SIZE > 1`` the trainer joins a process group (NCCL on GPUs, gloo on
CPUs), wraps the model in DistributedDataParallel and gives each rank its
slice of every global batch; only rank 0 writes events, checkpoints and the
resume state. A single process (``WORLD_SIZE`` unset or 1) never touches
``torch.distributed``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fracture.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """This process's rank among ``world_size`` (0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process created the group and destroys it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (a one-item list when not distributed)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def concat(self, array: np.ndarray | None) -> np.ndarray | None:
        """Each rank's contiguous share of an array, joined in rank order on every rank."""
        if not self.enabled:
            return array
        parts = [p for p in self.gather_objects(array) if p is not None]
        return np.concatenate(parts) if parts else None

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is true on any (a stop request seen by one rank stops all)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item() > 0)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, so all ranks validate one model."""
        if self.enabled:
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def shutdown(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class RankLog:
    """Events of torchrun ranks other than 0: not written (rank 0's log is the run's), failures logged."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def emit(self, event: str, **fields) -> dict:
        if event == "failed":
            log.error("rank %d failed: %s", self.rank, fields.get("error"))
        return {"event": event, **fields}


def from_env() -> DistContext:
    """This process's rank and world size as torchrun set them (0 of 1 when it did not); joins nothing."""
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1:
        return DistContext()
    return DistContext(rank=int(os.environ["RANK"]), world_size=world_size,
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def start(ctx: DistContext, device_name: str) -> torch.device:
    """Join the torchrun process group when ``ctx`` is distributed (NCCL on GPUs, gloo on CPUs); this rank's device.

    Raises:
        ConfigError: ``device`` names one GPU (``cuda:1``) for a multi-process
            run, or there are fewer GPUs than processes on this node.
    """
    from fracture.serve.inference import resolve_device

    device = resolve_device(device_name)
    if not ctx.enabled:
        return device
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(f"device={device_name!r}: under torchrun give device=cuda or auto; "
                              "each process takes the GPU of its LOCAL_RANK")
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {ctx.local_rank} but only {torch.cuda.device_count()} GPU(s): "
                              "use --nproc_per_node no larger than the GPU count")
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                             rank=ctx.rank, world_size=ctx.world_size)
        ctx.owns_group = True
    log.info("rank %d of %d on %s", ctx.rank, ctx.world_size, device)
    return device
