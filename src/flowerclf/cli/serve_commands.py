"""``flowerclf serve``, ``flowerclf ui`` and ``flowerclf loadtest``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from flowerclf.core.errors import UsageError
from flowerclf.core.package_format import load_package
from flowerclf.serving import ENV_PREFIX

if TYPE_CHECKING:
    from flowerclf.serving.settings import ServeSettings

log = logging.getLogger(__name__)


def _serve(args: argparse.Namespace) -> int:
    # The settings travel as environment variables so every uvicorn worker process builds
    # the same app (flags win over variables already set).
    flags = {
        "model": args.model, "backend": args.backend, "host": args.host, "port": args.port,
        "workers": args.workers, "max_body_bytes": args.max_body_bytes,
        "max_batch_files": args.max_batch_files, "micro_batch": args.micro_batch,
        "inference_threads": args.threads, "max_active_requests": args.max_active_requests,
        "max_queued_requests": args.max_queued_requests, "body_timeout_s": args.body_timeout,
        "header_timeout_s": args.header_timeout, "docs": args.docs, "metrics": args.metrics,
        "reject": args.reject, "reject_threshold": args.reject_threshold,
        "verify_package": False if args.no_verify else None,
        "similar_index": args.similar_index,
    }  # fmt: skip
    for name, value in flags.items():
        if value is not None:
            os.environ[f"{ENV_PREFIX}{name.upper()}"] = str(value)

    from flowerclf.serving.settings import ServeSettings

    settings = ServeSettings()
    if settings.model is None:
        raise UsageError("no model package given: pass --model DIR or set FLOWERCLF_SERVE_MODEL")
    # Fail here, with a clear message, not in every worker.
    load_package(settings.model, verify=settings.verify_package)
    _warn_if_exposed(settings)
    with _metrics_shared_by_workers(settings.workers):
        _run_uvicorn(settings)
    return 0


@contextlib.contextmanager
def _metrics_shared_by_workers(workers: int) -> Iterator[None]:
    """With several workers: prometheus_client's multiprocess mode in a fresh directory.

    The variable must be set before a worker imports prometheus_client (workers are new
    interpreters that inherit this process's environment). A fresh directory per server:
    files left by an earlier server would be added to this one's counts. Removed on exit.
    """
    from flowerclf.serving.metrics import MULTIPROC_ENV

    if workers <= 1:
        yield
        return
    parent = os.environ.get(MULTIPROC_ENV) or None  # a place the operator chose, if any
    directory = tempfile.mkdtemp(prefix="flowerclf-metrics-", dir=parent)
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous


def _run_uvicorn(settings: ServeSettings) -> None:
    import uvicorn

    from flowerclf.serving.protocol import HeaderTimeoutProtocol

    uvicorn.run(
        "flowerclf.serving.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        http=HeaderTimeoutProtocol,
        timeout_keep_alive=int(max(1, round(settings.keep_alive_timeout_s))),
        # A hard cap on connections and tasks; uvicorn answers a plain 503 above it. The
        # app's own admission limit (503 + Retry-After, error schema) is far below it.
        limit_concurrency=settings.max_connections,
    )


def _warn_if_exposed(settings: ServeSettings) -> None:
    import ipaddress

    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:  # a host name
        loopback = settings.host == "localhost"
    if not loopback and settings.api_key is None:
        log.warning(
            "serving on %s without an API key: anyone who can reach the port can use the "
            "model; set %sAPI_KEY (and %sDOCS=false / %sMETRICS=false to hide those routes)",
            settings.host, ENV_PREFIX, ENV_PREFIX, ENV_PREFIX,
        )  # fmt: skip


def _serve_triton(args: argparse.Namespace) -> int:
    from flowerclf.serving.triton import (
        TritonOptions,
        default_python_env,
        ensure_python_env,
        serve_triton,
    )

    if args.prepare_env:
        env = ensure_python_env(args.python_env or default_python_env())
        sys.stdout.write(f"Triton Python environment ready: {env}\n")
        return 0
    if args.model is None:
        raise UsageError("serve-triton needs --model DIR (or --prepare-env)")
    options = TritonOptions(
        model=args.model, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, host=args.host, tritonserver=args.tritonserver,
        python_env=args.python_env, verify=not args.no_verify,
    )  # fmt: skip
    return serve_triton(options)


def _ui(args: argparse.Namespace) -> int:
    from flowerclf.ui.launch import run_ui

    return run_ui(api=args.api, model=args.model, port=args.port, host=args.host)


def _loadtest(args: argparse.Namespace) -> int:
    from flowerclf.serving.loadtest import LoadTestConfig, run_loadtest

    config = LoadTestConfig(
        url=args.url, model=args.model, images=args.images, requests=args.requests,
        concurrency=args.concurrency, duration_s=args.max_seconds, backend=args.backend,
        baseline=not args.no_baseline, micro_batch=args.micro_batch, workers=args.workers,
    )  # fmt: skip
    report = run_loadtest(config)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        for key, value in report.items():
            sys.stdout.write(f"{key}: {value}\n")
    return 0 if report["errors"] == 0 else 1


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_overrides: Callable[[argparse.ArgumentParser], None],
) -> None:
    del add_overrides  # these commands take flags, not Hydra overrides
    serve = commands.add_parser(
        "serve",
        help="serve a model package over HTTP (FastAPI)",
        description=(
            "REST service for a model package: POST /v1/predict, /v1/predict/batch, "
            "/v1/embed, /v1/similar; GET /v1/classes, /v1/model, /health, /ready, /metrics; "
            "OpenAPI docs at /docs. Every flag is also an environment variable "
            f"{ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}MODEL). Set {ENV_PREFIX}API_KEY to "
            "require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' on every route but "
            "/health and /ready (an environment variable only: flags show up in ps)."
        ),
    )
    serve.add_argument("--model", type=Path, help="model package directory (flowerclf export)")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000; 0 = any free port)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument(
        "--backend",
        help="auto (default: the fastest runtime here) | onnx | onnx_int8 | openvino | "
        "openvino_int8 | torch | tensorrt",
    )
    serve.add_argument("--threads", type=int, help="inference threads (default: cores)")
    serve.add_argument(
        "--reject", type=_bool, metavar="BOOL", help="unknown-image rejection (default true)"
    )
    serve.add_argument("--reject-threshold", type=float, help="override the unknown threshold")
    serve.add_argument(
        "--similar-index", type=Path, metavar="DIR",
        help="search this index (flowerclf index build) in /v1/similar, not the training images",
    )  # fmt: skip
    serve.add_argument("--max-body-bytes", type=int, help="request size limit (default 20 MiB)")
    serve.add_argument("--max-batch-files", type=int, help="images per batch request (32)")
    serve.add_argument(
        "--micro-batch", type=_bool, metavar="BOOL", help="group concurrent requests (false)"
    )
    serve.add_argument(
        "--max-active-requests", type=int, metavar="N",
        help="inference requests worked on at once (8); more wait in a bounded queue",
    )  # fmt: skip
    serve.add_argument(
        "--max-queued-requests", type=int, metavar="N",
        help="inference requests allowed to wait (64); beyond: 503 with Retry-After",
    )  # fmt: skip
    serve.add_argument(
        "--body-timeout", type=float, metavar="S", help="seconds to receive a body (30; 408)"
    )
    serve.add_argument(
        "--header-timeout", type=float, metavar="S", help="seconds to receive headers (10)"
    )
    serve.add_argument("--docs", type=_bool, metavar="BOOL", help="serve /docs (true)")
    serve.add_argument("--metrics", type=_bool, metavar="BOOL", help="serve /metrics (true)")
    serve.add_argument(
        "--no-verify", action="store_true",
        help="skip checking the package files' sha256 at load (development only)",
    )  # fmt: skip
    serve.set_defaults(handler=_serve, extra="serve")

    triton = commands.add_parser(
        "serve-triton",
        help="serve a model package with NVIDIA Triton Inference Server (HTTP + gRPC)",
        description=(
            "Run tritonserver on the package's triton/ repository: model 'flowerclf' takes "
            "encoded image bytes (input image_bytes, TYPE_STRING) and returns probabilities "
            "and embeddings, with dynamic batching. The server comes from the nvidia-pytriton "
            "wheel (pip install --no-deps nvidia-pytriton), --tritonserver PATH, or PATH. "
            "The wheel has no onnxruntime backend: the ONNX step then runs on ONNX Runtime "
            "in Triton's Python backend, whose stub needs its own environment (NumPy 1.x), "
            "made once with --prepare-env (it uses the package index)."
        ),
    )
    triton.add_argument("--model", type=Path, help="model package directory (flowerclf export)")
    triton.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    triton.add_argument("--http-port", type=int, default=8000, help="HTTP port (8000)")
    triton.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (8001)")
    triton.add_argument("--metrics-port", type=int, default=8002, help="metrics port (8002)")
    triton.add_argument("--tritonserver", type=Path, help="a tritonserver binary to use")
    triton.add_argument(
        "--python-env", type=Path, metavar="DIR",
        help="environment of the Python backend's stub (default: $FLOWERCLF_TRITON_PYTHON_ENV "
        "or ~/.cache/flowerclf/triton-pythonX.Y)",
    )  # fmt: skip
    triton.add_argument(
        "--prepare-env", action="store_true", help="make that environment, then exit"
    )
    triton.add_argument(
        "--no-verify", action="store_true", help="skip checking the package files' sha256"
    )
    # No extra: the base install (NumPy, Pillow, ONNX Runtime) plus the server binary.
    triton.set_defaults(handler=_serve_triton)

    ui = commands.add_parser(
        "ui",
        help="web UI (Streamlit) over a running service or a local model package",
        description="Try a model in the browser: upload photos, see classes and similar images.",
    )
    source = ui.add_mutually_exclusive_group(required=True)
    source.add_argument("--api", help="URL of a running `flowerclf serve`")
    source.add_argument("--model", type=Path, help="model package directory (in-process)")
    ui.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    ui.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    ui.set_defaults(handler=_ui, extra="ui")

    load = commands.add_parser(
        "loadtest",
        help="load-test a service on localhost: throughput, latency percentiles, errors",
        description=(
            "Send N /v1/predict requests at a given concurrency to a local service (started "
            "here from --model, or an existing --url on localhost), measure the in-process "
            "Classifier on the same images for comparison, and report throughput, "
            "p50/p95/p99, errors and the server's memory."
        ),
    )
    load.add_argument("--model", type=Path, help="model package to serve and to compare with")
    load.add_argument("--url", help="an already running service (localhost only)")
    load.add_argument("--images", type=Path, help="folder of images (default: generated)")
    load.add_argument("--requests", type=int, default=2000, help="requests to send (2000)")
    load.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    load.add_argument("--max-seconds", type=float, default=300.0, help="stop after (300 s)")
    load.add_argument("--backend", default="auto", help="backend of the served model")
    load.add_argument("--micro-batch", type=_bool, default=False, metavar="BOOL")
    load.add_argument(
        "--workers", type=int, default=1, help="worker processes of the server started here (1)"
    )
    load.add_argument("--no-baseline", action="store_true", help="skip the in-process figure")
    load.add_argument("--json", action="store_true", help="print one JSON object")
    load.set_defaults(handler=_loadtest, extra="serve")
