"""A tiny model trained end to end through the CLI, and its exported package."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowerclf.cli.main import main
from tests.helpers.images import build_folder_dataset


@dataclass(frozen=True)
class TrainedPackage:
    """A tiny model trained on generated images, and its exported package."""

    root: Path  # workspace: data/, outputs/, mlflow.db
    package: Path
    run_id: str
    checkpoint: Path
    tracking_uri: str
    images: Path  # the generated source images (class sub-folders)


def train_and_export(
    root: Path, extra: Sequence[str] = (), export_flags: Sequence[str] = ()
) -> TrainedPackage:
    """Train simple_cnn for a few steps on generated images, then export the full package
    (``extra``: more training overrides; ``export_flags``: e.g. leave optional parts out)."""
    images = build_folder_dataset(root / "source", per_class=16)
    data = ["data=folder", f"data.source={images}", f"data.root={root / 'data'}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # MLflow puts artifacts (./mlruns) under the working directory
        patch.setenv("FLOWERCLF_DATA_DIR", str(root / "default-data-root"))
        assert main(["-q", "data", "prepare", *data]) == 0
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        overrides = [
            *data, "data.batch_size=8", "data.num_workers=0", "model=simple_cnn",
            "model.preprocess.input_size=32", "model.embedding_dim=16", "trainer=smoke",
            f"paths.output_dir={root / 'outputs'}", f"logger.tracking_uri={tracking_uri}", *extra,
        ]  # fmt: skip
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["-q", "train", *overrides, "--json"]) == 0
        result = json.loads(out.getvalue().strip().splitlines()[-1])
        package = root / "package"
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # how `export <run id>` finds the run
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["-q", "export", result["run_id"], "--out", str(package),
                         "--calibration-images", "24", *export_flags])  # fmt: skip
        assert code == 0
    return TrainedPackage(
        root=root,
        package=package,
        run_id=result["run_id"],
        checkpoint=Path(result["checkpoint"]),
        tracking_uri=tracking_uri,
        images=images,
    )
