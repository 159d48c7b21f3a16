"""``--engine local``: a pool of worker processes, one ONNX Runtime session in each.

Each worker loads the package once (the pool's initializer) and then scores whole
partitions, writing each file itself, so only a few numbers per partition travel back to
the parent. With one worker the partitions are scored in this process (no pool to start).
Workers are started with ``spawn``: a forked copy of a process that already runs ONNX
Runtime or decode threads can deadlock.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from time import perf_counter

from flowerclf.scoring.output import OutputDir, Partition, PartitionResult, error_count
from flowerclf.scoring.rows import ImageScorer, ScorerSettings

Progress = Callable[[PartitionResult], None]

# The worker process's scorer, loaded by the pool initializer.
_WORKER_SCORER: ImageScorer | None = None


def score_partition(
    scorer: ImageScorer, output: OutputDir, partition: Partition
) -> PartitionResult:
    """Score one partition and write its file (the unit of work of every engine)."""
    started = perf_counter()
    table = scorer.score(partition.paths)
    output.write(partition, table)
    return PartitionResult(
        partition.index, table.num_rows, error_count(table), perf_counter() - started
    )


def run_local(
    settings: ScorerSettings,
    output: OutputDir,
    partitions: Sequence[Partition],
    workers: int,
    progress: Progress | None = None,
) -> list[PartitionResult]:
    """Score ``partitions`` with ``workers`` processes; results in completion order."""
    if not partitions:
        return []
    if workers <= 1:
        return _run_in_process(settings, output, partitions, progress)
    results = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(partitions)), mp_context=context,
        initializer=_init_worker, initargs=(settings,),
    ) as pool:  # fmt: skip
        futures = [pool.submit(_score_in_worker, str(output.root), p) for p in partitions]
        try:
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                if progress:
                    progress(result)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def _run_in_process(
    settings: ScorerSettings,
    output: OutputDir,
    partitions: Sequence[Partition],
    progress: Progress | None,
) -> list[PartitionResult]:
    scorer = settings.load()
    results = []
    try:
        for partition in partitions:
            result = score_partition(scorer, output, partition)
            results.append(result)
            if progress:
                progress(result)
    finally:
        scorer.close()
    return results


def _init_worker(settings: ScorerSettings) -> None:
    global _WORKER_SCORER
    _WORKER_SCORER = settings.load()


def _score_in_worker(output_root: str, partition: Partition) -> PartitionResult:
    assert _WORKER_SCORER is not None, "the pool initializer loads the scorer"
    return score_partition(_WORKER_SCORER, OutputDir(output_root), partition)
