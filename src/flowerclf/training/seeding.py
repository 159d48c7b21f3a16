"""One seed for Python, NumPy, torch and DataLoader workers."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from flowerclf.core.errors import ConfigError


def seed_everything(seed: int) -> int:
    """Seed every random number generator flowerclf uses.

    Sets Python's ``random``, NumPy's global generator, torch (CPU and CUDA) and, through
    ``PL_SEED_WORKERS``, the per-worker seeds that Lightning's ``pl_worker_init_function``
    derives for DataLoader workers. Returns the seed.
    """
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = "1"
    return seed


@contextmanager
def preserved_random_state() -> Iterator[None]:
    """Run a block that reseeds (e.g. to draw reproducible augmented views) without
    changing anything drawn after it: Python, NumPy and torch generator states and the
    Lightning worker-seed variables are put back on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    env = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
