"""Prometheus metrics: request counts by route and status, latency, in-flight, batch sizes.

Each app gets its own registry, so several apps (tests) never share counters. Routes are
labelled by their template (``/v1/gallery/{image_id}``), never by the raw path, so
clients cannot blow up the label cardinality.

With several worker processes (``flowerclf serve --workers N``) each worker counts only the
requests it handled, and a scrape of ``/metrics`` reaches one worker at random. There the
server runs prometheus_client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` names a
fresh directory (made and removed by the command) before any worker starts, every worker's
values live in memory-mapped files there, and ``/metrics`` in any worker adds up all of
them: counters and histograms summed, the in-flight gauge summed over live workers,
``model_loaded`` the minimum over live workers (1 once every worker is ready).
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)  # fmt: skip
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, when the server runs in it (several workers)."""
    return os.environ.get(MULTIPROC_ENV) or None


class ServiceMetrics:
    """The service's collectors, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Read when the app is built, in the worker: the values of every collector below
        # are memory-mapped files in this directory (prometheus_client decides that from
        # the same variable when it is imported).
        self.multiprocess_dir = multiprocess_dir()
        self.requests = Counter(
            "flowerclf_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flowerclf_http_request_duration_seconds",
            "Time from request start to the end of the response, by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "flowerclf_http_requests_in_flight",
            "Requests being handled now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "flowerclf_inference_batch_size",
            "Images per forward pass.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "flowerclf_model_loaded",
            "1 once the model is loaded and warm (in every worker).",
            registry=self.registry,
            multiprocess_mode="livemin",
        )

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def render(self) -> tuple[bytes, str]:
        """The exposition text: this app's registry, or every worker's values combined."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=self.multiprocess_dir)
        return generate_latest(combined), CONTENT_TYPE_LATEST

    def worker_stopped(self) -> None:
        """Drop this worker's live gauges from the combined view (multiprocess mode)."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else UNMATCHED


class MetricsMiddleware:
    """Pure ASGI middleware (streams untouched) recording every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            method = scope.get("method", "")
            route, method = _route_of(scope), method if method in METHODS else "OTHER"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - start)
