"""One seed for Python, NumPy, torch and DataLoader workers."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> int:
    """Seed every random number generator flowerclf uses.

    Sets Python's ``random``, NumPy's global generator, torch (CPU and CUDA) and, through
    ``PL_SEED_WORKERS``, the per-worker seeds that Lightning's ``pl_worker_init_function``
    derives for DataLoader workers. Returns the seed.
    """
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = "1"
    return seed
