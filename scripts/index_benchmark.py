"""Similarity search at scale: recall@10 of the FAISS index against exact search, and
queries/s, on synthetic embeddings.

The vectors are unit vectors around 1,000 cluster centres (128-d by default), spread so
that a point's nearest neighbours have cosine similarities of about 0.7 to 0.75, as the
tf_flowers package's embeddings do (its 10th nearest training image: 0.72 on average).
Exact search is the same matrix product ``Classifier.similar`` runs below the threshold.

For each size and index kind it prints: build seconds, recall@10 against exact search
(over ``--queries`` queries), queries/s in one batch and one query at a time, and the same
two figures for exact search.

Usage: ``python scripts/index_benchmark.py [--sizes 10000,1000000] [--kinds hnsw,ivf]
[--dim 128] [--queries 1000] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from functools import partial
from time import perf_counter
from typing import Any

import numpy as np

from flowerclf.core.hardware import cpu_description
from flowerclf.inference.similarity import ANN_THRESHOLD, AnnIndex, AnnSettings, exact_search

K = 10
CLUSTERS = 1_000
SPREAD = 0.6  # per-dimension noise around a centre whose entries are N(0, 1)
CHUNK = 100_000  # rows generated (and queries searched exactly) at a time
SINGLE_QUERIES = 200  # timed one at a time


def synthetic(rows: int, dim: int, seed: int) -> np.ndarray:
    """``rows`` unit vectors around :data:`CLUSTERS` shared centres."""
    centres = np.random.default_rng(12345).normal(size=(CLUSTERS, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        block = centres[rng.integers(0, CLUSTERS, n)]
        block += SPREAD * rng.standard_normal((n, dim), dtype=np.float32)
        out[start : start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_top_k(data: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact neighbours of every query (in chunks of queries: bounded memory) and the time."""
    started = perf_counter()
    rows = [exact_search(data, queries[i : i + 100], K)[1] for i in range(0, len(queries), 100)]
    return np.concatenate(rows), perf_counter() - started


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    shared = [len(set(a) & set(b)) for a, b in zip(found, truth, strict=True)]
    return float(np.mean(shared)) / truth.shape[1]


def single_query_qps(search: Any, queries: np.ndarray) -> float:
    started = perf_counter()
    for query in queries[:SINGLE_QUERIES]:
        search(query[None])
    return min(SINGLE_QUERIES, len(queries)) / (perf_counter() - started)


def bench_size(rows: int, kinds: list[str], dim: int, n_queries: int) -> dict[str, Any]:
    data = synthetic(rows, dim, seed=1)
    queries = synthetic(n_queries, dim, seed=2)
    truth, exact_s = exact_top_k(data, queries)
    result: dict[str, Any] = {
        "rows": rows,
        "exact": {
            "qps_batch": round(n_queries / exact_s, 1),
            "qps_single": round(single_query_qps(partial(exact_search, data, k=K), queries), 1),
        },
    }
    for kind in kinds:
        started = perf_counter()
        index = AnnIndex.build(data, AnnSettings(kind=kind))
        build_s = perf_counter() - started
        started = perf_counter()
        _, found = index.search(queries, K)
        batch_s = perf_counter() - started
        result[kind] = {
            "build_s": round(build_s, 1),
            "recall_at_10": round(recall(found, truth), 4),
            "qps_batch": round(n_queries / batch_s, 1),
            "qps_single": round(single_query_qps(partial(index.search, k=K), queries), 1),
            "settings": asdict(index.settings),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000", help="comma-separated row counts")
    parser.add_argument("--kinds", default="hnsw,ivf", help="comma-separated: hnsw, ivf")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    header = {"hardware": cpu_description(), "dim": args.dim, "queries": args.queries,
              "k": K, "threshold": ANN_THRESHOLD, "load_average": os.getloadavg()}  # fmt: skip
    if not args.json:
        print(json.dumps(header))
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        result = bench_size(size, kinds, args.dim, args.queries)
        results.append(result)
        if not args.json:
            _print(result, kinds)
    if args.json:
        sys.stdout.write(json.dumps(header | {"results": results}) + "\n")
    return 0


def _print(result: dict[str, Any], kinds: list[str]) -> None:
    exact = result["exact"]
    print(f"{result['rows']:,} vectors: exact {exact['qps_batch']} q/s batched, "
          f"{exact['qps_single']} q/s one at a time")  # fmt: skip
    for kind in kinds:
        f = result[kind]
        print(f"  {kind:<5} build {f['build_s']} s, recall@10 {f['recall_at_10']}, "
              f"{f['qps_batch']} q/s batched, {f['qps_single']} q/s one at a time")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
