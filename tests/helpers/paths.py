"""Where the repository and the real datasets are."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA_ENV = "FLOWERCLF_SHARED_DATA"


def shared_data_dir() -> Path:
    """The real datasets: ``$FLOWERCLF_SHARED_DATA`` or ``../shared/data`` beside the repo."""
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"
