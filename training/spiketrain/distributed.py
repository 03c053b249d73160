"""Data-parallel training under ``torchrun`` (gloo on CPUs, NCCL on GPUs).

    torchrun --nproc_per_node 2 -m spiketrain.train --dataset digits ...

Every process builds the same model from the same seed and draws the same shuffled order each
epoch; process ``r`` of ``w`` trains on rows ``r, r + w, ...`` of each global batch, and
DistributedDataParallel averages the gradients, so a step sees the whole batch. Only process 0
writes checkpoints, exports and evaluates. Batch normalisation keeps per-process statistics.
Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything here is a no-op.
"""

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

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This process's rows of a global batch."""
        return index[self.rank :: self.size] if self.distributed else index

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.distributed:
            return model
        return torch.nn.parallel.DistributedDataParallel(model)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_world() -> World:
    """Joins the process group when launched by ``torchrun``."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
