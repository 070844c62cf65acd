"""Several processes (torchrun) or one: the few collective operations training needs.

Under `torchrun --nproc_per_node N -m cfimg train ...` the environment names the rank and world
size; each process then trains on its shard of every epoch, gradients are averaged by
DistributedDataParallel, validation predictions are gathered everywhere (so every rank takes the
same early-stopping decision), and only rank 0 writes files and prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cfimg.engines import resolve_torch_device


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def broadcast(self, value):
        """Rank 0's `value` on every rank."""
        if not self.active:
            return value
        holder = [value]
        torch.distributed.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def mean(self, value: float) -> float:
        if not self.active:
            return value
        values = [None] * self.world_size
        torch.distributed.all_gather_object(values, value)
        return float(np.mean(values))

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.active:
            return model
        device_ids = [self.local_rank] if self.device.startswith("cuda") else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def close(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_distributed(device: str) -> DistributedContext:
    """Join the process group torchrun describes, or run alone; pick each rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=resolve_torch_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_torch_device(device)
    if resolved.startswith("cuda"):
        resolved = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    backend = "nccl" if resolved.startswith("cuda") else "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    return DistributedContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=resolved
    )


def gather_arrays(ctx: DistributedContext, array: np.ndarray) -> np.ndarray:
    """Concatenate every rank's `array` (rank order) on every rank."""
    if not ctx.active:
        return array
    parts = [None] * ctx.world_size
    torch.distributed.all_gather_object(parts, array)
    return np.concatenate(parts)
