"""The exported package and the Python API: contents, checks, inputs, backends, search."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowerclf import Classifier, Prediction
from flowerclf.core.imaging import ImageDecodeError
from flowerclf.core.package_format import DESCRIPTOR_FILE, PackageError, load_package
from tests.helpers.images import encode, make_photo
from tests.helpers.packages import TrainedPackage

pytestmark = pytest.mark.slow


def _descriptor(package: Path) -> dict:
    return json.loads((package / DESCRIPTOR_FILE).read_text())


def test_package_holds_every_artifact_with_matching_checksums(model_package: TrainedPackage):
    descriptor = _descriptor(model_package.package)
    files = descriptor["files"]
    for key in ("weights", "onnx", "onnx_int8", "embeddings", "gallery", "triton", "config",
                "metrics", "mlflow"):  # fmt: skip
        assert (model_package.package / files[key]).exists(), key
    for key, digest in descriptor["sha256"].items():
        data = (model_package.package / files[key]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, key
    assert descriptor["classes"] == ["a", "b", "c"]
    assert descriptor["preprocess"]["input_size"] == 32
    assert descriptor["source"]["run_id"] == model_package.run_id
    # the export-time checks are recorded, with real numbers
    parity = descriptor["checks"]["onnx_parity"]
    assert parity["passed"] and parity["top1_agreement"] == 1.0
    assert parity["max_abs_prob_diff"] <= 1e-4 and parity["num_images"] > 0
    int8 = descriptor["checks"]["int8"]
    assert int8["method"] == "static" and 0 <= int8["int8_accuracy"] <= 1
    assert int8["num_images"] == parity["num_images"] or int8["num_images"] > 0
    tensorrt = descriptor["checks"]["tensorrt"]
    assert tensorrt["built"] or "unavailable" in tensorrt["reason"]
    gallery = list((model_package.package / files["gallery"]).glob("*.jpg"))
    assert len(gallery) == len(np.load(model_package.package / files["embeddings"])["ids"])


def test_onnx_model_passes_checker_and_has_named_dynamic_io(model_package: TrainedPackage):
    import onnx

    model = onnx.load(str(model_package.package / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    inputs = {i.name: i for i in model.graph.input}
    outputs = [o.name for o in model.graph.output]
    assert list(inputs) == ["images"]
    assert outputs == ["probabilities", "logits", "embeddings"]
    batch_dim = inputs["images"].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"


def test_package_loads_in_a_fresh_process_without_hydra_training_code_or_dataset(
    model_package: TrainedPackage, tmp_path: Path
):
    data_dir = model_package.root / "data"
    hidden = model_package.root / "data-hidden"
    data_dir.rename(hidden)  # the dataset is gone while the package loads
    try:
        script = (
            "import json, sys\n"
            "from flowerclf import Classifier\n"
            f"clf = Classifier.load({str(model_package.package)!r})\n"
            f"p = clf.predict({str(next(model_package.images.rglob('*.jpg')))!r})\n"
            "heavy = [m for m in ('hydra', 'lightning', 'torch', 'flowerclf.training',"
            " 'flowerclf.data.datamodule', 'omegaconf') if m in sys.modules]\n"
            "print(json.dumps({'prediction': p.to_dict(), 'heavy': heavy}))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True,
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        hidden.rename(data_dir)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["prediction"]["predicted_class"] in ("a", "b", "c")


def test_torch_and_onnx_backends_agree(model_package: TrainedPackage):
    paths = sorted(model_package.images.rglob("*.jpg"))[:24]
    onnx_clf = Classifier.load(model_package.package, backend="onnx")
    torch_clf = Classifier.load(model_package.package, backend="torch")
    onnx_probs = onnx_clf.predict_proba(paths)
    torch_probs = torch_clf.predict_proba(paths)
    assert onnx_probs.shape == (24, 3)
    assert (onnx_probs.argmax(1) == torch_probs.argmax(1)).all()
    assert np.abs(onnx_probs - torch_probs).max() <= 1e-4
    np.testing.assert_allclose(onnx_probs.sum(1), 1.0, atol=1e-5)


def test_openvino_int8_model_is_exported_checked_and_runs(model_package: TrainedPackage):
    pytest.importorskip("nncf")
    descriptor = _descriptor(model_package.package)
    check = descriptor["checks"]["openvino_int8"]
    assert check["built"] and check["method"] == "nncf" and check["num_images"] > 0
    assert 0 <= check["int8_accuracy"] <= 1 and check["calibration_images"] == 24
    for key in ("openvino_int8", "openvino_int8_weights"):
        assert key in descriptor["sha256"], key  # both halves of the IR are verified
    paths = sorted(model_package.images.rglob("*.jpg"))[:24]
    fp32 = Classifier.load(model_package.package, backend="openvino").predict_proba(paths)
    int8 = Classifier.load(model_package.package, backend="openvino_int8").predict_proba(paths)
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.75


def test_int8_backend_runs_and_mostly_agrees(model_package: TrainedPackage):
    paths = sorted(model_package.images.rglob("*.jpg"))[:24]
    fp32 = Classifier.load(model_package.package).predict_proba(paths)
    int8 = Classifier.load(model_package.package, backend="onnx_int8").predict_proba(paths)
    assert int8.shape == fp32.shape
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.75


def test_predict_accepts_every_input_kind_and_gives_the_same_answer(
    model_package: TrainedPackage,
):
    clf = Classifier.load(model_package.package)
    path = sorted(model_package.images.rglob("*.jpg"))[0]
    image = Image.open(path)
    expected = clf.predict(path)
    assert isinstance(expected, Prediction)
    for variant in (str(path), path.read_bytes(), image, np.asarray(image.convert("RGB"))):
        got = clf.predict(variant)
        assert got.predicted_class == expected.predicted_class
        assert got.confidence == pytest.approx(expected.confidence, abs=1e-5)
    as_float = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    assert clf.predict(as_float).predicted_class == expected.predicted_class
    batch = clf.predict([path, path.read_bytes()], top_k=2)
    assert [p.predicted_class for p in batch] == [expected.predicted_class] * 2
    data = batch[0].to_dict()
    # An unknown image also gets the plain-words verdict (issue 13).
    assert set(data) - {"verdict"} == {
        "predicted_class",
        "confidence",
        "all_predictions",
        "top_k",
        "is_known",
        "unknown_score",
    }
    assert sum(data["all_predictions"].values()) == pytest.approx(1.0, abs=1e-4)
    assert data["top_k"][0]["class"] == data["predicted_class"] and len(data["top_k"]) == 2
    assert clf.predict([]) == []


def test_bad_inputs_give_clear_errors(model_package: TrainedPackage):
    clf = Classifier.load(model_package.package)
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        clf.predict(b"definitely not an image")
    with pytest.raises(ImageDecodeError, match="cannot read"):
        clf.predict(model_package.root / "missing.jpg")
    with pytest.raises(ImageDecodeError, match="shape"):
        clf.predict(np.zeros((4, 4, 7), dtype=np.uint8))
    with pytest.raises(ImageDecodeError, match=r"\[0, 1\]"):
        clf.predict(np.full((8, 8, 3), 3.0, dtype=np.float32))
    with pytest.raises(TypeError, match="cannot read an image"):
        clf.predict(42)
    good = encode(make_photo((40, 30), 3))
    results = clf.predict_each([good, b"junk", good])
    assert isinstance(results[0], Prediction) and isinstance(results[2], Prediction)
    assert isinstance(results[1], ImageDecodeError)


def test_embed_and_similar_find_the_training_image_itself(model_package: TrainedPackage):
    clf = Classifier.load(model_package.package)
    index = np.load(model_package.package / "embeddings.npz")
    first_id, first_path = int(index["ids"][0]), str(index["paths"][0])
    from flowerclf.data.datamodule import prepared_raw_dir

    source = prepared_raw_dir(model_package.root / "data" / "folder")
    query = next(p for p in source.rglob("*.jpg") if str(p).endswith(first_path))
    vector = clf.embed(query)
    assert vector.shape == (16,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    neighbors = clf.similar(query, k=5)
    assert len(neighbors) == 5
    assert neighbors[0].id == first_id and neighbors[0].score == pytest.approx(1.0, abs=1e-4)
    scores = [n.score for n in neighbors]
    assert scores == sorted(scores, reverse=True)
    assert set(neighbors[0].to_dict()) == {"id", "path", "class", "score"}


def test_loading_something_that_is_not_a_package_says_what_to_do(tmp_path: Path):
    with pytest.raises(PackageError, match="does not exist"):
        load_package(tmp_path / "nope")
    with pytest.raises(PackageError, match="flowerclf export"):
        load_package(tmp_path)
    (tmp_path / DESCRIPTOR_FILE).write_text(json.dumps({"format": "flowerclf-model",
                                                        "format_version": 99}))  # fmt: skip
    with pytest.raises(PackageError, match="upgrade flowerclf"):
        load_package(tmp_path)


def test_every_file_of_an_export_is_verified(model_package: TrainedPackage, tmp_path: Path) -> None:
    """The gallery, Triton and MLflow directories carry checksums too (``sha256_tree``): an
    overwritten thumbnail is refused by name, like an overwritten model."""
    from flowerclf.core.package_format import PackageIntegrityError, load_package

    package = load_package(model_package.package)
    # Byte-code caches that running the Triton step from the package may leave are not
    # part of it; everything the export wrote is verified.
    unverified = [p for p in package.verification.unverified if "__pycache__" not in p]
    assert unverified == []
    copy = tmp_path / "package"
    shutil.copytree(model_package.package, copy)
    thumbnail = sorted((copy / "gallery").glob("*.jpg"))[0]
    thumbnail.write_bytes(thumbnail.read_bytes()[:-10])
    with pytest.raises(PackageIntegrityError, match=thumbnail.name):
        load_package(copy)
    assert load_package(copy, verify=False).verification.skipped
