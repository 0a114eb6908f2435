"""torchrun support: process-group set-up from the environment, rank helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """torchrun (``torch.distributed.run``) sets TORCHELASTIC_RUN_ID for every worker it starts."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (also with one process), else a single process.

    gloo on CPU, nccl on CUDA; each process takes the GPU of its LOCAL_RANK.
    Under torchrun a single process still joins a group and trains through
    DDP, so ``torchrun --nproc_per_node 1`` exercises the same communication
    path (nccl on a GPU) as a multi-GPU run.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    dev = torch.device(f"cuda:{local}") if device == "cuda" else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if (world > 1 or launched_by_torchrun()) and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP around ``model`` whenever a process group exists (see :func:`init_distributed`)."""
    if info.world_size == 1 and not dist.is_initialized():
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()
