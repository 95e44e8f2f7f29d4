"""Where a process stands in a ``torchrun`` job: rank, world size, device, process group.

:func:`dist_context` joins the process group ``torchrun`` describes in the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``),
picks the device and sets the CPU threads; without ``torchrun`` it is rank 0 of
1. Used by :func:`captum_smocam.cohort.run_cohort` (and re-exported there).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

from .pipeline import resolve_device

__all__ = ["DistContext", "dist_context", "DIST_TIMEOUT"]

#: Process-group timeout: ranks wait this long for each other at the final barrier.
DIST_TIMEOUT = datetime.timedelta(hours=24)


@dataclass
class DistContext:
    """Where this process stands in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value != "" else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def dist_context(device: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group if there is one, pick the device, set the threads.

    Detects ``torchrun`` from ``RANK`` / ``WORLD_SIZE`` in the environment. With
    ``WORLD_SIZE > 1`` it calls ``torch.distributed.init_process_group`` with
    ``nccl`` when CUDA is used, else ``gloo``. The device is
    ``cuda:LOCAL_RANK`` when CUDA is available (``device="auto"``), else CPU.
    Torch CPU threads are set to ``max(1, cpus // LOCAL_WORLD_SIZE)``.

    Args:
        device (str, optional): ``"auto"``, ``"cpu"`` or ``"cuda"``. Default: ``"auto"``

    Returns:
        DistContext: rank, world size, device, whether a group was initialised.
    """
    rank = _env_int("RANK", 0)
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    dev = resolve_device(device, local_rank)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    torch.set_num_threads(max(1, cpus // max(local_world, 1)))
    ctx = DistContext(rank, world, local_rank, local_world, dev, False)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_available():
            raise ValueError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
        if not dist.is_initialized():
            backend = "nccl" if use_cuda else "gloo"
            kwargs = {"device_id": dev} if use_cuda else {}
            dist.init_process_group(backend=backend, timeout=DIST_TIMEOUT, **kwargs)
        ctx.initialized = True
    return ctx
