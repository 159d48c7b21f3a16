"""Where this process stands in a multi-process (DDP) training, before Lightning knows.

A run with ``trainer.devices * trainer.num_nodes > 1`` has one process per device. Each
process runs the whole ``flowerclf train`` command: Lightning's own launcher re-runs it for
the other local devices (``trainer=ddp`` from the command line), ``torchrun`` or SLURM's
``srun`` start every process themselves. Several steps of a run must happen once (open the
MLflow run, check the run directory, evaluate and log after fit), and they come before
``Trainer.fit`` sets up the process group, so the rank is read from the launchers'
environment variables here; Lightning reads the same ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def world_size(devices: int, num_nodes: int) -> int:
    """How many processes a run with these ``trainer`` settings trains on."""
    return devices * num_nodes


def global_rank_from_env(devices_per_node: int, env: Mapping[str, str] | None = None) -> int:
    """This process's global rank, from the variables its launcher set (0 when none did).

    ``RANK`` (torchrun, and Lightning once it has started the processes); ``SLURM_PROCID``
    in a SLURM job step with several tasks; else Lightning's own launcher, which numbers the
    processes it starts with ``LOCAL_RANK`` on node ``NODE_RANK``.
    """
    env = os.environ if env is None else env
    if "RANK" in env:
        return int(env["RANK"])
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"])
    node_rank = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")))
    return node_rank * devices_per_node + int(env.get("LOCAL_RANK", "0"))
