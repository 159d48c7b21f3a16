"""``flowerclf export``, ``flowerclf predict`` and ``flowerclf benchmark``."""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flowerclf.core.errors import UsageError
from flowerclf.core.imaging import list_images
from flowerclf.core.open_set import METHODS
from flowerclf.inference.backends import BACKENDS, DEFAULT_BACKEND
from flowerclf.inference.benchmark import format_report, load_targets, run_benchmark
from flowerclf.inference.classifier import Classifier, Prediction

MODEL_ENV = "FLOWERCLF_MODEL"
NO_VERIFY_HELP = "skip checking the package files' sha256 (development only)"
PROGRESS_THRESHOLD = 64  # images; below this a bar is noise
ONNX_RUNTIMES = ("onnx_fp32", "onnx_int8")
OPENVINO_RUNTIMES = ("openvino_fp32", "openvino_int8", "openvino_bf16")
# The eager PyTorch runtime needs the training extra (torch and timm).
TORCH_RUNTIME_MODULES = ("torch", "timm")


# Open world (issue 13): reject.<name>=VALUE -> OpenWorldOptions(<name>=VALUE).
REJECT_OPTIONS: dict[str, type] = {"keep": float, "method": str, "knn_k": int}


def _parse_export_options(options: list[str]) -> dict[str, Any]:
    from flowerclf.export.options import OpenWorldOptions

    parsed: dict[str, Any] = {}
    reject: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        name = key.removeprefix("reject.")
        if sep and key == "data.root":
            parsed["data_root"] = value
        elif sep and key.startswith("reject.") and name in REJECT_OPTIONS:
            try:
                reject[name] = REJECT_OPTIONS[name](value)
            except ValueError:
                raise UsageError(f"{key} must be {REJECT_OPTIONS[name].__name__}") from None
        else:
            valid = ", ".join(
                [
                    "data.root=<dir>",
                    *(f"reject.{k}=<{t.__name__}>" for k, t in REJECT_OPTIONS.items()),
                ]
            )
            raise UsageError(f"unknown export option {option!r}; valid: {valid}")
    if reject:
        parsed["open_world"] = OpenWorldOptions(**reject)
    return parsed


def _export(args: argparse.Namespace) -> int:
    from flowerclf.export.package_writer import ExportOptions, export_package

    options = ExportOptions(
        int8=args.int8,
        openvino=args.openvino,
        tensorrt=args.tensorrt,
        triton=not args.no_triton,
        mlflow=not args.no_mlflow,
        register_name=args.register_name,
        gallery=not args.no_gallery,
        parity_images=args.parity_images,
        calibration_images=args.calibration_images,
        force=args.force,
        **_parse_export_options(args.options),
    )
    package = export_package(
        args.target, args.out, options, progress=lambda m: sys.stderr.write(m + "\n")
    )
    summary = {
        "package": str(package.root),
        "name": package.name,
        "version": package.version,
        "files": package.descriptor["files"],
        "checks": package.descriptor.get("checks", {}),
        "mlflow": package.descriptor.get("mlflow", {}),
    }
    sys.stdout.write(json.dumps(summary, indent=None if args.json else 2) + "\n")
    return 0


def expand_inputs(patterns: Iterable[str]) -> list[str]:
    """Files as given, directories walked (sorted, image suffixes), globs expanded."""

    found: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found.extend(str(p) for p in list_images(path))
        elif glob.has_magic(pattern) and not path.exists():
            matches = sorted(glob.glob(pattern, recursive=True))  # noqa: PTH207 (absolute globs)
            found.extend(m for m in matches if Path(m).is_file())
            if not matches:
                found.append(pattern)  # reported as an error line, like a missing file
        else:
            found.append(pattern)
    return found


def resolve_model(model: str | None) -> str:
    model = model or os.environ.get(MODEL_ENV)
    if not model:
        raise UsageError(
            f"no model package given: pass --model DIR (written by `flowerclf export`) or set "
            f"{MODEL_ENV}"
        )
    return model


def _predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    paths = expand_inputs(args.paths)
    if not paths:
        raise FileNotFoundError(f"no images found in {' '.join(args.paths)}")
    single = len(args.paths) == 1 and len(paths) == 1 and not Path(args.paths[0]).is_dir()
    classifier = Classifier.load(
        resolve_model(args.model), backend=args.backend, batch_size=args.batch_size,
        reject=not args.no_reject, reject_threshold=args.reject_threshold,
        reject_method=args.reject_method, verify=not args.no_verify, tta=args.tta,
    )  # fmt: skip
    failures = 0
    out = sys.stdout
    with tqdm(total=len(paths), desc="predict", unit="img", file=sys.stderr,
              disable=len(paths) < PROGRESS_THRESHOLD) as bar:  # fmt: skip
        step = classifier.batch_size * 4  # bounded memory, results stream out
        for start in range(0, len(paths), step):
            chunk = paths[start : start + step]
            for path, result in zip(
                chunk, classifier.predict_each(chunk, top_k=args.top_k), strict=True
            ):
                if isinstance(result, Prediction):
                    record = result.to_dict() if single else {"path": path} | result.to_dict()
                else:
                    failures += 1
                    record = {"path": path, "error": result.reason}
                out.write(json.dumps(record) + "\n")
            out.flush()
            bar.update(len(chunk))
    if failures:
        sys.stderr.write(f"error: {failures} of {len(paths)} images could not be read\n")
    return 1 if failures else 0


def default_runtimes() -> list[str]:
    """Every runtime this install can run (PyTorch only where the training extra is,
    OpenVINO where its extra is), then ``auto``."""
    runtimes = list(ONNX_RUNTIMES)
    if all(importlib.util.find_spec(module) for module in TORCH_RUNTIME_MODULES):
        runtimes.insert(0, "torch")
    else:
        sys.stderr.write(
            "benchmark: PyTorch is not installed (pip install 'flowerclf[train]' adds the "
            "torch runtime)\n"
        )
    if importlib.util.find_spec("openvino"):
        runtimes += OPENVINO_RUNTIMES
    else:
        sys.stderr.write(
            "benchmark: OpenVINO is not installed (pip install 'flowerclf[openvino]' adds it)\n"
        )
    return [*runtimes, "auto"]


def _benchmark(args: argparse.Namespace) -> int:

    report = run_benchmark(
        resolve_model(args.model),
        images=args.images,
        num_images=args.num_images,
        batch_size=args.batch_size,
        latency_runs=args.latency_runs,
        runtimes=args.runtimes.split(",") if args.runtimes else default_runtimes(),
        threads=args.threads,
        verify=not args.no_verify,
        targets=load_targets(args.targets) if args.targets else None,
    )
    sys.stdout.write(json.dumps(report) + "\n" if args.json else format_report(report))
    return 0


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_overrides: Callable[[argparse.ArgumentParser], None],
) -> None:

    export = commands.add_parser(
        "export",
        help="write a self-contained model package (weights, ONNX, int8, Triton, MLflow)",
        description=(
            "Export the best checkpoint of an MLflow run (by id) or a .ckpt file into one "
            "directory that flowerclf predict/serve/benchmark, Triton and MLflow load. The "
            "run's prepared dataset is read for the ONNX parity check, int8 calibration and "
            "the similarity index (data.root=DIR if it moved)."
        ),
    )
    export.add_argument("target", help="MLflow run id or checkpoint path")
    export.add_argument("--out", required=True, help="package directory to write")
    export.add_argument(
        "options", nargs="*", metavar="KEY=VALUE",
        help="data.root=DIR; reject.keep=0.95 (share of known val images kept), "
        "reject.method=msp|energy|knn|mahalanobis|msp_knn, reject.knn_k=1",
    )  # fmt: skip
    export.add_argument("--force", action="store_true", help="replace a non-empty --out")
    export.add_argument(
        "--int8", choices=["static", "dynamic", "none"], default="static",
        help="int8 ONNX quantisation (default: static, calibrated on training images)",
    )  # fmt: skip
    export.add_argument(
        "--openvino", choices=["auto", "on", "off"], default="auto",
        help="OpenVINO int8 model (NNCF) and bf16 accuracy check (default auto: where openvino "
        "and nncf are installed)",
    )  # fmt: skip
    export.add_argument(
        "--tensorrt", choices=["auto", "fp32", "fp16", "off"], default="auto",
        help="TensorRT engine: auto builds one when a GPU and TensorRT exist",
    )  # fmt: skip
    export.add_argument("--no-triton", action="store_true", help="skip the Triton repository")
    export.add_argument("--no-mlflow", action="store_true", help="skip the MLflow pyfunc model")
    export.add_argument("--no-gallery", action="store_true",
                        help="skip thumbnails of the training images")  # fmt: skip
    export.add_argument("--register-name", help="MLflow registered model name")
    export.add_argument("--parity-images", type=int, default=50)
    export.add_argument("--calibration-images", type=int, default=256)
    export.add_argument("--json", action="store_true", help="one-line JSON summary")
    export.set_defaults(handler=_export, extra="export")

    predict = commands.add_parser(
        "predict",
        help="classify images; prints JSON (one image) or JSON Lines (many)",
        description=(
            "Classify image files, directories (walked recursively) and globs with an "
            "exported model package. One image: one JSON object. Several: one JSON line per "
            "image with its path; unreadable files give an error line and exit status 1. "
            "Each answer has is_known (false: not a flower this model knows) and "
            "unknown_score (higher = less like the training classes)."
        ),
    )
    predict.add_argument("paths", nargs="+", help="image files, directories or globs")
    predict.add_argument("--model", help=f"model package directory (default ${MODEL_ENV})")
    predict.add_argument(
        "--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
        help="runtime (default auto: the fastest here that passes the package's checks)",
    )  # fmt: skip
    predict.add_argument("--top-k", type=int, default=None, help="add the K best classes")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--no-reject", action="store_true",
                         help="never answer is_known=false (scores are still printed)")  # fmt: skip
    predict.add_argument("--reject-threshold", type=float, default=None,
                         help="override the package's unknown-score threshold")  # fmt: skip
    predict.add_argument("--reject-method", choices=list(METHODS),
                         default=None, help="score with another fitted method")  # fmt: skip
    predict.add_argument(
        "--tta",
        action="store_true",
        help="average each image with its mirror image (about 2x compute)",
    )
    predict.add_argument("--no-verify", action="store_true", help=NO_VERIFY_HELP)
    predict.set_defaults(handler=_predict)

    bench = commands.add_parser(
        "benchmark",
        help="PyTorch vs ONNX Runtime vs OpenVINO (fp32, int8) vs auto: latency, throughput, "
        "memory, share of the machine's limit",
        description=(
            "Measure, in one run and on the same images, each runtime in its own process: "
            "p50/p95 latency at batch 1, throughput at --batch-size, peak resident memory; "
            "plus end-to-end throughput (decode + preprocess + the auto backend), the "
            "machine's fp32 limit (matmul GFLOP/s over the model's GFLOP per image), the CPU "
            "features and the ratios."
        ),
    )
    bench.add_argument("--model", help=f"model package directory (default ${MODEL_ENV})")
    bench.add_argument(
        "--images",
        help="image directory (default: the images of the package's dataset, all splits; "
        "else its gallery thumbnails)",
    )
    bench.add_argument("--num-images", type=int, default=256)
    bench.add_argument("--batch-size", type=int, default=32)
    bench.add_argument("--latency-runs", type=int, default=100)
    bench.add_argument(
        "--runtimes",
        help="comma-separated, from torch,onnx_fp32,onnx_int8,openvino_fp32,openvino_int8,"
        "openvino_bf16,auto (default: all that are installed)",
    )
    bench.add_argument("--threads", type=int, default=None, help="default: physical cores")
    bench.add_argument(
        "--targets", metavar="FILE",
        help='JSON goals, {"targets": {figure: goal}}, marked met or not in the report '
        "(this project's: scripts/benchmark_targets.json)",
    )  # fmt: skip
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--no-verify", action="store_true", help=NO_VERIFY_HELP)
    bench.set_defaults(handler=_benchmark)
