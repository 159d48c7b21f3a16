"""Batch scoring: classify a directory, glob, list or parquet of images into a parquet
dataset, on a local process pool or on Spark (``flowerclf score``).

Runtime only (the inference and core layers, plus pyarrow; PySpark and pandas for the
Spark engine): no training stack.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ENGINES", "ScoreOptions", "run_score"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the job needs pyarrow (the [score] extra), and importing any
    # flowerclf.scoring submodule runs this file, the CLI's parser included.
    if name in __all__:
        from flowerclf.scoring import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
