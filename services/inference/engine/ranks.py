"""Rank 0 tells the other ranks what to run: each step's plan, broadcast with torch.distributed.

Every rank must make the same forward call (the tensor-parallel layers all-reduce inside it), so
rank 0 broadcasts the plan before running it; `None` tells the followers to stop. A plan is a
handful of rows of small lists, so broadcast_object_list (one pickle, two collectives) costs far
less than a step.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from services.inference.engine.step_plan import StepPlan


class StepBroadcaster:
    def __init__(self, rank: int) -> None:
        self.rank = rank

    def send(self, plan: StepPlan | None) -> None:
        assert self.rank == 0, "only rank 0 schedules"
        dist.broadcast_object_list([plan], src=0)

    def recv(self) -> StepPlan | None:
        box: list[StepPlan | None] = [None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def min_over_ranks(value: int) -> int:
    """The smallest `value` of all ranks (every rank must call it); `value` itself without torchrun."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    # NCCL reduces only device tensors; init_parallel has set this rank's device.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    box = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(box, op=dist.ReduceOp.MIN)
    return int(box.item())
