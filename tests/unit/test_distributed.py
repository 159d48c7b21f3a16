"""Ranks and seeds of a multi-process (DDP) run, read before Lightning sets anything up."""

from __future__ import annotations

import pytest

from flowerclf.training.distributed import global_rank_from_env, world_size
from flowerclf.training.interrupt import epoch_seed


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),  # one process, no launcher
        ({"LOCAL_RANK": "1"}, 1),  # Lightning's launcher, second process on this node
        ({"NODE_RANK": "1", "LOCAL_RANK": "1"}, 3),  # ... on the second node of 2 x 2
        ({"RANK": "5", "LOCAL_RANK": "1"}, 5),  # torchrun says the global rank itself
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, 2),  # srun, one task per device
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, 0),  # a one-task job step
    ],
)
def test_global_rank_from_each_launcher(env: dict[str, str], rank: int) -> None:
    assert global_rank_from_env(2, env) == rank


def test_world_size_counts_processes_on_every_node() -> None:
    assert world_size(2, 1) == 2
    assert world_size(4, 3) == 12


def test_each_rank_draws_its_own_epoch_seed_and_rank_zero_keeps_the_old_one() -> None:
    seeds = {epoch_seed(42, 3, rank) for rank in range(8)}
    assert len(seeds) == 8
    assert epoch_seed(42, 3, 0) == epoch_seed(42, 3)
    assert epoch_seed(42, 3, 1) == epoch_seed(42, 3, 1)  # reproducible
    assert all(0 <= seed < 2**32 for seed in seeds)
