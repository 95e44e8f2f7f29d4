"""captum_smocam._dist: where a process stands in a torchrun job, read from the environment.

Two real ranks are tested end to end in tests/test_cohort.py::test_torchrun_two_ranks_match_one_process;
here, what a process decides from its environment alone (no process group is joined).
"""
import os

import pytest
import torch

from captum_smocam._dist import DistContext, dist_context

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.fixture
def env(monkeypatch):
    """No torchrun variables, and torch's thread count put back afterwards (dist_context sets it)."""
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(threads)


def test_without_torchrun_it_is_rank_0_of_1(env):
    ctx = dist_context("cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size) == (0, 1, 0, 1)
    assert ctx.device == torch.device("cpu") and not ctx.initialized and ctx.is_main
    assert torch.get_num_threads() == CPUS
    ctx.barrier()  # without a process group both are no-ops
    ctx.close()


def test_ranks_on_one_node_share_its_cpus(env):
    # A rank of a 1-process job that says 4 processes share the node gets a quarter of the CPUs (at least 1).
    env.setenv("LOCAL_WORLD_SIZE", "4")
    ctx = dist_context("cpu")
    assert ctx.local_world_size == 4 and not ctx.initialized
    assert torch.get_num_threads() == max(1, CPUS // 4)


@pytest.mark.parametrize("rank, world", [("2", "2"), ("-1", "2"), ("0", "0")])
def test_an_inconsistent_environment_is_refused(env, rank, world):
    env.setenv("RANK", rank)
    env.setenv("WORLD_SIZE", world)
    with pytest.raises(ValueError, match=f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}"):
        dist_context("cpu")


def test_a_variable_that_is_not_an_integer_is_named(env):
    env.setenv("LOCAL_RANK", "first")
    with pytest.raises(ValueError, match="LOCAL_RANK='first' is not an integer"):
        dist_context("cpu")


def test_is_main_is_rank_0():
    assert DistContext(rank=0, world_size=2).is_main and not DistContext(rank=1, world_size=2).is_main
