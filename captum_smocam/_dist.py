"""Where a process stands in a ``torchrun`` job: rank, world size, device, process group.

:func:`dist_context` joins the process group ``torchrun`` describes in the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``),
picks the device and sets the CPU threads; without ``torchrun`` it is rank 0 of
1. Used by :func:`captum_smocam.cohort.run_cohort` (and re-exported there).
"""
from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from .pipeline import resolve_device

__all__ = ["DistContext", "dist_context", "DIST_TIMEOUT", "threads_per_rank", "THREADS_ENV"]

#: Process-group timeout: ranks wait this long for each other at the final barrier.
DIST_TIMEOUT = datetime.timedelta(hours=24)
#: Environment variable that tells each rank how many torch CPU threads to run, as given (even when the
#: ranks then run more threads than the node has CPUs).
THREADS_ENV = "SMOCAM_THREADS"


def threads_per_rank(cpus: int, local_world: int, current: int, told: Optional[int] = None) -> int:
    """Torch CPU threads for one of ``local_world`` ranks that share ``cpus`` CPUs.

    ``told`` (:data:`THREADS_ENV`) is used as given. Otherwise the CPUs are
    shared out, ``cpus // local_world`` each, at least 1 and never more than
    the ``current`` thread count (what ``OMP_NUM_THREADS`` or
    ``torch.set_num_threads`` gave the process): ranks x threads <= cpus
    whenever there are at least as many CPUs as ranks.

    Examples::

        >>> threads_per_rank(16, 4, 16), threads_per_rank(16, 1, 8), threads_per_rank(2, 4, 2)
        (4, 8, 1)
        >>> threads_per_rank(2, 2, 2, told=2)
        2
    """
    if told is not None:
        return told
    return max(1, min(current, cpus // max(local_world, 1)))


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
    Torch CPU threads are set by :func:`threads_per_rank`: ``cpus //
    LOCAL_WORLD_SIZE`` (at least 1), never more than the process already has
    (``OMP_NUM_THREADS``, ``torch.set_num_threads``), or ``SMOCAM_THREADS``
    as given; a warning says when the ranks of a node run more threads than
    it has CPUs.

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
    told = _env_int(THREADS_ENV, 0) or None
    if told is not None and told < 0:
        raise ValueError(f"environment variable {THREADS_ENV}={told} must be a positive integer")
    threads = threads_per_rank(cpus, local_world, torch.get_num_threads(), told)
    if threads * max(local_world, 1) > cpus:
        warnings.warn(f"{local_world} rank(s) x {threads} thread(s) on a node of {cpus} CPUs: its CPUs are "
                      f"oversubscribed{' (' + THREADS_ENV + ')' if told else ''}", UserWarning, stacklevel=2)
    torch.set_num_threads(threads)
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
