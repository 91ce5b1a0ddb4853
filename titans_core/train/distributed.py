"""Data-parallel training under ``torchrun``: rank and world from the environment, a few collectives.

Without ``torchrun`` (no ``WORLD_SIZE`` above 1) everything here is a no-op for one process.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch.distributed as dist
from safetensors.torch import save
from torch import Tensor, nn


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes checkpoints, logs and the export (rank 0)."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        """Join the process group ``torchrun`` describes (gloo on CPU, nccl on CUDA), if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device == "cuda" else "gloo")
        return cls(rank, world, local_rank)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, values: Tensor) -> Tensor:
        """``values`` summed over ranks (a new tensor)."""
        values = values.clone()
        if self.world > 1:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def gather(self, value: object) -> list[object]:
        """Every rank's ``value`` (picklable), in rank order."""
        if self.world == 1:
            return [value]
        values: list[object] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def parameter_digest(model: nn.Module) -> str:
    """A SHA-256 of every parameter's bytes, in order: equal on every rank or the ranks diverged."""
    tensors = {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters()}
    return hashlib.sha256(save(tensors)).hexdigest()
