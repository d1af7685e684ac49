"""Several processes: torchrun sets WORLD_SIZE/RANK; we use gloo on CPU and nccl on GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world() -> World:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def close_world(world: World, barrier: bool = True) -> None:
    if world.size > 1 and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(x: torch.Tensor, world: World) -> torch.Tensor:
    if world.size > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x
