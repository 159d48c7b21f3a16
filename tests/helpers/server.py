"""Start a real ``flowerclf serve`` process on a free localhost port, and stop it reliably."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.paths import REPO_ROOT

SRC = REPO_ROOT / "src"
_RUNNING = re.compile(r"Uvicorn running on (http://[\w.\[\]:]+)")


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return "".join(self.log)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(
    url: str,
    process: subprocess.Popen,
    deadline: float,
    interval: float = 0.2,  # type: ignore[type-arg]
) -> str | None:
    """Poll ``url`` until it answers 200. Returns None then, else why it stopped waiting
    (the process exited, or ``deadline`` (time.monotonic) passed)."""
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            return f"process exited with status {process.returncode}"
        if time.monotonic() > deadline:
            return "timed out"
        time.sleep(interval)


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWERCLF_SERVE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@contextmanager
def run_server(
    model: Path, extra: Sequence[str] = (), timeout_s: float = 90.0
) -> Iterator[LiveServer]:
    """``flowerclf serve --model MODEL --port 0`` (the OS picks a free port); yields once
    ``/ready`` answers 200, and always terminates the process afterwards."""
    command = [sys.executable, "-m", "flowerclf", "serve", "--model", str(model),
               "--host", "127.0.0.1", "--port", "0", *extra]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env()
    )
    server = LiveServer("", process)
    found = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.log.append(line)
            match = _RUNNING.search(line)
            if match and not found.is_set():
                server.url = match.group(1)
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout_s
        while not found.wait(0.1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{server.output()}")
        if wait_for_http(f"{server.url}/ready", process, deadline, interval=0.1) is not None:
            raise RuntimeError(f"server never became ready:\n{server.output()}")
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 15) -> None:
    """SIGTERM (a server drains in-flight requests), then SIGKILL if it does not exit."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
