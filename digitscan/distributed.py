"""Running `fit` under torchrun: one process per GPU (NCCL) or per CPU slot (gloo)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .devices import pick_device


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job; a plain run is rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """Only the main rank writes checkpoints, logs and the archive."""
        return self.rank == 0


def setup(device_spec: str) -> tuple[Ranks, torch.device]:
    """Join the torchrun job if there is one (WORLD_SIZE > 1) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_spec)
    if world == 1:
        return Ranks(), device
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def teardown(ranks: Ranks) -> None:
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
