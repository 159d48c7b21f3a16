"""The MLflow route to Spark scoring: ``mlflow.pyfunc.spark_udf`` on a package's MLflow model.

Spark reads the image files itself (the ``binaryFile`` source), the UDF gets them as
base64 in the ``image`` column the package's pyfunc model takes, and each Python worker
loads the model once. Prints the rows/s and the agreement with ``Classifier.predict`` on
the same files (same class, largest confidence difference).

``flowerclf score --engine spark`` is the route with resumable, partitioned output and the
probability and embedding columns; this one suits pipelines that already apply MLflow
models to Spark DataFrames (any registered model URI works in place of the package path).

Usage: ``python scripts/score_mlflow_udf.py --model models/tf_flowers --images DIR
[--limit 40] [--master local[2]]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from time import perf_counter

import mlflow.pyfunc
from pyspark.sql import functions as F

from flowerclf import Classifier
from flowerclf.core.hardware import cpu_description
from flowerclf.core.package_format import MLFLOW_DIR
from flowerclf.scoring.inputs import resolve_inputs
from flowerclf.scoring.spark import start_session

RESULT_TYPE = "predicted_class string, confidence double, is_known boolean, error string"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model package with an mlflow_model/")
    parser.add_argument("--images", required=True, help="directory, glob or list of images")
    parser.add_argument("--limit", type=int, default=40, help="first N images (0: all)")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)

    paths = resolve_inputs(args.images)[: args.limit or None]
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    model_uri = str(Path(args.model) / MLFLOW_DIR)
    spark = start_session(args.master, app_name="flowerclf-mlflow-udf")
    # Spark splits base64 text into 76-character lines unless told not to; the pyfunc
    # model takes one unbroken base64 string.
    spark.conf.set("spark.sql.chunkBase64String.enabled", "false")
    try:
        # env_manager="local": the workers use this environment (no network, no conda).
        udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=RESULT_TYPE,
                                      env_manager="local")  # fmt: skip
        started = perf_counter()
        images = spark.read.format("binaryFile").load(paths)
        scored = images.select(
            F.col("path"), udf(F.struct(F.base64("content").alias("image"))).alias("p")
        ).select("path", "p.*")
        rows = {r["path"].removeprefix("file:"): r.asDict() for r in scored.collect()}
        seconds = perf_counter() - started
    finally:
        spark.stop()

    print(json.dumps(next(iter(rows.values()))), file=sys.stderr)  # one row, for the record
    with Classifier.load(args.model) as classifier:
        expected = dict(zip(paths, classifier.predict_each(paths), strict=True))
    same_class, largest_diff = 0, 0.0
    for path, prediction in expected.items():
        row = rows[path]
        if isinstance(prediction, Exception):
            same_class += bool(row["error"])
            continue
        same_class += row["predicted_class"] == prediction.predicted_class
        largest_diff = max(largest_diff, abs(row["confidence"] - prediction.confidence))
    report = {
        "images": len(paths), "rows": len(rows), "master": args.master,
        "rows_per_s": round(len(rows) / seconds, 2), "seconds": round(seconds, 2),
        "same_class_as_classifier": f"{same_class}/{len(paths)}",
        "max_confidence_diff": round(largest_diff, 7), "hardware": cpu_description(),
    }  # fmt: skip
    sys.stdout.write(json.dumps(report) + "\n")
    return 0 if same_class == len(paths) else 1


if __name__ == "__main__":
    raise SystemExit(main())
