"""Load test for ``flowerclf serve``: throughput, latency percentiles, errors, server memory.

Bounded in requests and time, and refuses any address that is not loopback. The client is
a minimal keep-alive HTTP/1.1 client on asyncio: it shares the machine's cores with the
server, so it is kept as cheap as possible (prebuilt requests, no per-request parsing
beyond the status line and length).

The in-process figure it compares against is :class:`flowerclf.Classifier` on the same
images and backend, end to end (decode, preprocess, forward), measured before the server
starts so that the two never compete for the CPU.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from flowerclf.core.errors import ServiceError, UsageError
from flowerclf.core.imaging import list_images
from flowerclf.inference.classifier import Classifier
from flowerclf.serving import ENV_PREFIX

log = logging.getLogger(__name__)

MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 256
MAX_WORKERS = 64  # ServeSettings.workers' limit
MAX_SECONDS = 900.0
MAX_IMAGES = 256


@dataclass
class LoadTestConfig:
    url: str | None = None
    model: Path | None = None
    images: Path | None = None
    requests: int = 2000
    concurrency: int = 8
    duration_s: float = 300.0
    backend: str = "auto"
    baseline: bool = True
    micro_batch: bool = False
    warmup: int = 64
    workers: int = 1  # worker processes of the server started here (serve --workers)


def require_loopback(url: str) -> tuple[str, int]:
    """Host and port of ``url``; ValueError unless it is plain http on a loopback address."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"load tests need an http://localhost URL, got {url!r}")
    address = socket.gethostbyname(parts.hostname)
    if not ipaddress.ip_address(address).is_loopback:
        raise UsageError(f"refusing to load-test {parts.hostname} ({address}): not loopback")
    return address, parts.port or 80


def load_images(folder: Path | None, limit: int = MAX_IMAGES) -> list[bytes]:
    """Up to ``limit`` image files under ``folder`` (sorted), or generated photos."""
    if folder is None:
        return [_synthetic_photo(seed) for seed in range(32)]
    files = list_images(folder)
    if not files:
        raise UsageError(f"no images under {folder}")
    step = max(1, len(files) // limit)
    return [p.read_bytes() for p in files[::step][:limit]]


def _synthetic_photo(seed: int, size: tuple[int, int] = (500, 375)) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    base = rng.integers(0, 255, 3)
    pixels = np.stack([(base[i] + xx * (i + 1) + yy * (3 - i)) % 256 for i in range(3)], -1)
    noise = rng.integers(0, 40, pixels.shape)
    image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def in_process_throughput(
    model: Path, backend: str, images: list[bytes], seconds: float = 15.0
) -> dict[str, float]:
    """Images per second of ``Classifier.predict`` on ``images``: batched and one by one."""

    with Classifier.load(model, backend=backend) as classifier:
        classifier.predict(images[: min(8, len(images))])  # warm-up
        out: dict[str, float] = {}
        for name, batched in (("batched", True), ("single", False)):
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 2 or done < len(images):
                if batched:
                    done += len(classifier.predict(images))
                else:
                    for data in images:
                        classifier.predict(data)
                    done += len(images)
            out[f"in_process_{name}_ips"] = round(done / (time.perf_counter() - start), 2)
    return out


def _multipart_request(host: str, port: int, data: bytes) -> bytes:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="image"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status code and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() != "close"


class _Run:
    def __init__(self, total: int, deadline: float) -> None:
        self.total = total
        self.deadline = deadline
        self.issued = 0
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors = 0

    def take(self) -> int | None:
        if self.issued >= self.total or time.perf_counter() > self.deadline:
            return None
        self.issued += 1
        return self.issued - 1


async def _worker(host: str, port: int, requests: list[bytes], run: _Run) -> None:
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while (index := run.take()) is not None:
        start = time.perf_counter()
        try:
            if connection is None:
                connection = await asyncio.open_connection(host, port)
            reader, writer = connection
            writer.write(requests[index % len(requests)])
            await writer.drain()
            status, keep = await asyncio.wait_for(read_response(reader), timeout=60)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            run.errors += 1
            run.statuses[type(exc).__name__] = run.statuses.get(type(exc).__name__, 0) + 1
            connection = None
            continue
        run.latencies.append(time.perf_counter() - start)
        run.statuses[str(status)] = run.statuses.get(str(status), 0) + 1
        if status != 200:
            run.errors += 1
        if not keep:
            writer.close()
            connection = None
    if connection is not None:
        connection[1].close()


async def _load(host: str, port: int, requests: list[bytes], total: int, concurrency: int,
                seconds: float) -> tuple[_Run, float]:  # fmt: skip
    run = _Run(total, time.perf_counter() + seconds)
    start = time.perf_counter()
    await asyncio.gather(*(_worker(host, port, requests, run) for _ in range(concurrency)))
    return run, time.perf_counter() - start


class RssSampler:
    """Resident memory of a process every ``interval`` seconds, in a background thread."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
                for child in self.process.children(recursive=True):
                    rss += child.memory_info().rss
                self.samples.append(rss / 2**20)
            except Exception:  # the process went away
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _start_server(config: LoadTestConfig) -> tuple[subprocess.Popen[str], str]:

    assert config.model is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    command = [sys.executable, "-m", "flowerclf", "-q", "serve", "--model", str(config.model),
               "--port", "0", "--backend", config.backend,
               "--micro-batch", str(config.micro_batch).lower(),
               "--workers", str(config.workers)]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if "Uvicorn running on " in line:
            url = line.split("Uvicorn running on ", 1)[1].split()[0]
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
            return process, url
        if time.monotonic() > deadline:
            break
    process.kill()
    raise ServiceError("the server did not start (see `flowerclf serve` with the same model)")


def _percentile(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2) if len(values) else float("nan")


def run_loadtest(config: LoadTestConfig) -> dict[str, Any]:
    """Run the test described by ``config`` and return the report (a flat dict)."""
    if not 1 <= config.requests <= MAX_REQUESTS:
        raise UsageError(f"requests must be in 1..{MAX_REQUESTS}")
    if not 1 <= config.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"concurrency must be in 1..{MAX_CONCURRENCY}")
    if not 1 <= config.workers <= MAX_WORKERS:
        raise UsageError(f"workers must be in 1..{MAX_WORKERS}")
    if not 0 < config.duration_s <= MAX_SECONDS:
        raise UsageError(f"max seconds must be in (0, {MAX_SECONDS}]")
    if (config.url is None) == (config.model is None) and config.url is None:
        raise UsageError("give --model (a server is started here) or --url (localhost)")
    images = load_images(config.images)
    report: dict[str, Any] = {"images": len(images), "backend": config.backend}
    if config.baseline and config.model is not None:
        report |= in_process_throughput(config.model, config.backend, images)
    process = None
    url = config.url
    if url is None:
        process, url = _start_server(config)
    try:
        host, port = require_loopback(url)
        requests = [_multipart_request(host, port, data) for data in images]
        if process is not None:
            _wait_ready(url)
        asyncio.run(_load(host, port, requests, config.warmup, config.concurrency, 60))
        pid = process.pid if process is not None else None
        sampler = RssSampler(pid) if pid else None
        if sampler is not None:
            sampler.__enter__()
        try:
            run, elapsed = asyncio.run(
                _load(host, port, requests, config.requests, config.concurrency, config.duration_s)
            )
        finally:
            if sampler is not None:
                sampler.__exit__()
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    latencies = np.asarray(run.latencies)
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    throughput = round(len(latencies) / elapsed, 2) if elapsed else 0.0
    report |= {
        "url": url, "concurrency": config.concurrency, "micro_batch": config.micro_batch,
        "workers": config.workers if process is not None else None,
        "requests": run.issued, "completed": len(latencies), "errors": run.errors,
        "statuses": run.statuses, "seconds": round(elapsed, 2), "throughput_rps": throughput,
        "p50_ms": p50, "p95_ms": _percentile(latencies, 95), "p99_ms": p99,
        "max_ms": _percentile(latencies, 100),
        "p99_over_p50": round(p99 / p50, 2) if p50 else float("nan"),
    }  # fmt: skip
    if config.baseline and config.model is not None:
        # Measured again after the run: on a shared machine the load changes over minutes,
        # and the comparison uses the mean of the two measurements.
        after = in_process_throughput(config.model, config.backend, images)
        for key, value in after.items():
            report[f"{key}_after"] = value
        best = max(
            (report[k] + after[k]) / 2 for k in ("in_process_batched_ips", "in_process_single_ips")
        )
        report["in_process_ips"] = round(best, 2)
        report["throughput_vs_in_process"] = round(throughput / best, 3)
    if sampler is not None and sampler.samples:
        samples = sampler.samples
        tenth = max(1, len(samples) // 10)
        report |= {
            "server_rss_mb_start": round(float(np.mean(samples[:tenth])), 1),
            "server_rss_mb_end": round(float(np.mean(samples[-tenth:])), 1),
            "server_rss_mb_max": round(max(samples), 1),
        }
    return report


def _wait_ready(url: str, timeout_s: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise ServiceError(f"{url}/ready did not answer 200 within {timeout_s:.0f} s")
