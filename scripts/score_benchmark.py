"""Batch-scoring throughput: ``flowerclf score`` engines against in-memory ``Classifier.predict``.

On the same images (read once first, so every run finds them in the page cache), prints
images/s for:

- ``predict``: one process, ``Classifier.predict`` on batches, nothing written (the
  reference: what a hand-written loop gets);
- ``local x1``: ``score --engine local --workers 1`` (one process, ONNX Runtime on every
  core);
- ``local x1 (1 thread)``: the same with one ONNX Runtime thread: the per-process cost the
  scaling ratio divides by;
- ``local x2``: two worker processes, one thread each;
- ``spark local[2]``: ``score --engine spark --spark-master local[2]``, timed over the
  scoring job (the JVM and session start-up, paid once per job, is printed beside it);

and the ratios the project's targets name: spark local[2] / local x2 (>= 0.8) and
local x2 / local x1 (1 thread) (>= 1.6). Each score run writes a real parquet dataset to a
temporary directory. The load average before and after is printed: on a shared machine,
other work steals cores and lowers every figure.

Usage: ``python scripts/score_benchmark.py --model models/tf_flowers --images DIR
[--limit N] [--batch-size 32] [--partition-size 256] [--no-spark] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from time import perf_counter
from typing import Any

from flowerclf import Classifier
from flowerclf.core.hardware import cpu_description
from flowerclf.scoring import ScoreOptions, run_score
from flowerclf.scoring.inputs import resolve_inputs

TARGET_SPARK_VS_LOCAL = 0.8
TARGET_SCALING = 1.6


def _warm_page_cache(paths: list[str]) -> None:
    for path in paths:
        Path(path).read_bytes()


def _predict_in_memory(model: str, paths: list[str], batch_size: int) -> dict[str, Any]:
    # The scoring engines run ONNX Runtime sessions (score's default backend): so does the
    # baseline, or the ratios would compare runtimes instead of engines.
    with Classifier.load(model, backend="onnx", batch_size=batch_size) as classifier:
        started = perf_counter()
        for start in range(0, len(paths), batch_size * 4):
            classifier.predict_each(paths[start : start + batch_size * 4])
        seconds = perf_counter() - started
    return {"images_per_s": round(len(paths) / seconds, 2), "seconds": round(seconds, 2)}


def _score(listing: Path, args: argparse.Namespace, **engine: Any) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="flowerclf-score-bench-"))
    try:
        report = run_score(ScoreOptions(
            model=args.model, input=str(listing), output=str(out),
            batch_size=args.batch_size, partition_size=args.partition_size, **engine,
        ))  # fmt: skip
    finally:
        shutil.rmtree(out, ignore_errors=True)
    keep = ("images_per_s", "scoring_s", "seconds", "errors", "workers", "spark_start_s")
    return {k: report[k] for k in keep if k in report}


def run(args: argparse.Namespace) -> dict[str, Any]:
    paths = resolve_inputs(args.images)[: args.limit or None]
    _warm_page_cache(paths)
    with tempfile.TemporaryDirectory() as scratch:
        listing = Path(scratch) / "paths.txt"
        listing.write_text("\n".join(paths) + "\n")
        load_before = os.getloadavg()
        runs: dict[str, dict[str, Any]] = {}
        runs["predict"] = _predict_in_memory(args.model, paths, args.batch_size)
        runs["local x1"] = _score(listing, args, engine="local", workers=1)
        runs["local x1 (1 thread)"] = _score(listing, args, engine="local", workers=1, threads=1)
        runs["local x2"] = _score(listing, args, engine="local", workers=2)
        if not args.no_spark:
            runs["spark local[2]"] = _score(listing, args, engine="spark", spark_master="local[2]")
        load_after = os.getloadavg()
    reference = runs["predict"]["images_per_s"]
    for figures in runs.values():
        figures["vs_predict"] = round(figures["images_per_s"] / reference, 3)
    ratios = {
        "local_x2_vs_x1_one_thread": _ratio(runs, "local x2", "local x1 (1 thread)"),
        "local_x2_vs_x1": _ratio(runs, "local x2", "local x1"),
    }
    if "spark local[2]" in runs:
        ratios["spark_vs_local_x2"] = _ratio(runs, "spark local[2]", "local x2")
    return {
        "images": len(paths), "hardware": cpu_description(), "runs": runs, "ratios": ratios,
        "targets": {"spark_vs_local_x2": TARGET_SPARK_VS_LOCAL,
                    "local_x2_vs_x1_one_thread": TARGET_SCALING},
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in load_after]},
    }  # fmt: skip


def _ratio(runs: dict[str, dict[str, Any]], top: str, bottom: str) -> float:
    return round(runs[top]["images_per_s"] / runs[bottom]["images_per_s"], 3)


def _print(report: dict[str, Any]) -> None:
    load = report["load_average"]
    print(f"{report['images']} images; {report['hardware']}; load average before "
          f"{load['before']}, after {load['after']}")  # fmt: skip
    print(f"{'run':<22}{'images/s':>10}{'x predict':>11}{'seconds':>9}  notes")
    for name, figures in report["runs"].items():
        notes = f"Spark start-up {figures['spark_start_s']} s" if "spark_start_s" in figures else ""
        seconds = figures.get("scoring_s", figures["seconds"])
        print(f"{name:<22}{figures['images_per_s']:>10}{figures['vs_predict']:>11}"
              f"{seconds:>9}  {notes}")  # fmt: skip
    targets = report["targets"]
    for name, value in report["ratios"].items():
        goal = targets.get(name)
        verdict = (
            "" if goal is None else f" (target >= {goal}: {'met' if value >= goal else 'NOT met'})"
        )
        print(f"{name}: {value}{verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model package directory")
    parser.add_argument("--images", required=True, help="directory, glob or list of images")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--partition-size", type=int, default=256)
    parser.add_argument("--no-spark", action="store_true", help="skip the Spark run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
