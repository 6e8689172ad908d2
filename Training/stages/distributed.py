"""Data-parallel training under ``torchrun``: gloo on the CPU, nccl on GPUs; a no-op in a single process.

``torchrun --nproc_per_node N -m Training run ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; every rank trains on its
share of each global batch and DistributedDataParallel averages the gradients, so all ranks hold identical
parameters after every step. Only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def wrap(self, module):
        """DistributedDataParallel around ``module`` when running on several processes; ``module`` otherwise."""
        if not self.enabled:
            return module
        import torch
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if torch.cuda.is_available() and self.backend == "nccl" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def broadcast_object(self, value):
        """Rank 0's ``value`` on every rank (e.g. a decision taken from validation scores)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]


def init_distributed() -> DistributedContext:
    """Join the process group torchrun describes in the environment (or return a single-process context)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def unwrap(module):
    """The plain module inside a DistributedDataParallel wrapper."""
    return getattr(module, "module", module)
