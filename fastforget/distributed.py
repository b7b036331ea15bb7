"""Data-parallel training under torchrun: the process group, who is rank 0, and the reductions the loop needs.

`torchrun --standalone --nproc_per_node=N -m fastforget train ... --ddp` starts N processes with RANK, WORLD_SIZE
and LOCAL_RANK set; `init` joins them (nccl on CUDA, gloo on the CPU). The loop (`train.fit`) wraps the model in
DistributedDataParallel when a group is active, and the loaders shard each global batch by rank, so that the
recipe and its global batch size are those of a single-process run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastforget.errors import ConfigError

TORCHRUN_HINT = "torchrun --standalone --nproc_per_node=N -m fastforget train ... --ddp"


@dataclass(frozen=True)
class Shard:
    """This process's part of every global batch: samples rank, rank + world, rank + 2 world, ..."""

    rank: int = 0
    world: int = 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard() -> Shard:
    return Shard(dist.get_rank(), dist.get_world_size()) if active() else Shard()


def is_main() -> bool:
    """Rank 0, or the only process: it alone shows progress, evaluates and saves."""
    return shard().rank == 0


def init(device: torch.device) -> Shard:
    """Join the torchrun process group (nccl on CUDA, gloo on the CPU); on CUDA each rank takes its local GPU."""
    missing = [key for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR") if key not in os.environ]
    if missing:
        raise ConfigError(f"--ddp runs under torchrun ({', '.join(missing)} not set): {TORCHRUN_HINT}")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return shard()


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over every rank (the identity in a single process); every rank must call it."""
    if not active():
        return value
    total = value.detach().clone().float()
    dist.all_reduce(total)
    return total / dist.get_world_size()
