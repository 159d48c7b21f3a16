"""Checkpoints and packages written before a config key existed still evaluate, export and
run: the keys they lack are filled from the packaged defaults (flowerclf.config.saved)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from flowerclf.cli.main import main
from flowerclf.config import compose_config
from flowerclf.core.package_format import CONFIG_FILE, DESCRIPTOR_FILE
from flowerclf.inference.classifier import Classifier
from tests.helpers.packages import TrainedPackage

pytestmark = pytest.mark.slow

# Keys added to the config after the first releases (and the run record).
ADDED_LATER = [
    ("loss", "temperature"), ("trainer", "knn_k"), ("trainer", "unfreeze_every_epochs"),
    ("trainer", "unfreeze_blocks_per_step"), ("paths", "run_dir"), ("data", "source_sha256"),
    ("model", "drop_rate"),
]  # fmt: skip


def _old_style_checkpoint(checkpoint: Path, out: Path) -> Path:
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = saved["hyper_parameters"]["config"]
    for section, key in ADDED_LATER:
        del config[section][key]
    del config["run"]
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(saved, out)
    return out


def _cli_json(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["-q", *args, "--json"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_an_old_checkpoint_evaluates_and_exports(
    model_package: TrainedPackage, tmp_path: Path
) -> None:
    # Outside <run dir>/checkpoints/, and without the run record: nothing says which run
    # it was, so nothing is logged to the shared run either.
    old = _old_style_checkpoint(model_package.checkpoint, tmp_path / "old" / "ckpt" / "best.ckpt")
    trained = json.loads((model_package.package / DESCRIPTOR_FILE).read_text())["metrics"]
    report = _cli_json("evaluate", str(old), f"out={tmp_path / 'evaluated'}")
    assert report["run_id"] is None
    assert report["accuracy"] == pytest.approx(trained["test/accuracy"])
    # Training logs the network's own cross-entropy; evaluate reports the calibrated one
    # (what the package ships) and the network's beside it.
    assert report["cross_entropy_uncalibrated"] == pytest.approx(
        trained["test/cross_entropy"], abs=1e-4
    )

    package = tmp_path / "package"
    _cli_json(
        "export", str(old), "--out", str(package), "--int8", "none", "--tensorrt", "off",
        "--no-triton", "--no-mlflow", "--no-gallery", "--parity-images", "8",
    )  # fmt: skip
    descriptor = json.loads((package / DESCRIPTOR_FILE).read_text())
    assert descriptor["model"]["arch"] == "simple_cnn"
    # The package records the whole config: what the checkpoint had, the rest filled.
    recorded = yaml.safe_load((package / CONFIG_FILE).read_text())
    assert recorded["loss"]["temperature"] == compose_config().loss.temperature
    assert recorded["model"]["embedding_dim"] == 16


def test_an_old_package_runs_on_the_torch_backend(
    model_package: TrainedPackage, tmp_path: Path
) -> None:
    package = tmp_path / "old-package"
    shutil.copytree(model_package.package, package)
    descriptor_path = package / DESCRIPTOR_FILE
    descriptor = json.loads(descriptor_path.read_text())
    descriptor["model"] = {
        key: descriptor["model"][key] for key in ("name", "arch", "embedding_dim")
    }
    descriptor_path.write_text(json.dumps(descriptor))

    paths = sorted(model_package.images.rglob("*.jpg"))[:12]
    old = Classifier.load(package, backend="torch").predict_proba(paths)
    current = Classifier.load(model_package.package, backend="torch").predict_proba(paths)
    np.testing.assert_allclose(old, current, atol=1e-6)
