"""The Dockerfiles (no Docker engine here: structure only) and the slim serving footprint.

The serving image installs pyproject.toml's base install plus ``[serve]``, pinned by
docker/constraints-serve.txt. These tests check that this is enough and stays small: serving
a package (the real uvicorn server, in process) imports nothing heavy, every third-party
module flowerclf's own code imports while serving is declared by base + ``[serve]``, and the
constraints pin every declared requirement at a version its floor allows.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.extras import (
    HEAVY,
    SERVE_CONSTRAINTS,
    declared,
    distributions_of,
    pinned_serve_versions,
)
from tests.helpers.paths import REPO_ROOT
from tests.helpers.server import subprocess_env

DOCKER = REPO_ROOT / "docker"
HEAVY_MODULES = ("torch", "torchvision", "lightning", "mlflow", "hydra", "omegaconf", "timm",
                 "pandas", "scipy", "matplotlib", "onnx", "streamlit")  # fmt: skip
# A base image pinned to an exact Python and OS release, and by digest.
PINNED_IMAGE = re.compile(r"python:\d+\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}")

# Serve the package with the real uvicorn server in this (fresh) interpreter, ask /ready
# over HTTP, stop, and report the top-level modules that serving loaded (with their files)
# and the files of the flowerclf modules it loaded.
SERVE_AND_REPORT = """
import json, sys, threading, time, urllib.request
startup = {{m.split(".")[0] for m in sys.modules}}
import uvicorn
from flowerclf.cli.main import build_parser
from flowerclf.serving.app import create_app
from flowerclf.serving.settings import ServeSettings
build_parser()
app = create_app(ServeSettings(model={package!r}))
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
deadline = time.monotonic() + 60
while not server.started and thread.is_alive() and time.monotonic() < deadline:
    time.sleep(0.05)
port = server.servers[0].sockets[0].getsockname()[1]
status = urllib.request.urlopen(f"http://127.0.0.1:{{port}}/ready", timeout=30).status
server.should_exit = True
thread.join(30)
loaded = {{m.split(".")[0] for m in sys.modules}} - startup
print(json.dumps({{
    "status": status,
    "loaded": {{m: getattr(sys.modules.get(m), "__file__", None) for m in sorted(loaded)}},
    "flowerclf_files": sorted(
        module.__file__ for name, module in list(sys.modules.items())
        if name.split(".")[0] == "flowerclf" and getattr(module, "__file__", None)
    ),
}}))
"""


def _logical_lines(text: str) -> str:
    return text.replace("\\\n", " ")


@pytest.mark.parametrize("name", ["serve.Dockerfile", "train.Dockerfile"])
def test_dockerfile_runs_as_non_root_with_healthcheck(name: str) -> None:
    text = (DOCKER / name).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK\s+.*CMD", text, re.MULTILINE | re.DOTALL)
    assert "GPU variant" in text


@pytest.mark.parametrize("name", ["serve.Dockerfile", "train.Dockerfile"])
def test_dockerfile_base_image_is_pinned(name: str) -> None:
    text = (DOCKER / name).read_text()
    defaults = re.findall(r"^ARG\s+\w+=(\S+)", text, re.MULTILINE)
    images = [d for d in defaults if d.startswith("python:")]
    assert images and all(PINNED_IMAGE.fullmatch(image) for image in images), images
    for base in re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE):
        assert base.startswith("${"), f"FROM {base}: use the pinned ARG"


def test_serving_image_installs_the_serve_extra_with_the_constraints() -> None:
    text = _logical_lines((DOCKER / "serve.Dockerfile").read_text())
    installs = [line for line in text.splitlines() if re.search(r"\bpip install\b", line)]
    assert len(installs) == 1, installs
    assert "--constraint /tmp/constraints-serve.txt" in installs[0]
    assert re.search(r"flowerclf-\*\.whl\)\[serve\]", installs[0])
    assert "--no-deps" not in installs[0]
    assert "COPY docker/constraints-serve.txt" in text
    assert not list(DOCKER.glob("requirements*.txt")), "dependencies live in pyproject.toml"


def test_training_image_installs_the_training_extras() -> None:
    text = _logical_lines((DOCKER / "train.Dockerfile").read_text())
    match = re.search(r'pip install --no-cache-dir "\.\[([\w,]+)\]"', text)
    assert match is not None
    assert {"train", "export"} <= set(match[1].split(","))


def test_constraints_pin_every_serving_requirement_within_its_floor() -> None:
    pins = pinned_serve_versions()
    requirements = declared("serve")
    assert sorted(set(requirements) - set(pins)) == [], (
        f"{SERVE_CONSTRAINTS.name} is stale: python docker/pin_serve_constraints.py"
    )
    for name, requirement in requirements.items():
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert not set(pins) & set(HEAVY), set(pins) & set(HEAVY)


def _imported_names(source: Path) -> set[str]:
    """Top-level names of every absolute import in a file (function-local ones too)."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _is_third_party(module: str, file: str | None) -> bool:
    if module == "flowerclf" or module in sys.stdlib_module_names:
        return False
    return bool(distributions_of(module)) or "site-packages" in Path(file or "").parts


def test_serving_needs_none_of_the_training_stack(colour_package: Path) -> None:
    """What the serving image installs is enough to serve, and nothing heavy gets imported."""
    result = subprocess.run(
        [sys.executable, "-c", SERVE_AND_REPORT.format(package=str(colour_package))],
        capture_output=True, text=True, env=subprocess_env(), check=True, timeout=180,
    )  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 200
    loaded: dict[str, str | None] = report["loaded"]
    assert not set(loaded) & set(HEAVY_MODULES), set(loaded) & set(HEAVY_MODULES)

    # flowerclf's own imports that serving executed must be declared directly (a module
    # that only a dependency imports is that dependency's business).
    imported = set().union(*(_imported_names(Path(f)) for f in report["flowerclf_files"]))
    direct = {m for m in imported & set(loaded) if _is_third_party(m, loaded[m])}
    assert {"fastapi", "starlette", "onnxruntime", "PIL", "numpy", "pydantic_settings"} <= direct
    serve_requirements = set(declared("serve"))
    undeclared = {
        module: distributions_of(module)
        for module in direct
        if not distributions_of(module) & serve_requirements
    }
    assert not undeclared, f"imported while serving but not in base + [serve]: {undeclared}"
