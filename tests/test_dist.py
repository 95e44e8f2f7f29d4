"""captum_smocam._dist: where a process stands in a torchrun job, read from the environment.

Two real ranks are tested end to end in tests/test_cohort.py::test_torchrun_two_ranks_match_one_process;
here, what a process decides from its environment alone (no process group is joined).
"""
import os
import warnings

import pytest
import torch

from captum_smocam._dist import THREADS_ENV, DistContext, dist_context, threads_per_rank

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", THREADS_ENV)
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
    torch.set_num_threads(CPUS)
    ctx = dist_context("cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size) == (0, 1, 0, 1)
    assert ctx.device == torch.device("cpu") and not ctx.initialized and ctx.is_main
    assert torch.get_num_threads() == CPUS
    ctx.barrier()  # without a process group both are no-ops
    ctx.close()


def test_ranks_on_one_node_share_its_cpus(env):
    # A rank of a 1-process job that says 4 processes share the node gets a quarter of the CPUs (at least 1).
    env.setenv("LOCAL_WORLD_SIZE", "4")
    torch.set_num_threads(CPUS)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ctx = dist_context("cpu")
    assert [str(w.message) for w in seen] == ([] if CPUS >= 4 else [
        f"4 rank(s) x 1 thread(s) on a node of {CPUS} CPUs: its CPUs are oversubscribed"])
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


@pytest.mark.parametrize("cpus, ranks, current, told, expected", [
    (16, 4, 16, None, 4),   # shared out
    (16, 3, 16, None, 5),   # rounded down: 15 of 16 CPUs busy
    (16, 1, 8, None, 8),    # never more than the process has (OMP_NUM_THREADS, torch.set_num_threads)
    (16, 2, 1, None, 1),
    (2, 4, 2, None, 1),     # more ranks than CPUs: 1 each (dist_context warns)
    (2, 2, 2, 2, 2),        # told (SMOCAM_THREADS): as given
])
def test_threads_per_rank(cpus, ranks, current, told, expected):
    assert threads_per_rank(cpus, ranks, current, told) == expected
    if told is None and ranks <= cpus:
        assert ranks * expected <= cpus


@pytest.mark.skipif(CPUS < 2, reason="needs 2 CPUs to see a thread count raised")
def test_a_rank_never_runs_more_threads_than_the_process_was_given(env):
    # Before issue 23 a single process was set to every CPU, whatever OMP_NUM_THREADS or the caller had set.
    torch.set_num_threads(1)
    dist_context("cpu")
    assert torch.get_num_threads() == 1


@pytest.mark.skipif(CPUS < 2, reason="needs 2 CPUs to oversubscribe by telling")
def test_threads_told_are_used_and_oversubscription_is_named(env):
    env.setenv("LOCAL_WORLD_SIZE", str(CPUS))
    env.setenv(THREADS_ENV, "2")
    with pytest.warns(UserWarning, match=f"{CPUS} rank\\(s\\) x 2 thread\\(s\\) on a node of {CPUS} CPUs"):
        dist_context("cpu")
    assert torch.get_num_threads() == 2
    env.setenv(THREADS_ENV, "-1")
    with pytest.raises(ValueError, match="SMOCAM_THREADS=-1 must be a positive integer"):
        dist_context("cpu")
