"""Fixtures for the service and UI tests: a model package with known answers, apps, servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flowerclf.serving.app import create_app
from flowerclf.serving.settings import ServeSettings
from tests.helpers.colour_package import build_colour_package
from tests.helpers.server import LiveServer, run_server


@pytest.fixture(scope="session")
def colour_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_package(tmp_path_factory.mktemp("colour") / "package")


def settings_for(package: Path, **overrides: object) -> ServeSettings:
    return ServeSettings(model=package, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def client(colour_package: Path) -> Iterator[TestClient]:
    """The real app on the colour package, in process (lifespan run by the client)."""
    app = create_app(settings_for(colour_package, max_body_bytes=2 * 1024 * 1024))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def live_server(colour_package: Path) -> Iterator[LiveServer]:
    """A real ``flowerclf serve`` process on a free port, shared by the process tests."""
    with run_server(colour_package, ["--max-body-bytes", str(2 * 1024 * 1024)]) as server:
        yield server
