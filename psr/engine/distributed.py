"""DistributedDataParallel plumbing for runs launched by ``torchrun`` (one process per GPU).

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them everything here is a no-op
and training runs in a single process. The backend is NCCL on CUDA and gloo on CPU (so two-process
DDP runs, and is tested, on a laptop).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, draws progress bars and writes checkpoints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    """The processes of this torchrun launch (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) if launched_by_torchrun() else 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a process that torchrun did not start."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def distributed(device_type: str) -> Iterator[DistInfo]:
    """Join the process group torchrun prepared for the duration of the block (and leave it
    afterwards, unless the caller had joined already); a single process without torchrun."""
    if not launched_by_torchrun():
        yield DistInfo()
        return
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=world_size(),
    )
    joined_here = info.enabled and not dist.is_initialized()
    if joined_here:
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    try:
        yield info
    finally:
        if joined_here:
            dist.destroy_process_group()


def reduce_sums(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum ``values`` over all ranks (counts and loss sums, so means are exact over the dataset)."""
    if not info.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them at the start of each forward, so after an epoch each rank holds the
    statistics of its own last batch; validation (sharded over ranks) and the checkpoint must
    all see the same model.
    """
    if not info.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
