"""Does one process serving batch-1 on one runtime and batches on another pay for it?

    python scripts/split_runtime.py --model models/tf_flowers [--latency onnx]
        [--throughput openvino] [--out results/split_runtime.json]

The figure behind ``flowerclf.inference.auto.SINGLE_RUNTIME_SLACK``. A server answers
single images and batches in turns. ``auto`` could run each on its own winner, but each
runtime keeps its own thread pool, and two pools in one process contend for the cores.
This script measures batch-1 latency (p50, p95) while batches of 32 keep arriving, twice
in one process:

- ``one runtime``: both kinds of call on the latency runtime;
- ``split``: single images on the latency runtime, batches on the throughput runtime.

It prints both and their ratio as JSON, with the machine and the runtimes' versions.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from flowerclf.core.hardware import cpu_description, physical_cores
from flowerclf.core.imaging import list_images
from flowerclf.core.package_format import load_package
from flowerclf.core.preprocess import preprocess_eval
from flowerclf.inference.backends import create_backend
from flowerclf.inference.inputs import to_rgb

ROUNDS = 60  # (one batch, then a few single images) per round
SINGLES_PER_ROUND = 4
BATCH = 32


def serve_mix(single_runtime: Any, batch_runtime: Any, images: np.ndarray) -> list[float]:
    """Alternate one batch of 32 (``batch_runtime``) with a few single images
    (``single_runtime``); return the single images' latencies in seconds."""
    latencies = []
    for round_index in range(ROUNDS):
        batch_runtime.run(images[:BATCH])
        for i in range(SINGLES_PER_ROUND):
            one = images[(round_index * SINGLES_PER_ROUND + i) % len(images)][None]
            started = time.perf_counter()
            single_runtime.run(one)
            latencies.append(time.perf_counter() - started)
    return latencies


def percentiles_ms(latencies: list[float]) -> dict[str, float]:
    values = np.asarray(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(values, 50)), 2),
            "p95_ms": round(float(np.percentile(values, 95)), 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--latency", default="onnx", help="runtime for single images")
    parser.add_argument("--throughput", default="openvino", help="runtime for batches")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    package = load_package(args.model)
    root = Path(package.descriptor.get("source", {}).get("image_root") or package.root)
    paths = list_images(root)[:BATCH]
    images = np.stack([preprocess_eval(to_rgb(p), package.spec) for p in paths])
    single = create_backend(package, args.latency)
    batches = create_backend(package, args.throughput)
    for runtime in (single, batches):  # warm-up: first calls allocate
        runtime.run(images[:BATCH])
        runtime.run(images[:1])
    one = percentiles_ms(serve_mix(single, single, images))
    split = percentiles_ms(serve_mix(single, batches, images))
    # The order could favour the second run (caches warm): measure one runtime again.
    one_again = percentiles_ms(serve_mix(single, single, images))
    report = {
        "model": package.name,
        "hardware": cpu_description(),
        "threads": physical_cores(),
        "latency_runtime": args.latency,
        "throughput_runtime": args.throughput,
        "one_runtime": one,
        "split": split,
        "one_runtime_again": one_again,
        "split_vs_one_runtime_p50": round(
            split["p50_ms"] / min(one["p50_ms"], one_again["p50_ms"]), 2
        ),
        "how": f"{ROUNDS} rounds of one batch of {BATCH} then {SINGLES_PER_ROUND} single "
        "images; single-image latency",
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
