"""Open world (issue 13) in every runtime, on the hand-made colour package with a fitted
``open_world`` section: Python API, CLI JSON / JSON Lines, REST, MLflow pyfunc, and an
older package without the section."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from flowerclf import Classifier
from flowerclf.cli.main import main
from flowerclf.core.open_set import UNKNOWN_MESSAGE, softmax
from flowerclf.core.package_format import DESCRIPTOR_FILE
from flowerclf.export.open_world import OpenWorldOptions, SplitOutputs, fit_open_world
from flowerclf.serving.app import create_app
from flowerclf.serving.settings import ServeSettings
from tests.helpers.colour_package import CLASSES, COLOURS, solid
from tests.helpers.images import encode
from tests.helpers.paths import REPO_ROOT

WHITE = Image.new("RGB", (40, 30), (255, 255, 255))  # no colour dominates: unlike any class


def _noisy(colour: str, rng: np.random.Generator) -> Image.Image:
    pixels = np.array(COLOURS[colour], np.int16) + rng.integers(-40, 40, size=(32, 32, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def open_package(colour_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour package plus calibration and rejection fitted on generated val images."""
    root = tmp_path_factory.mktemp("open-colour") / "package"
    shutil.copytree(colour_package, root)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CLASSES)), 20)
    with Classifier.load(root) as clf:
        batch = np.stack([clf.preprocess(_noisy(CLASSES[i], rng)) for i in labels])
        logits, embeddings = clf.run_logits(batch)
    train = np.load(root / "embeddings.npz")
    files, section = fit_open_world(
        root, SplitOutputs(logits, embeddings, labels), train["embeddings"], train["labels"],
        CLASSES, OpenWorldOptions(keep=0.95, knn_k=3),
    )  # fmt: skip
    descriptor = json.loads((root / DESCRIPTOR_FILE).read_text())
    descriptor["files"] |= files
    descriptor["open_world"] = section
    (root / DESCRIPTOR_FILE).write_text(json.dumps(descriptor))
    return root


@pytest.fixture
def client(open_package: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServeSettings(model=open_package))) as test_client:
        yield test_client


def test_python_api_flags_unknown_images_and_keeps_known_ones(open_package: Path) -> None:
    with Classifier.load(open_package) as clf:
        red, white = clf.predict([solid("red"), WHITE])
        assert red.predicted_class == "red" and red.is_known is True
        assert white.is_known is False
        assert isinstance(red.unknown_score, float) and white.unknown_score > red.unknown_score
        assert white.to_dict()["verdict"] == UNKNOWN_MESSAGE
        assert clf.info["open_world"]["rejection"]["available"] is True
    with Classifier.load(open_package, reject=False) as clf:
        assert clf.predict(WHITE).is_known is True
    with Classifier.load(open_package, reject_threshold=-1.0) as clf:  # everything unknown
        assert clf.predict(solid("red")).is_known is False


def test_confidence_is_the_calibrated_probability(open_package: Path) -> None:
    with Classifier.load(open_package) as clf:
        temperature = clf.open_world.temperature
        assert temperature > 0 and temperature != 1.0
        image = solid("green")
        logits, _ = clf.run_logits(clf.preprocess(image)[None])
        expected = softmax(logits, temperature)[0]
        prediction = clf.predict(image)
        assert prediction.confidence == pytest.approx(float(expected.max()), abs=1e-6)
        assert clf.predict_proba(image) == pytest.approx(expected, abs=1e-6)


def test_package_without_the_section_loads_with_rejection_unavailable(
    colour_package: Path,
) -> None:
    with Classifier.load(colour_package) as clf:
        prediction = clf.predict(WHITE)
        assert prediction.is_known is True and prediction.unknown_score is None
        rejection = clf.info["open_world"]["rejection"]
        assert rejection["available"] is False and "re-export" in rejection["reason"]
        # Without a temperature the probabilities are the network's own softmax.
        logits, _ = clf.run_logits(clf.preprocess(WHITE)[None])
        assert clf.predict_proba(WHITE) == pytest.approx(softmax(logits)[0], abs=1e-6)


def test_cli_json_for_one_image_says_not_known(
    open_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    WHITE.save(tmp_path / "white.png")
    assert main(["predict", str(tmp_path / "white.png"), "--model", str(open_package)]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["is_known"] is False and one["verdict"] == UNKNOWN_MESSAGE
    assert isinstance(one["unknown_score"], float)
    assert {"predicted_class", "confidence", "all_predictions"} <= set(one)


def test_cli_lines_and_overrides(
    open_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    solid("blue").save(tmp_path / "blue.png")
    WHITE.save(tmp_path / "white.png")
    assert main(["predict", str(tmp_path), "--model", str(open_package)]) == 0
    rows = {Path(r["path"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["blue.png"]["is_known"] is True and rows["white.png"]["is_known"] is False
    assert main(["predict", str(tmp_path), "--model", str(open_package), "--no-reject"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(r["is_known"] for r in rows) and all(r["unknown_score"] is not None for r in rows)


def test_rest_predict_and_batch_carry_the_fields(client: TestClient) -> None:
    known = client.post("/v1/predict", files={"file": ("r.png", encode(solid("red"), "PNG"))})
    unknown = client.post("/v1/predict", files={"file": ("w.png", encode(WHITE, "PNG"))})
    assert known.status_code == unknown.status_code == 200
    assert known.json()["is_known"] is True and known.json()["predicted_class"] == "red"
    assert unknown.json()["is_known"] is False and unknown.json()["verdict"] == UNKNOWN_MESSAGE
    assert unknown.json()["unknown_score"] > known.json()["unknown_score"]
    batch = client.post(
        "/v1/predict/batch",
        files=[("files", ("r.png", encode(solid("red"), "PNG"))),
               ("files", ("w.png", encode(WHITE, "PNG")))],
    )  # fmt: skip
    assert [r["prediction"]["is_known"] for r in batch.json()["results"]] == [True, False]
    info = client.get("/v1/model").json()
    assert info["open_world"]["rejection"]["method"] == "msp_knn"


def test_rest_micro_batched_service_keeps_each_rows_score(open_package: Path) -> None:
    settings = ServeSettings(model=open_package, micro_batch=True, micro_batch_wait_ms=1.0)
    with TestClient(create_app(settings)) as client:
        body = client.post("/v1/predict", files={"file": ("w.png", encode(WHITE, "PNG"))}).json()
        assert body["is_known"] is False and isinstance(body["unknown_score"], float)


def test_pyfunc_output_has_the_columns(open_package: Path) -> None:
    from flowerclf.inference.pyfunc import PACKAGE_ARTIFACT, FlowerclfPyfunc

    class Context:
        def __init__(self) -> None:
            self.artifacts = {PACKAGE_ARTIFACT: str(open_package)}

    model = FlowerclfPyfunc()
    model.load_context(Context())
    images = [encode(solid("red"), "PNG"), encode(WHITE, "PNG"), b"not an image"]
    frame = pd.DataFrame({"image": [base64.b64encode(i).decode() for i in images]})
    out = model.predict(None, frame)
    assert list(out["is_known"]) == [True, False, False]
    assert out["unknown_score"][0] < out["unknown_score"][1]
    assert out["error"][2] != "" and "verdict" not in out.columns


def test_ui_says_not_a_flower_this_model_knows(
    open_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from flowerclf.ui.clients import UI_ENV_API, UI_ENV_MODEL

    monkeypatch.delenv(UI_ENV_API, raising=False)
    monkeypatch.setenv(UI_ENV_MODEL, str(open_package))
    page = REPO_ROOT / "src" / "flowerclf" / "ui" / "app.py"
    app = AppTest.from_file(str(page), default_timeout=60)
    app.run()
    app.file_uploader(key="uploads").set_value([
        ("red.png", encode(solid("red"), "PNG"), "image/png"),
        ("white.png", encode(WHITE, "PNG"), "image/png"),
    ]).run()  # fmt: skip
    assert not app.exception
    warnings = [w.value for w in app.warning]
    assert len(warnings) == 1 and UNKNOWN_MESSAGE.capitalize() in warnings[0]
    assert "### red" in "\n".join(m.value for m in app.markdown)
