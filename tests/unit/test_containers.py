"""The Dockerfiles (no Docker engine here: structure only) and the slim serving footprint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT
from tests.helpers.server import subprocess_env

DOCKER = REPO_ROOT / "docker"
HEAVY = ("torch", "torchvision", "lightning", "mlflow", "hydra", "omegaconf", "timm", "pandas")


@pytest.mark.parametrize("name", ["serve.Dockerfile", "train.Dockerfile"])
def test_dockerfile_runs_as_non_root_with_healthcheck(name: str) -> None:
    text = (DOCKER / name).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK\s+.*CMD", text, re.MULTILINE | re.DOTALL)
    assert "GPU variant" in text


def test_serving_needs_none_of_the_training_stack(colour_package: Path) -> None:
    """The serving image installs only docker/requirements-serve.txt: check that serving a
    package really imports nothing heavy, and that every third-party import is listed."""
    code = f"""
import json, sys
from fastapi.testclient import TestClient
from flowerclf.cli.main import build_parser
from flowerclf.serving.app import create_app
from flowerclf.serving.settings import ServeSettings
from tests.helpers.paths import REPO_ROOT
build_parser()
with TestClient(create_app(ServeSettings(model={str(colour_package)!r}))) as client:
    assert client.get("/ready").status_code == 200
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=True,
    )
    modules = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not modules & set(HEAVY), modules & set(HEAVY)
    requirements = (DOCKER / "requirements-serve.txt").read_text().lower()
    for package, module in (("onnxruntime", "onnxruntime"), ("fastapi", "fastapi"),
                            ("pillow", "PIL"), ("prometheus-client", "prometheus_client"),
                            ("pydantic-settings", "pydantic_settings")):  # fmt: skip
        assert module in modules and package in requirements
