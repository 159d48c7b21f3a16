"""The app in process: routes, dependency override, settings, limits, metrics, batching."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from flowerclf.core.preprocess import PreprocessSpec, bound_aspect, preprocess_eval
from flowerclf.inference.classifier import Neighbor, Prediction
from flowerclf.serving.app import create_app
from flowerclf.serving.batching import MicroBatcher
from flowerclf.serving.deps import get_service
from flowerclf.serving.service import InferenceService
from flowerclf.serving.settings import ServeSettings
from tests.helpers.colour_package import solid, split


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


class FakeClassifier:
    """A test double: always 'tulip', records the batch sizes it saw."""

    def __init__(self) -> None:
        self.classes = ["daisy", "tulip"]
        self.backend_name = "fake"
        self.batches: list[int] = []
        self.lock = threading.Lock()
        self.closed = False

    @property
    def info(self) -> dict[str, Any]:
        return {"name": "fake", "version": "0", "classes": self.classes,
                "preprocess": {"input_size": 8}, "metrics": {}, "backend": "fake"}  # fmt: skip

    def preprocess(self, x: Image.Image) -> np.ndarray:
        return np.zeros((3, 8, 8), np.float32)

    def run_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            self.batches.append(len(batch))
        probabilities = np.tile(np.array([0.25, 0.75], np.float32), (len(batch), 1))
        return probabilities, np.ones((len(batch), 4), np.float32) / 2

    def to_prediction(self, probabilities: np.ndarray, top_k: int | None = None) -> Prediction:
        return Prediction("tulip", float(probabilities[1]), {"daisy": 0.25, "tulip": 0.75})

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Neighbor]]:
        return [[Neighbor(7, "x/7.jpg", "daisy", 0.5)] * k for _ in embeddings]

    def load_index(self) -> bool:
        return True

    def gallery_dir(self) -> Path | None:
        return None

    def close(self) -> None:
        self.closed = True


def test_dependency_override_swaps_the_model(colour_package: Path) -> None:
    fake = FakeClassifier()
    app = create_app(ServeSettings(model=colour_package, micro_batch=False))
    with TestClient(app) as client:
        app.dependency_overrides[get_service] = lambda: InferenceService(
            fake, ServeSettings(micro_batch=False)
        )
        response = client.post("/v1/predict", files={"file": ("a.jpg", jpeg(solid("red")))})
        assert response.status_code == 200
        assert response.json()["predicted_class"] == "tulip"
        assert client.get("/v1/classes").json()["classes"] == ["daisy", "tulip"]


def test_loader_injection_and_lifespan_close() -> None:
    fake = FakeClassifier()
    app = create_app(ServeSettings(), loader=lambda settings: fake)
    with TestClient(app) as client:
        assert client.get("/ready").json() == {"ready": True, "model": "fake"}
        body = client.post("/v1/similar", files={"file": ("a.jpg", jpeg(solid("red")))},
                           params={"k": 2}).json()  # fmt: skip
        assert body == {"k": 2, "neighbors": [{"id": 7, "class": "daisy", "score": 0.5}] * 2}
    assert fake.closed


def test_not_ready_before_startup(colour_package: Path) -> None:
    app = create_app(ServeSettings(model=colour_package))
    client = TestClient(app)  # no context manager: the lifespan never runs
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 503
    response = client.get("/v1/classes")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLOWERCLF_SERVE_MODEL", str(tmp_path))
    monkeypatch.setenv("FLOWERCLF_SERVE_PORT", "9123")
    monkeypatch.setenv("FLOWERCLF_SERVE_MICRO_BATCH", "true")
    settings = ServeSettings()
    assert (settings.model, settings.port, settings.micro_batch) == (tmp_path, 9123, True)
    monkeypatch.setenv("FLOWERCLF_SERVE_PORT", "-4")
    with pytest.raises(ValueError, match="port"):
        ServeSettings()


def test_routes_on_real_package(client: TestClient) -> None:
    red_on_top = jpeg(split("red", "green"))
    body = client.post("/v1/predict", files={"file": ("a.jpg", red_on_top)}).json()
    assert body["predicted_class"] == "red" and "top_k" not in body
    assert set(body["all_predictions"]) == {"red", "green", "blue"}
    encoded = base64.b64encode(jpeg(split("green", "red"))).decode()
    body = client.post("/v1/predict", json={"image": encoded, "top_k": 2}).json()
    assert body["predicted_class"] == "green"
    assert [e["class"] for e in body["top_k"]] == ["green", "red"]
    embedding = client.post("/v1/embed", files={"file": ("a.jpg", red_on_top)}).json()
    assert embedding["dim"] == 6
    assert np.linalg.norm(embedding["embedding"]) == pytest.approx(1.0, abs=1e-4)
    green = base64.b64encode(jpeg(solid("green"))).decode()
    similar = client.post("/v1/similar", json={"image": green, "k": 3}).json()
    assert [n["class"] for n in similar["neighbors"]] == ["green"] * 3
    thumbnail = client.get(similar["neighbors"][0]["thumbnail_url"])
    assert thumbnail.headers["content-type"] == "image/jpeg"
    model = client.get("/v1/model").json()
    assert model["name"] == "colour-layout" and model["backend"] == "onnx"
    assert model["preprocess"]["input_size"] == 32
    assert "root" not in model and "files" not in model
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}


def test_batch_reports_per_image_errors(client: TestClient) -> None:
    files = [("files", ("a.jpg", jpeg(solid("blue")))), ("files", ("b.jpg", b"\xff\xd8\xff")),
             ("files", ("c.png", jpeg(solid("green"))))]  # fmt: skip
    body = client.post("/v1/predict/batch", files=files).json()
    assert body["count"] == 3 and body["failed"] == 1
    assert body["results"][0]["prediction"]["predicted_class"] == "blue"
    assert body["results"][1]["error"]["code"] == "invalid_image"
    assert body["results"][2]["prediction"]["predicted_class"] == "green"


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 100_000

    response = client.post(
        "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_metrics_count_routes_and_statuses(client: TestClient) -> None:
    client.post("/v1/predict", files={"file": ("a.jpg", jpeg(solid("red")))})
    client.post("/v1/predict", files={"file": ("a.txt", b"text")})
    client.get("/v1/gallery/12345")
    text = client.get("/metrics").text
    assert (
        'flowerclf_http_requests_total{method="POST",route="/v1/predict",status="200"} 1.0' in text
    )
    assert (
        'flowerclf_http_requests_total{method="POST",route="/v1/predict",status="415"} 1.0' in text
    )
    assert 'route="/v1/gallery/{image_id}",status="404"' in text
    assert "flowerclf_http_request_duration_seconds_bucket" in text
    assert "flowerclf_http_requests_in_flight" in text
    assert "flowerclf_inference_batch_size_count" in text


def test_concurrent_requests_are_micro_batched(colour_package: Path) -> None:
    fake = FakeClassifier()

    def slow_run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import time

        time.sleep(0.05)  # while one batch runs, the others queue up
        return FakeClassifier.run_arrays(fake, batch)

    fake.run_arrays = slow_run  # type: ignore[method-assign]
    app = create_app(
        ServeSettings(micro_batch=True, micro_batch_size=8), loader=lambda settings: fake
    )
    with TestClient(app) as client:
        results: list[int] = []

        def call() -> None:
            response = client.post("/v1/predict", files={"file": ("a.jpg", jpeg(solid("red")))})
            results.append(response.status_code)

        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [200] * 12
    assert sum(fake.batches) == 12 + 1  # + the warm-up pass
    assert max(fake.batches) > 1


def test_micro_batcher_rows_go_back_to_their_callers() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return batch[:, 0, 0, :2] * 2, batch[:, 0, 0, :1]

    async def main() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_size=4, max_wait_s=0.01)
            await batcher.start()
            inputs = [np.full((1, 1, 2), i, np.float32) for i in range(10)]
            outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
            await batcher.stop()
            return outputs

    outputs = asyncio.run(main())
    assert [float(probs[0]) for probs, _ in outputs] == [2.0 * i for i in range(10)]


def test_bound_aspect_keeps_photos_and_cuts_lines() -> None:
    photo = Image.new("RGB", (400, 300))
    assert bound_aspect(photo) is photo
    line = bound_aspect(Image.new("RGB", (100_000, 3)))
    assert line.size == (12, 3)
    assert bound_aspect(Image.new("RGB", (2, 9_000))).size == (2, 8)


def test_preprocessing_an_extreme_line_image_is_cheap() -> None:
    """A 1 x 200,000 image would need ~39 GB if the shorter side were resized first."""
    spec = PreprocessSpec(input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    out = preprocess_eval(Image.new("RGB", (1, 200_000), (255, 0, 0)), spec)
    assert out.shape == (3, 224, 224)
    assert np.allclose(out[0], 1.0) and np.allclose(out[1], -1.0)
