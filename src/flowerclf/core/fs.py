"""File-system helpers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_directory(destination: Path) -> Iterator[Path]:
    """Fill a fresh sibling directory that replaces ``destination`` only on success.

    On any failure (including Ctrl-C) the staging directory is removed and ``destination``
    is left as it was, so readers never see a half-written directory.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        yield staging
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
