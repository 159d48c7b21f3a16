"""The verify switch reaches every way a package is loaded: API, CLI, REST service."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flowerclf.cli.main import main
from flowerclf.core.errors import PackageIntegrityError
from flowerclf.core.package_format import DESCRIPTOR_FILE
from flowerclf.inference.classifier import Classifier
from flowerclf.serving.app import create_app
from flowerclf.serving.settings import ServeSettings
from tests.helpers.colour_package import solid


@pytest.fixture
def package(colour_package: Path, tmp_path: Path) -> Path:
    """A fresh copy of the shared package, with checksums recorded as an export records them."""
    root = tmp_path / "package"
    root.mkdir()
    for source in colour_package.rglob("*"):
        target = root / source.relative_to(colour_package)
        if source.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.write_bytes(source.read_bytes())
    descriptor = json.loads((root / DESCRIPTOR_FILE).read_text())
    descriptor["sha256"] = {
        key: hashlib.sha256((root / name).read_bytes()).hexdigest()
        for key, name in descriptor["files"].items()
        if (root / name).is_file()
    }
    (root / DESCRIPTOR_FILE).write_text(json.dumps(descriptor))
    return root


def _tamper_onnx(root: Path) -> None:
    """Make model.onnx's recorded digest stale: to the loader that is an overwritten file,
    while the model still runs (so ``--no-verify`` can be shown to work)."""
    descriptor = json.loads((root / DESCRIPTOR_FILE).read_text())
    descriptor["sha256"]["onnx"] = "0" * 64
    (root / DESCRIPTOR_FILE).write_text(json.dumps(descriptor))


@pytest.fixture
def red_image(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    solid("red").save(path)
    return path


def test_classifier_load_verifies_and_can_opt_out(package: Path) -> None:
    _tamper_onnx(package)
    with pytest.raises(PackageIntegrityError, match=r"model\.onnx"):
        Classifier.load(package)
    with Classifier.load(package, verify=False) as classifier:
        assert classifier.predict(solid("green")).predicted_class == "green"


def test_predict_cli_refuses_a_tampered_package_in_one_line(
    package: Path, red_image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tamper_onnx(package)
    assert main(["-q", "predict", str(red_image), "--model", str(package)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "model.onnx does not match" in err[-1]

    assert main(["-q", "predict", str(red_image), "--model", str(package), "--no-verify"]) == 0
    assert json.loads(capsys.readouterr().out)["predicted_class"] == "red"


def test_service_refuses_to_start_on_a_tampered_package(package: Path) -> None:
    _tamper_onnx(package)
    with pytest.raises(PackageIntegrityError), TestClient(create_app(ServeSettings(model=package))):
        pass


def test_service_verify_setting_comes_from_the_environment(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tamper_onnx(package)
    monkeypatch.setenv("FLOWERCLF_SERVE_VERIFY_PACKAGE", "false")
    settings = ServeSettings(model=package)
    assert settings.verify_package is False
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/classes").status_code == 200


def test_service_never_serves_a_gallery_link(package: Path) -> None:
    with TestClient(create_app(ServeSettings(model=package))) as client:
        assert client.get("/v1/gallery/100").status_code == 200
        # Planted after the package was checked at start-up: still not followed.
        (package / "gallery" / "199.jpg").symlink_to("/etc/passwd")
        assert client.get("/v1/gallery/199").status_code == 404
    # ... and a package that holds such a link does not start at all.
    app = create_app(ServeSettings(model=package))
    with pytest.raises(PackageIntegrityError, match="symbolic link"), TestClient(app):
        pass
