"""Shared fixtures: tiny generated images for unit tests, the real datasets for integration."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "FLOWERCLF_SHARED_DATA"


def shared_data_dir() -> Path:
    """The real datasets: ``$FLOWERCLF_SHARED_DATA`` or ``../shared/data`` beside the repo."""
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


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


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep tests away from the user's data directory and dataset sources."""
    monkeypatch.setenv("FLOWERCLF_DATA_DIR", str(tmp_path / "default-data-root"))
    monkeypatch.delenv("FLOWERCLF_SOURCES", raising=False)


def make_photo(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A small RGB image with structure (gradients + a blob), distinct per seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 255, size=3)
    img = np.stack(
        [
            (base[0] + xx * 3) % 256,
            (base[1] + yy * 5) % 256,
            (base[2] + (xx + yy) * 2) % 256,
        ],
        axis=-1,
    ).astype(np.uint8)
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(size) // 4) ** 2] = rng.integers(0, 255, size=3)
    return Image.fromarray(img, "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def photo_bytes() -> Callable[..., bytes]:
    def factory(seed: int = 0, size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> bytes:
        return encode(make_photo(size, seed), fmt)

    return factory


def build_folder_dataset(
    root: Path, per_class: int = 12, classes: tuple[str, ...] = ("a", "b", "c")
) -> Path:
    """Write ``root/<class>/<n>.jpg`` with distinct images; returns ``root``."""
    for class_index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            seed = class_index * 1000 + i
            (folder / f"img_{i:03d}.jpg").write_bytes(encode(make_photo((40 + i, 32), seed)))
    return root


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    return build_folder_dataset(tmp_path / "source")


@dataclass(frozen=True)
class TrainedPackage:
    """A tiny model trained on generated images, and its exported package."""

    root: Path  # workspace: data/, outputs/, mlflow.db
    package: Path
    run_id: str
    checkpoint: Path
    tracking_uri: str
    images: Path  # the generated source images (class sub-folders)


@pytest.fixture(scope="session")
def model_package(tmp_path_factory: pytest.TempPathFactory) -> TrainedPackage:
    """Train simple_cnn for a few steps on generated images, then export the full package.

    Session-scoped: the export and inference tests (and the service tests) share it.
    """
    import json

    from flowerclf.cli.main import main

    root = tmp_path_factory.mktemp("model-package")
    images = build_folder_dataset(root / "source", per_class=16)
    data = ["data=folder", f"data.source={images}", f"data.root={root / 'data'}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLOWERCLF_DATA_DIR", str(root / "default-data-root"))
        assert main(["-q", "data", "prepare", *data]) == 0
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        overrides = [
            *data, "data.batch_size=8", "data.num_workers=0", "model=simple_cnn",
            "model.preprocess.input_size=32", "model.embedding_dim=16", "trainer=smoke",
            f"paths.output_dir={root / 'outputs'}", f"logger.tracking_uri={tracking_uri}",
        ]  # fmt: skip
        import contextlib
        import io as _io

        out = _io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["-q", "train", *overrides, "--json"]) == 0
        result = json.loads(out.getvalue().strip().splitlines()[-1])
        package = root / "package"
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # how `export <run id>` finds the run
        with contextlib.redirect_stdout(_io.StringIO()):
            code = main(["-q", "export", result["run_id"], "--out", str(package),
                         "--calibration-images", "24"])  # fmt: skip
        assert code == 0
    return TrainedPackage(
        root=root,
        package=package,
        run_id=result["run_id"],
        checkpoint=Path(result["checkpoint"]),
        tracking_uri=tracking_uri,
        images=images,
    )
