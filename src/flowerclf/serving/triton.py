"""Run a real Triton Inference Server on a model package's ``triton/`` repository.

The package's repository (written by ``flowerclf export``) is an ensemble: a Python-backend
step decodes and preprocesses image bytes with flowerclf's own code, then the ONNX model
runs on Triton's ``onnxruntime`` backend. NVIDIA's server container has every backend and
serves that repository as it is. The ``nvidia-pytriton`` wheel, the one Triton a plain
``pip install`` gets, ships the same ``tritonserver`` binary with the Python backend only;
for it this module makes a copy of the repository in which the ONNX step runs on the Python
backend instead, through ONNX Runtime (the same file, inputs, outputs, batching and labels;
everything else, the ensemble scheduler and dynamic batching included, is Triton's own).

Two details the wheel leaves to its user, handled here:

* Its Python-backend stub is built against NumPy 1.x and against the interpreter's shared
  ``libpython``. The stub therefore runs in an environment of its own (a venv of this
  interpreter with ``numpy<2`` and the Pillow and ONNX Runtime versions of this one:
  :func:`ensure_python_env`), and the interpreter's library directory goes first on the
  library path, ahead of a system ``libpython`` of another patch release.
* The stub for this Python version is picked from the wheel and placed next to the
  backend, in a per-server working directory (as PyTriton does).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flowerclf.core.errors import FlowerclfError, UsageError
from flowerclf.core.package_format import TRITON_DIR, load_package

log = logging.getLogger(__name__)

PYTHON_ENV_VARIABLE = "FLOWERCLF_TRITON_PYTHON_ENV"
WHEEL_SERVER = "tritonserver"  # pytriton/tritonserver/ in the nvidia-pytriton wheel
# The wheel's stub reads tensors through NumPy's 1.x C layout; with NumPy 2 it gets garbage.
STUB_NUMPY = "numpy<2"
_BACKEND = re.compile(r'^(\s*backend\s*:\s*)"onnxruntime"', re.MULTILINE)

ONNX_ON_PYTHON_MODEL = '''\
"""Triton Python backend: the package's ONNX model through ONNX Runtime.

Written by `flowerclf serve-triton` for a Triton without the onnxruntime backend (the
nvidia-pytriton wheel's); the NGC container runs the same model.onnx on its onnxruntime
backend. Dynamic batching hands over several requests at once: one forward pass for all.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input = config["input"][0]["name"]
        self.outputs = [output["name"] for output in config["output"]]
        self.session = ort.InferenceSession(
            str(Path(__file__).parent / "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        results = self.session.run(self.outputs, {self.input: np.concatenate(arrays)})
        responses, start = [], 0
        for array in arrays:
            stop = start + len(array)
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(result[start:stop]))
                for name, result in zip(self.outputs, results)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses
'''


class TritonUnavailableError(FlowerclfError, RuntimeError):
    """No usable ``tritonserver`` here, or its Python environment cannot be made."""


@dataclass(frozen=True)
class TritonInstall:
    """A ``tritonserver`` binary and what it can load."""

    binary: Path
    backend_dir: Path
    cache_dir: Path | None
    library_dirs: tuple[Path, ...] = ()
    stubs_dir: Path | None = None  # the wheel's per-Python-version stubs

    @property
    def backends(self) -> frozenset[str]:
        if not self.backend_dir.is_dir():
            return frozenset()
        return frozenset(p.name for p in self.backend_dir.iterdir() if p.is_dir())

    @property
    def from_wheel(self) -> bool:
        return self.stubs_dir is not None


def find_triton(explicit: Path | None = None) -> TritonInstall:
    """``explicit`` (a ``tritonserver`` binary, e.g. the container's
    ``/opt/tritonserver/bin/tritonserver``), else the nvidia-pytriton wheel's, else one on
    ``PATH``.

    Raises:
        TritonUnavailableError: none found.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise UsageError(f"--tritonserver {explicit}: no such file")
        return _install_around(explicit)
    spec = importlib.util.find_spec("pytriton")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations))) / WHEEL_SERVER
        if (root / "bin" / "tritonserver").is_file():
            return TritonInstall(
                binary=root / "bin" / "tritonserver",
                backend_dir=root / "backends",
                cache_dir=root / "caches",
                library_dirs=(root.parents[1] / "nvidia_pytriton.libs",),
                stubs_dir=root / "python_backend_stubs",
            )
    on_path = shutil.which("tritonserver")
    if on_path:
        return _install_around(Path(on_path))
    raise TritonUnavailableError(
        "no tritonserver found: `pip install --no-deps nvidia-pytriton` (its wheel ships the "
        "server), pass --tritonserver PATH, or run NVIDIA's container (docs/guide/scaling.md)"
    )


def _install_around(binary: Path) -> TritonInstall:
    root = binary.resolve().parent.parent  # <root>/bin/tritonserver, <root>/backends
    caches = root / "caches"
    return TritonInstall(binary, root / "backends", caches if caches.is_dir() else None)


# --- the Python environment of the wheel's Python backend ----------------------------------


def default_python_env() -> Path:
    """``$FLOWERCLF_TRITON_PYTHON_ENV``, else a per-Python-version venv in the user cache."""
    configured = os.environ.get(PYTHON_ENV_VARIABLE)
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "flowerclf" / f"triton-python{sys.version_info[0]}.{sys.version_info[1]}"


def python_env_requirements() -> list[str]:
    """What the stub environment needs: NumPy 1.x, and this environment's Pillow and ONNX
    Runtime (same decoding and same model runtime as every other flowerclf runtime)."""
    return [
        STUB_NUMPY,
        f"pillow=={importlib.metadata.version('pillow')}",
        f"onnxruntime=={importlib.metadata.version('onnxruntime')}",
    ]


def python_env_ready(env: Path) -> bool:
    """Whether ``env`` is a venv of this Python with everything the stub imports."""
    python = env / "bin" / "python"
    if not python.is_file():
        return False
    check = "import numpy, PIL, onnxruntime; assert numpy.__version__ < '2'"
    done = subprocess.run([str(python), "-c", check], capture_output=True, check=False)
    return done.returncode == 0


def ensure_python_env(env: Path) -> Path:
    """Make ``env`` (a venv of this interpreter, then pip install) unless it is ready.

    Needs the package index once (or pip's own configuration of a mirror or wheelhouse).

    Raises:
        TritonUnavailableError: pip could not install the requirements.
    """
    if python_env_ready(env):
        return env
    log.info("making the Triton Python environment %s (%s)", env, python_env_requirements())
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    command = [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet",
               *python_env_requirements()]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not python_env_ready(env):
        raise TritonUnavailableError(
            f"could not make the Triton Python environment {env}: "
            f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}"
        )
    return env


# --- the model repository and the server's working directory -------------------------------


def prepare_repository(
    package_dir: Path, destination: Path, backends: frozenset[str], verify: bool = True
) -> Path:
    """Copy the package's ``triton/`` to ``destination``; where the server lacks the
    onnxruntime backend, run those models on the Python backend (ONNX Runtime) instead.
    Returns ``destination``. ``verify``: check the package's sha256 sums first."""
    package = load_package(package_dir, verify=verify)
    source = package.file("triton") or package.root / TRITON_DIR
    if not (source / "flowerclf" / "config.pbtxt").is_file():
        raise UsageError(
            f"{package_dir} has no Triton repository (export without --no-triton, or re-export)"
        )
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__"))
    if "onnxruntime" in backends:
        return destination
    for config in sorted(destination.glob("*/config.pbtxt")):
        text = config.read_text(encoding="utf-8")
        if _BACKEND.search(text):
            config.write_text(_BACKEND.sub(r'\1"python"', text), encoding="utf-8")
            for version in config.parent.iterdir():
                if version.is_dir() and (version / "model.onnx").is_file():
                    (version / "model.py").write_text(ONNX_ON_PYTHON_MODEL, encoding="utf-8")
            log.info("%s: onnxruntime backend not available, ONNX Runtime on the Python "
                     "backend instead", config.parent.name)  # fmt: skip
    return destination


def prepare_backends(install: TritonInstall, destination: Path) -> Path:
    """The wheel's backends with the Python-backend stub for this Python version."""
    shutil.copytree(install.backend_dir, destination, ignore=shutil.ignore_patterns("__pycache__"))
    assert install.stubs_dir is not None
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = install.stubs_dir / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonUnavailableError(f"the nvidia-pytriton wheel has no stub for Python {version}")
    shutil.copy2(stub, destination / "python" / "triton_python_backend_stub")
    return destination


def _library_path(install: TritonInstall) -> str:
    dirs = [str(d) for d in install.library_dirs]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        # The stub links libpython3.X.so; this interpreter's, not a system one of another
        # patch release (whose C parts would not match this standard library).
        dirs.insert(0, str(sysconfig.get_config_var("LIBDIR")))
    if os.environ.get("LD_LIBRARY_PATH"):
        dirs.append(os.environ["LD_LIBRARY_PATH"])
    return os.pathsep.join(dirs)


# --- running it ----------------------------------------------------------------------------


@dataclass
class TritonOptions:
    """How to run the server (``flowerclf serve-triton`` flags)."""

    model: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    tritonserver: Path | None = None
    python_env: Path | None = None
    verify: bool = True
    extra_args: list[str] = field(default_factory=list)


@dataclass
class RunningTriton:
    """A started server: its process, its ports and its working directory."""

    process: subprocess.Popen[bytes]
    options: TritonOptions
    workdir: Path
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"{self.options.host}:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.options.grpc_port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.is_file() else ""


def _command(
    install: TritonInstall, options: TritonOptions, repo: Path, backends: Path
) -> list[str]:
    command = [
        str(install.binary), f"--model-repository={repo}", f"--backend-directory={backends}",
        f"--http-address={options.host}", f"--grpc-address={options.host}",
        f"--metrics-address={options.host}", f"--http-port={options.http_port}",
        f"--grpc-port={options.grpc_port}", f"--metrics-port={options.metrics_port}",
        # No CUDA here (or not wanted for the ensemble's CPU models): no pinned pool to fail.
        "--pinned-memory-pool-byte-size=0", "--exit-timeout-secs=10",
    ]  # fmt: skip
    if install.cache_dir is not None:
        command.append(f"--cache-directory={install.cache_dir}")
    return command + options.extra_args


def _environment(install: TritonInstall, options: TritonOptions) -> dict[str, str]:
    env = dict(os.environ)
    if install.from_wheel:
        python_env = ensure_python_env(options.python_env or default_python_env())
        env["LD_LIBRARY_PATH"] = _library_path(install)
        # The stub runs whichever Python environment comes first on PATH.
        env["PATH"] = os.pathsep.join([str(python_env / "bin"), env.get("PATH", "")])
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
    return env


@contextmanager
def start_triton(options: TritonOptions, ready_timeout_s: float = 180.0) -> Iterator[RunningTriton]:
    """Start the server on ``options.model``'s repository; yield once it is ready; stop it
    (and remove its working directory) on exit.

    Raises:
        TritonUnavailableError: no server, no stub environment, or it never became ready.
    """
    install = find_triton(options.tritonserver)
    workdir = Path(tempfile.mkdtemp(prefix="flowerclf-triton-"))
    try:
        repo = prepare_repository(
            options.model, workdir / "models", install.backends, options.verify
        )
        backends = (
            prepare_backends(install, workdir / "backends")
            if install.from_wheel
            else install.backend_dir
        )
        env = _environment(install, options)
        log_path = workdir / "tritonserver.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                _command(install, options, repo, backends), stdout=log_file,
                stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        running = RunningTriton(process, options, workdir, log_path)
        try:
            _wait_ready(running, ready_timeout_s)
            yield running
        finally:
            _stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(running: RunningTriton, timeout_s: float) -> None:
    url = f"http://{running.http_url}/v2/health/ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise TritonUnavailableError(
                f"tritonserver exited with status {running.process.returncode}:\n"
                f"{running.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TritonUnavailableError(
        f"tritonserver not ready after {timeout_s:.0f} s:\n{running.log_tail()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # Triton drains in-flight requests, then exits
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the server and its Python stubs
        process.wait(timeout=5)


def serve_triton(options: TritonOptions) -> int:
    """Run the server until it exits or this process gets SIGINT/SIGTERM; its exit code."""
    stop = {"signal": 0}

    def _handle(signum: int, frame: object) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, _handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with start_triton(options) as running:
            log.info(
                "Triton serving %s: HTTP %s, gRPC %s, metrics %s:%d (model 'flowerclf': "
                "image_bytes in, probabilities + embeddings out)",
                options.model, running.http_url, running.grpc_url, options.host,
                options.metrics_port,
            )  # fmt: skip
            while running.process.poll() is None and not stop["signal"]:
                time.sleep(0.5)
            if running.process.poll() is not None:
                log.error("tritonserver exited:\n%s", running.log_tail())
                return running.process.returncode or 1
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
