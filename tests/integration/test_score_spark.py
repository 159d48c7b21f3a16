"""``flowerclf score --engine spark`` in Spark local mode on real tf_flowers photos matches
``--engine local`` row for row; a corrupt file becomes an error row.

One Spark job in one CLI process (the JVM's start-up dominates the cost), with the
package shipped to the workers through ``SparkContext.addFile``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flowerclf.scoring import ScoreOptions, run_score
from tests.helpers.server import subprocess_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("pyspark") is None, reason="needs [spark]"),
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java 17+"),
]

PER_CLASS = 8
PARTITION_SIZE = 12
SPARK_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def slice_list(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 tf_flowers photos (the first of each class) and a corrupt file, as a path list."""
    root = tmp_path_factory.mktemp("spark-slice")
    flowers = shared_data / "tf_flowers"
    paths = [p for d in sorted(flowers.iterdir()) if d.is_dir()
             for p in sorted(d.glob("*.jpg"))[:PER_CLASS]]  # fmt: skip
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(paths[0].read_bytes()[:300])  # a truncated JPEG
    paths.insert(17, corrupt)
    listing = root / "paths.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    return listing


def test_spark_local_mode_matches_the_local_engine(
    colour_package: Path, slice_list: Path, tmp_path: Path
) -> None:
    spark_out = tmp_path / "spark"
    command = [sys.executable, "-m", "flowerclf", "-q", "score", "--model", str(colour_package),
               "--input", str(slice_list), "--output", str(spark_out), "--engine", "spark",
               "--spark-master", "local[2]", "--ship-package",
               "--partition-size", str(PARTITION_SIZE), "--json"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(),
                            timeout=SPARK_TIMEOUT_S)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["engine"] == "spark" and report["workers"] == 2
    assert report["images"] == 41 and report["errors"] == 1 and report["partitions"] == 4

    local_out = tmp_path / "local"
    run_score(ScoreOptions(model=str(colour_package), input=str(slice_list),
                           output=str(local_out), engine="local", workers=1,
                           partition_size=PARTITION_SIZE))  # fmt: skip
    spark_rows = pq.read_table(spark_out).to_pylist()
    local_rows = pq.read_table(local_out).to_pylist()
    assert [r["path"] for r in spark_rows] == [r["path"] for r in local_rows]
    assert len(spark_rows) == 41
    for spark_row, local_row in zip(spark_rows, local_rows, strict=True):
        assert spark_row["predicted_class"] == local_row["predicted_class"], spark_row["path"]
        assert spark_row["error"] == local_row["error"]
        if local_row["error"] is None:
            np.testing.assert_allclose(
                spark_row["probabilities"], local_row["probabilities"], atol=1e-5
            )
    errors = [r for r in spark_rows if r["error"] is not None]
    assert [Path(r["path"]).name for r in errors] == ["corrupt.jpg"]
    classes = {r["predicted_class"] for r in spark_rows if r["error"] is None}
    assert len(classes) > 1, "every photo got the same class: the rows carry no signal"
