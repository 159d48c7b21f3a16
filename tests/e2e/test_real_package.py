"""``flowerclf serve`` on a package written by ``flowerclf export`` (a tiny trained model)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from flowerclf import Classifier
from tests.helpers.packages import TrainedPackage
from tests.helpers.server import LiveServer, run_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported_server(model_package: TrainedPackage) -> Iterator[LiveServer]:
    with run_server(model_package.package) as server:
        yield server


def test_every_route_on_an_exported_package(
    exported_server: LiveServer, model_package: TrainedPackage
) -> None:
    images = sorted(model_package.images.rglob("*.jpg"))[::7][:6]
    with (
        Classifier.load(model_package.package) as classifier,
        httpx.Client(base_url=exported_server.url, timeout=60) as client,
    ):
        for path in images:
            expected = classifier.predict(path, top_k=2).to_dict()
            got = client.post(
                "/v1/predict", files={"file": (path.name, path.read_bytes())}, params={"top_k": 2}
            ).json()
            assert got["predicted_class"] == expected["predicted_class"]
            for name, probability in expected["all_predictions"].items():
                assert got["all_predictions"][name] == pytest.approx(probability, abs=1e-5)
            assert [e["class"] for e in got["top_k"]] == [e["class"] for e in expected["top_k"]]

        files = [("files", (p.name, p.read_bytes())) for p in images[:3]]
        batch = client.post("/v1/predict/batch", files=files).json()
        assert batch["count"] == 3 and batch["failed"] == 0

        data = images[0].read_bytes()
        embedding = client.post("/v1/embed", files={"file": ("a.jpg", data)}).json()
        assert embedding["dim"] == 16
        similar = client.post("/v1/similar", files={"file": ("a.jpg", data)}, params={"k": 3})
        neighbours = similar.json()["neighbors"]
        assert len(neighbours) == 3
        expected_ids = [n.id for n in classifier.similar(images[0], k=3)]
        assert [n["id"] for n in neighbours] == expected_ids
        thumbnail = client.get(neighbours[0]["thumbnail_url"])
        assert thumbnail.status_code == 200 and thumbnail.content[:3] == b"\xff\xd8\xff"

        assert client.get("/v1/classes").json()["classes"] == classifier.classes
        model = client.get("/v1/model").json()
        assert model["name"] == classifier.info["name"] and "preprocess" in model
        assert client.get("/health").status_code == 200
        assert client.get("/ready").json()["ready"] is True
        assert "flowerclf_http_requests_total" in client.get("/metrics").text
        assert "Swagger UI" in client.get("/docs").text
    assert exported_server.alive()
