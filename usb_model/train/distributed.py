"""DDP under torchrun: join the process group the environment describes, or run alone."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..device import pick_device


@dataclass
class Distributed:
    """Rank, world size and device of this process; a no-op wrapper when world_size == 1."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP on the trained module only; frozen networks stay plain."""
        if not self.active:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.active:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world_size
        return values

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.active:
            values = values.clone()
            dist.all_reduce(values)
        return values

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup_distributed(device: str | torch.device | None = None) -> Distributed:
    """Join the process group torchrun describes (WORLD_SIZE > 1), or run alone.

    NCCL on CUDA (one GPU per local rank), gloo on the CPU. A group initialised by the caller
    is reused and left for the caller to destroy.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return Distributed(device=pick_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = pick_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        owns = True
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), device=resolved, owns_group=owns)
