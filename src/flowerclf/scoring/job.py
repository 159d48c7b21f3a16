"""One scoring job: list the input, split it, skip what is done, run an engine, report.

>>> report = run_score(ScoreOptions(model="models/tf_flowers", input="photos/",
...                                 output="scores/", engine="local"))
>>> report["images"], report["errors"], report["images_per_s"]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import pyarrow as pa

from flowerclf.core.errors import UsageError
from flowerclf.core.fs import exclusive_lock
from flowerclf.core.hardware import physical_cores
from flowerclf.core.open_set import load_open_world
from flowerclf.core.package_format import ModelPackage, load_package
from flowerclf.inference.classifier import DEFAULT_BATCH_SIZE
from flowerclf.scoring.inputs import resolve_inputs
from flowerclf.scoring.limits import DEFAULT_PARTITION_SIZE, ENGINES
from flowerclf.scoring.local import run_local
from flowerclf.scoring.output import (
    JobRecord,
    OutputDir,
    Partition,
    PartitionResult,
    split_partitions,
)
from flowerclf.scoring.rows import ScorerSettings, schema_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreOptions:
    """What ``flowerclf score`` was asked to do (defaults are the command's)."""

    model: str
    input: str
    output: str
    engine: str = "local"
    workers: int | None = None  # local: processes (default: physical cores)
    spark_master: str | None = None  # default local[workers] or local[*]
    ship_package: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    partition_size: int = DEFAULT_PARTITION_SIZE
    threads: int | None = None  # ONNX Runtime threads per session
    embeddings: bool = False
    overwrite: bool = False
    verify: bool = True
    backend: str = "onnx"


def run_score(
    options: ScoreOptions, progress: Callable[[PartitionResult], None] | None = None
) -> dict[str, Any]:
    """Score every image of ``options.input`` into ``options.output``; the report
    (``images``, ``errors``, ``images_per_s``, ``output``...) as a dict."""
    if options.engine not in ENGINES:
        raise UsageError(f"unknown engine {options.engine!r}; valid: {', '.join(ENGINES)}")
    if options.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    started = perf_counter()
    paths = resolve_inputs(options.input)
    partitions = split_partitions(paths, options.partition_size)
    output = OutputDir(options.output)
    workers = _workers(options)
    settings = _scorer_settings(options, workers)
    # The schema needs the package (classes, open world) but no session: a probe scorer
    # would start ONNX Runtime in the parent, which the spawned workers do not need.
    package = load_package(options.model, verify=options.verify)
    model = {"name": package.name, "version": package.version, "backend": options.backend}
    job = JobRecord.describe(paths, options.partition_size, _schema(package, settings), model)
    output.root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(output.lock_path):
        output.prepare(job, overwrite=options.overwrite)
        done = [r for r in (output.finished(p) for p in partitions) if r is not None]
        done_indexes = {r.index for r in done}
        pending = [p for p in partitions if p.index not in done_indexes]
        log.info("%d images in %d partitions; %d already written, %d to score",
                 len(paths), len(partitions), len(done), len(pending))  # fmt: skip
        engine_report, results, scoring_s = _run_engine(
            options, settings, output, pending, workers, progress
        )
        report = _report(options, output, paths, partitions, done, results, scoring_s)
        report |= engine_report | {"seconds": round(perf_counter() - started, 3)}
        output.mark_success(report)
    return report


def _workers(options: ScoreOptions) -> int:
    if options.workers is not None and options.workers < 1:
        raise UsageError("--workers must be at least 1")
    return options.workers or physical_cores()


def _scorer_settings(options: ScoreOptions, workers: int) -> ScorerSettings:
    # Several sessions side by side: one thread each, or they fight over the cores.
    threads = options.threads
    if threads is None and (options.engine == "spark" or workers > 1):
        threads = 1
    return ScorerSettings(
        model=options.model, backend=options.backend, batch_size=options.batch_size,
        threads=threads, embeddings=options.embeddings, verify=options.verify,
    )  # fmt: skip


def _schema(package: ModelPackage, settings: ScorerSettings) -> pa.Schema:
    open_world = load_open_world(package.descriptor, package.root)
    return schema_for(package, open_world.method is not None, settings.embeddings)


def _run_engine(
    options: ScoreOptions,
    settings: ScorerSettings,
    output: OutputDir,
    pending: list[Partition],
    workers: int,
    progress: Callable[[PartitionResult], None] | None,
) -> tuple[dict[str, Any], list[PartitionResult], float]:
    if options.engine == "local":
        started = perf_counter()
        results = run_local(settings, output, pending, workers, progress)
        return {"engine": "local", "workers": workers}, results, perf_counter() - started

    from flowerclf.scoring.spark import DEFAULT_MASTER, run_spark, start_session

    master = options.spark_master or (f"local[{options.workers}]" if options.workers else None)
    master = master or DEFAULT_MASTER
    session_started = perf_counter()
    session = start_session(master)
    try:
        start_s = perf_counter() - session_started
        parallelism = session.sparkContext.defaultParallelism
        started = perf_counter()
        results = run_spark(settings, output, pending, session, options.ship_package)
        scoring_s = perf_counter() - started
    finally:
        session.stop()
    engine = {"engine": "spark", "workers": parallelism, "spark_master": master,
              "spark_start_s": round(start_s, 3)}  # fmt: skip
    return engine, results, scoring_s


def _report(
    options: ScoreOptions,
    output: OutputDir,
    paths: list[str],
    partitions: list[Partition],
    done: list[PartitionResult],
    results: list[PartitionResult],
    scoring_s: float,
) -> dict[str, Any]:
    scored = sum(r.rows for r in results)
    written = len(done) + len(results)
    if written != len(partitions):  # an engine that lost a partition is a bug, not a result
        raise RuntimeError(f"{written} of {len(partitions)} partitions written")
    return {
        "images": len(paths),
        "errors": sum(r.errors for r in (*done, *results)),
        "scored": scored,
        "images_per_s": round(scored / scoring_s, 2) if scored and scoring_s > 0 else 0.0,
        "scoring_s": round(scoring_s, 3),
        "partitions": len(partitions),
        "skipped_partitions": len(done),
        "output": str(output.root),
        "embeddings": options.embeddings,
    }
