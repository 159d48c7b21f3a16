"""Batch scoring: classify a directory, glob, list or parquet of images into a parquet
dataset, on a local process pool or on Spark (``flowerclf score``).

Runtime only (the inference and core layers, plus pyarrow; PySpark and pandas for the
Spark engine): no training stack.
"""

from flowerclf.scoring.job import ENGINES, ScoreOptions, run_score

__all__ = ["ENGINES", "ScoreOptions", "run_score"]
