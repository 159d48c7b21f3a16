"""Is the package's ONNX model as fast as the bare backbone, and do our session options help?

    python scripts/onnx_session_check.py --model models/tf_flowers

Times (batch-1 p50 latency, batch-32 throughput, random inputs) the package's
``model.onnx`` and a plain timm export of the same architecture without our heads, each
with ONNX Runtime's default session options and with flowerclf's (threads = physical
cores, sequential execution, full graph optimisation, spinning workers), and with one
thread. Prints one JSON object and writes it to results/onnx_session_check.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from flowerclf.core.hardware import cpu_description
from flowerclf.core.package_format import load_package
from flowerclf.inference.backends import onnx_session_options

RESULTS_FILE = Path(__file__).resolve().parents[1] / "results" / "onnx_session_check.json"
MIN_SECONDS = 3.0


def _time(path: Path, options: Any, size: int, runs: int = 100) -> dict[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    batch = rng.standard_normal((32, 3, size, size), dtype=np.float32)
    for _ in range(5):
        session.run(None, {name: one})
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {name: one})
        latencies.append(time.perf_counter() - started)
    session.run(None, {name: batch})
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < MIN_SECONDS:
        session.run(None, {name: batch})
        done += 32
    return {
        "p50_ms": round(float(np.median(latencies)) * 1000, 2),
        "throughput_ips": round(done / (time.perf_counter() - started), 1),
    }


def main() -> None:
    import onnxruntime as ort

    from flowerclf.models.runners import export_onnx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a `flowerclf export` directory")
    args = parser.parse_args()
    package = load_package(args.model)
    arch, size = package.descriptor["model"]["arch"], package.spec.input_size
    single = ort.SessionOptions()
    single.intra_op_num_threads = 1
    settings = {
        "default_options": ort.SessionOptions(),
        "flowerclf_options": onnx_session_options(),
        "one_thread": single,
    }
    report: dict[str, Any] = {"hardware": cpu_description(), "arch": arch, "input_size": size}
    with tempfile.TemporaryDirectory() as tmp:
        import timm

        bare = Path(tmp) / "bare.onnx"
        export_onnx(timm.create_model(arch, pretrained=False), bare, size, ["logits"])
        for model_name, path in (("package_model", package.require("onnx")), ("bare_timm", bare)):
            report[model_name] = {
                setting: _time(path, options, size) for setting, options in settings.items()
            }
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
