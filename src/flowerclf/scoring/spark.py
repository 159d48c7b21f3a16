"""``--engine spark``: the same partitions, scored by PySpark ``mapInPandas`` tasks.

The driver makes a DataFrame with one row per pending output partition (its index and its
paths); each task scores its rows with :func:`flowerclf.scoring.local.score_partition`, the
code the local engine runs, writes each partition file itself and returns one small row
of counts per partition. A Python worker loads the package once and keeps its Classifier
(one ONNX Runtime session) for every task it runs afterwards (Spark reuses Python workers).

So the job runs unchanged on a cluster (``--spark-master spark://host:7077``, ``yarn``,
``k8s://...``) provided flowerclf is installed on the executors and the input images and
the output directory are on a file system that every executor mounts at the same path.
The package is read from that shared path, or shipped to every executor with
``SparkContext.addFile`` (``ship_package``).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowerclf.core.errors import MissingExtraError
from flowerclf.scoring.local import score_partition
from flowerclf.scoring.output import OutputDir, Partition, PartitionResult
from flowerclf.scoring.rows import ImageScorer, ScorerSettings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"
LOOPBACK = "127.0.0.1"
INPUT_SCHEMA = "part INT, start LONG, paths ARRAY<STRING>"
RESULT_SCHEMA = "part INT, rows LONG, errors LONG, seconds DOUBLE"
# Spark settings for a scoring job: no web UI to bind a port to, and Arrow batches of at
# most a few partitions (each row already holds a partition's paths).
SESSION_CONFIG = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "4",
    "spark.python.worker.reuse": "true",
}

# Per Python worker: the scorer for each (settings, package path), loaded on first use.
_SCORERS: dict[tuple[ScorerSettings, str], ImageScorer] = {}


def require_pyspark() -> None:
    """Raise a one-line install hint when PySpark is missing."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is None or importlib.util.find_spec("pandas") is None:
        raise MissingExtraError(
            "--engine spark needs PySpark and pandas: pip install 'flowerclf[spark]' "
            "(and Java 17 or later for Spark itself)"
        )


def start_session(master: str, app_name: str = "flowerclf-score") -> SparkSession:
    """A SparkSession whose Python workers run this interpreter (same venv, same flowerclf)."""
    require_pyspark()
    from pyspark.sql import SparkSession

    # The workers must import the flowerclf this driver runs; inherited by the JVM.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    config = dict(SESSION_CONFIG)
    if master.startswith("local"):  # everything on this machine: bind to loopback only
        os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
        config |= {"spark.driver.host": LOOPBACK, "spark.driver.bindAddress": LOOPBACK}
    for key, value in config.items():
        builder = builder.config(key, value)
    # PySpark 4 warns that pandas 3 is untested; mapInPandas here passes plain columns.
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def run_spark(
    settings: ScorerSettings,
    output: OutputDir,
    partitions: Sequence[Partition],
    session: SparkSession,
    ship_package: bool = False,
) -> list[PartitionResult]:
    """Score ``partitions`` as Spark tasks (one task per partition); results by index."""
    if not partitions:
        return []
    shipped_name = None
    if ship_package:
        package = Path(settings.model).resolve()
        session.sparkContext.addFile(str(package), recursive=True)
        shipped_name = package.name
    rows = [(p.index, p.start, list(p.paths)) for p in partitions]
    # One slice per partition: one task each, so Spark balances and retries partitions.
    slices = session.sparkContext.parallelize(rows, numSlices=len(rows))
    frame = session.createDataFrame(slices, INPUT_SCHEMA)
    task_settings = settings
    output_root = str(output.root.resolve())

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return _score_batches(batches, task_settings, output_root, shipped_name)

    results = frame.mapInPandas(score_batches, RESULT_SCHEMA).collect()
    return sorted(
        (PartitionResult(r["part"], r["rows"], r["errors"], r["seconds"]) for r in results),
        key=lambda r: r.index,
    )


def _score_batches(
    batches: Iterator[pd.DataFrame],
    settings: ScorerSettings,
    output_root: str,
    shipped_name: str | None,
) -> Iterator[pd.DataFrame]:
    """Runs in a Spark Python worker: score every partition row of every batch."""
    import pandas as pd

    scorer = _worker_scorer(settings, shipped_name)
    output = OutputDir(output_root)
    for batch in batches:
        results: list[dict[str, Any]] = []
        for part, start, paths in zip(batch["part"], batch["start"], batch["paths"], strict=True):
            partition = Partition(int(part), int(start), tuple(str(p) for p in paths))
            result = score_partition(scorer, output, partition)
            results.append({"part": result.index, "rows": result.rows,
                            "errors": result.errors, "seconds": result.seconds})  # fmt: skip
        yield pd.DataFrame(results, columns=["part", "rows", "errors", "seconds"])


def _worker_scorer(settings: ScorerSettings, shipped_name: str | None) -> ImageScorer:
    model_dir = settings.model
    if shipped_name is not None:
        from pyspark import SparkFiles

        model_dir = SparkFiles.get(shipped_name)
    key = (settings, model_dir)
    if key not in _SCORERS:
        _SCORERS[key] = settings.load(model_dir)
    return _SCORERS[key]
