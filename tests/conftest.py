"""Shared fixtures: tiny generated images for unit tests, the real datasets for integration.

Importable helpers live in :mod:`tests.helpers`; this file holds fixtures and the one hook
that orders the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flowerclf.inference.auto import CACHE_ENV
from flowerclf.inference.auto import FORCE_ENV as AUTO_FORCE_ENV
from flowerclf.serving.app import create_app
from flowerclf.serving.settings import ServeSettings
from tests.helpers.colour_package import build_colour_package
from tests.helpers.images import build_folder_dataset, encode, make_photo
from tests.helpers.packages import TrainedPackage, train_and_export
from tests.helpers.paths import SHARED_DATA_ENV, shared_data_dir
from tests.helpers.server import LiveServer, run_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files that hold slow tests first (in collected order), then the rest.

    `make test` hands whole files to two workers in this order (--dist loadfile
    --no-loadscope-reorder): the minute-long files start at once and the hundreds of quick
    tests fill the gaps at the end. xdist's own order, most tests first, started the
    one-test DVC pipeline file (almost three minutes) last, with the other worker idle:
    640 s of wall time for 540 s of work per worker.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order kept within


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Skip (or, in CI, fail) when the real datasets are not available."""
    path = shared_data_dir()
    if not (path / "tf_flowers").is_dir() or not (path / "oxford102").is_dir():
        message = (
            f"real datasets not found at {path} (set {SHARED_DATA_ENV} to the folder holding "
            f"tf_flowers/ and oxford102/)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session", autouse=True)
def _fixed_auto_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``backend="auto"`` (the default) would measure every runtime at each first load of a
    package: tests, and the servers they start, use ONNX Runtime unless a test asks for the
    measurement (tests/unit/test_auto_backend.py), and never touch the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(AUTO_FORCE_ENV, "onnx")
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("flowerclf-cache")))
        yield


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep tests away from the user's data directory and dataset sources."""
    monkeypatch.setenv("FLOWERCLF_DATA_DIR", str(tmp_path / "default-data-root"))
    monkeypatch.delenv("FLOWERCLF_SOURCES", raising=False)


@pytest.fixture
def photo_bytes() -> Callable[..., bytes]:
    def factory(seed: int = 0, size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> bytes:
        return encode(make_photo(size, seed), fmt)

    return factory


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    return build_folder_dataset(tmp_path / "source")


@pytest.fixture(scope="session")
def model_package(tmp_path_factory: pytest.TempPathFactory) -> TrainedPackage:
    """Session-scoped: the export and inference tests (and the service tests) share it."""
    return train_and_export(tmp_path_factory.mktemp("model-package"))


@pytest.fixture(scope="session")
def colour_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package whose answers are known (the mean colour decides the class)."""
    return build_colour_package(tmp_path_factory.mktemp("colour") / "package")


@pytest.fixture
def client(colour_package: Path) -> Iterator[TestClient]:
    """The real app on the colour package, in process (lifespan run by the client)."""
    app = create_app(ServeSettings(model=colour_package, max_body_bytes=2 * 1024 * 1024))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def live_server(colour_package: Path) -> Iterator[LiveServer]:
    """A real ``flowerclf serve`` process on a free port, shared by the process tests."""
    with run_server(colour_package, ["--max-body-bytes", str(2 * 1024 * 1024)]) as server:
        yield server
