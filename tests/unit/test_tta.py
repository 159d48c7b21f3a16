"""Test-time augmentation: each image averaged with its mirror image, in Python and REST."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from flowerclf.core.open_set import softmax
from flowerclf.export.open_world import averaged_views_nll, fit_tta_calibration
from flowerclf.inference.classifier import Classifier, average_views, with_mirrors
from flowerclf.metrics.calibration import fit_temperature
from flowerclf.serving.app import create_app
from flowerclf.serving.service import PackageClassifier
from flowerclf.serving.settings import ServeSettings


class LeftHeavyBackend:
    """Wraps a backend: adds to class 0's logit how much redder the left half is than the
    right, so an image and its mirror image get different answers."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.batches: list[np.ndarray] = []

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(batch)
        logits, embeddings = self.inner.run_logits(batch)  # type: ignore[attr-defined]
        half = batch.shape[-1] // 2
        logits = logits.copy()
        logits[:, 0] += 4 * (
            batch[:, 0, :, :half].mean((1, 2)) - batch[:, 0, :, half:].mean((1, 2))
        )
        return logits, embeddings


def left_right(left: tuple[int, int, int], right: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (40, 40), right)
    image.paste(Image.new("RGB", (20, 40), left), (0, 0))
    return image


@pytest.fixture
def mirrored_classifier(colour_package: Path) -> Classifier:
    classifier = Classifier.load(colour_package)
    classifier._backend = LeftHeavyBackend(classifier._backend)  # type: ignore[assignment]
    return classifier


def test_views_and_their_average() -> None:
    batch = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    both = with_mirrors(batch)
    assert both.shape == (4, 3, 2, 2)
    np.testing.assert_array_equal(both[2:], batch[..., ::-1])
    probabilities = np.array([[1.0, 0.0], [0.2, 0.8], [0.0, 1.0], [0.4, 0.6]])
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    merged = average_views([probabilities, embeddings, np.array([1.0, 2.0, 3.0, 4.0])], 2)
    np.testing.assert_allclose(merged[0], [[0.5, 0.5], [0.3, 0.7]])
    np.testing.assert_allclose(merged[1], [[0.5**0.5, 0.5**0.5], [0.0, 1.0]])
    np.testing.assert_allclose(merged[2], [2.0, 3.0])
    assert average_views([probabilities, embeddings, None], 2)[2] is None


def test_tta_averages_an_image_with_its_mirror(mirrored_classifier: Classifier) -> None:
    image = left_right((230, 40, 40), (40, 40, 230))
    mirror = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    plain, flipped = mirrored_classifier.predict_proba([image, mirror], tta=False)
    assert not np.allclose(plain, flipped, atol=1e-3)  # the backend does see left from right
    averaged = mirrored_classifier.predict_proba(image, tta=True)
    np.testing.assert_allclose(averaged, (plain + flipped) / 2, atol=1e-5)
    # One runtime call for both views.
    assert mirrored_classifier._backend.batches[-1].shape[0] == 2  # type: ignore[attr-defined]
    # The classifier-wide default, overridable per call.
    mirrored_classifier.tta = True
    np.testing.assert_allclose(mirrored_classifier.predict_proba(image), averaged, atol=1e-6)
    np.testing.assert_allclose(
        mirrored_classifier.predict_proba(image, tta=False), plain, atol=1e-6
    )


@pytest.mark.parametrize("micro_batch", [True, False])
def test_rest_tta_matches_python(mirrored_classifier: Classifier, micro_batch: bool) -> None:
    image = left_right((230, 40, 40), (40, 230, 40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()
    expected = mirrored_classifier.predict(image, tta=True).all_predictions
    plain = mirrored_classifier.predict(image, tta=False).all_predictions
    settings = ServeSettings(micro_batch=micro_batch)
    app = create_app(settings, loader=lambda _: PackageClassifier(mirrored_classifier))
    with TestClient(app) as client:
        for path, pick in (
            ("/v1/predict", lambda b: b),
            ("/v1/predict/batch", lambda b: b["results"][0]["prediction"]),
        ):
            files = {"files" if "batch" in path else "file": ("a.png", data)}
            with_tta = pick(client.post(path, files=files, params={"tta": "true"}).json())
            without = pick(client.post(path, files=files).json())
            for name, probability in expected.items():
                assert with_tta["all_predictions"][name] == pytest.approx(probability, abs=1e-5)
                assert without["all_predictions"][name] == pytest.approx(plain[name], abs=1e-5)


def test_tta_probabilities_use_the_tta_temperature(mirrored_classifier: Classifier) -> None:
    image = left_right((230, 40, 40), (40, 40, 230))
    batch = mirrored_classifier.preprocess(image)[None]
    logits, _ = mirrored_classifier.run_logits(with_mirrors(batch))
    mirrored_classifier._tta_temperature = 0.5
    expected = (softmax(logits[:1], 0.5) + softmax(logits[1:], 0.5)) / 2
    np.testing.assert_allclose(
        mirrored_classifier.predict_proba(image, tta=True), expected[0], atol=1e-6
    )
    # Without TTA the package's own temperature still applies.
    np.testing.assert_allclose(
        mirrored_classifier.predict_proba(image, tta=False),
        mirrored_classifier.open_world.probabilities(logits[:1])[0], atol=1e-6,
    )  # fmt: skip


def test_tta_temperature_fitted_for_the_averaged_views_lowers_their_nll() -> None:
    # Two views with independent noise: averaging their calibrated probabilities is
    # under-confident (the average is right more often than it says), so the averaged views
    # want a lower temperature than one view does.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 600)
    signal = np.eye(4)[labels] * 2.5
    logits = signal + rng.normal(0, 1.0, (600, 4))
    mirrored = signal + rng.normal(0, 1.0, (600, 4))
    single = fit_temperature(logits, labels)
    fitted = fit_tta_calibration(logits, mirrored, labels, single)
    assert fitted["temperature"] < single
    assert fitted["nll"] <= fitted["nll_with_single_view_temperature"]
    assert fitted["nll"] == pytest.approx(
        averaged_views_nll(logits, mirrored, labels, fitted["temperature"])
    )
