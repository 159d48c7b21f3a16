"""The approximate similarity index: recall against exact search, disk round trip, and its
use by ``Classifier.similar`` and ``/v1/similar`` above the size threshold."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from flowerclf.cli.main import main
from flowerclf.core.errors import PackageError, UsageError
from flowerclf.inference import similarity
from flowerclf.inference.classifier import Classifier
from flowerclf.inference.similarity import AnnIndex, AnnSettings, exact_search
from flowerclf.scoring import ScoreOptions, run_score
from flowerclf.serving.app import create_app
from flowerclf.serving.settings import ServeSettings
from tests.helpers.colour_package import COLOURS, solid, split

pytest.importorskip("faiss")

K = 10


def clustered(rows: int, dim: int = 64, clusters: int = 100, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` centres, spread like real image embeddings (a
    tf_flowers package's nearest neighbours have cosine similarities of 0.7 to 0.8)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    points = centres[rng.integers(0, clusters, rows)] + 0.6 * rng.normal(size=(rows, dim))
    points = points.astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth, strict=True)])
    )


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    data = clustered(5_000)
    queries = clustered(200, seed=1)
    return data, queries


@pytest.fixture(scope="module")
def hnsw(vectors: tuple[np.ndarray, np.ndarray]) -> AnnIndex:
    return AnnIndex.build(vectors[0], AnnSettings(kind="hnsw"))


@pytest.mark.parametrize(("kind", "floor"), [("hnsw", 0.97), ("ivf", 0.95)])
def test_recall_at_10_against_exact_search(
    vectors: tuple[np.ndarray, np.ndarray], hnsw: AnnIndex, kind: str, floor: float
) -> None:
    data, queries = vectors
    exact_scores, truth = exact_search(data, queries, K)
    index = hnsw if kind == "hnsw" else AnnIndex.build(data, AnnSettings(kind="ivf"))
    scores, found = index.search(queries, K)
    assert recall_at_k(found, truth) >= floor
    # The scores of the neighbours found are their true cosine similarities.
    np.testing.assert_allclose(scores[:, 0], np.einsum("qd,qd->q", queries, data[found[:, 0]]),
                               atol=1e-5)  # fmt: skip
    assert np.all(scores[:, 0] <= exact_scores[:, 0] + 1e-5)


def test_the_index_round_trips_through_disk(
    vectors: tuple[np.ndarray, np.ndarray], hnsw: AnnIndex, tmp_path: Path
) -> None:
    queries = vectors[1]
    hnsw.save(tmp_path / "ann.faiss")
    loaded = AnnIndex.load(tmp_path / "ann.faiss", hnsw.settings)
    assert (loaded.count, loaded.dim) == (5_000, 64)
    np.testing.assert_array_equal(loaded.search(queries, K)[1], hnsw.search(queries, K)[1])
    settings = hnsw.settings

    (tmp_path / "bad.faiss").write_bytes(b"not an index")
    with pytest.raises(PackageError, match="not a readable FAISS index"):
        AnnIndex.load(tmp_path / "bad.faiss", settings)


def test_k_above_ef_search_still_returns_k(vectors: tuple[np.ndarray, np.ndarray]) -> None:
    data, queries = vectors
    index = AnnIndex.build(data[:500], AnnSettings(ef_search=8))
    scores, rows = index.search(queries[:3], 40)
    assert rows.shape == (3, 40) and (rows >= 0).all() and np.isfinite(scores).all()


def test_bad_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="valid: hnsw, ivf"):
        AnnSettings(kind="lsh")
    with pytest.raises(UsageError, match="nprobe"):
        AnnSettings(nprobe=0)


def test_classifier_uses_the_index_above_the_threshold(
    colour_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = [solid("green"), split("red", "blue"), solid("blue", (50, 20))]
    with Classifier.load(colour_package) as exact:
        expected = exact.similar(queries, k=5)
        assert exact.index.ann is None  # 12 gallery images: far below the threshold
    monkeypatch.setattr(similarity, "ANN_THRESHOLD", 10)
    with Classifier.load(colour_package) as approximate:
        found = approximate.similar(queries, k=5)
        assert approximate.index.ann is not None
    assert [[n.id for n in row] for row in found] == [[n.id for n in row] for row in expected]
    np.testing.assert_allclose([[n.score for n in row] for row in found],
                               [[n.score for n in row] for row in expected], atol=1e-5)  # fmt: skip


def shade(colour: str, i: int) -> tuple[int, int, int]:
    """Image ``i``'s colour: ``colour`` with its weakest channel raised by ``3 * i`` (so
    every row differs, and the colour stays the dominant one)."""
    channels = list(COLOURS[colour])
    weakest = channels.index(min(channels))
    channels[weakest] += 3 * i
    return channels[0], channels[1], channels[2]


@pytest.fixture
def scored_index(colour_package: Path, tmp_path: Path) -> Path:
    """``score --embeddings`` on 24 coloured images (and a corrupt file), then
    ``index build`` through the CLI."""
    images = tmp_path / "collection"
    images.mkdir()
    for i in range(24):
        colour = list(COLOURS)[i % 3]
        Image.new("RGB", (30 + i, 30), shade(colour, i)).save(images / f"{i:02d}-{colour}.png")
    (images / "zz-corrupt.png").write_bytes(b"\x89PNG broken")
    scores = tmp_path / "scores"
    run_score(ScoreOptions(model=str(colour_package), input=str(images), output=str(scores),
                           workers=1, embeddings=True, partition_size=10))  # fmt: skip
    out = io.StringIO()
    index_dir = tmp_path / "index"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", out)
        assert main(["-q", "index", "build", "--embeddings", str(scores), "--out",
                     str(index_dir), "--json"]) == 0  # fmt: skip
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["count"] == 24 and summary["settings"]["kind"] == "hnsw"
    return index_dir


def test_index_built_from_score_output_serves_classifier_similar(
    colour_package: Path, scored_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(similarity, "ANN_THRESHOLD", 20)
    with Classifier.load(colour_package, similar_index=scored_index) as classifier:
        neighbours = classifier.similar(Image.new("RGB", (40, 40), shade("blue", 14)), k=4)
        assert classifier.index.ann is not None and classifier.index.ann.count == 24
    assert neighbours[0].path.endswith("14-blue.png") and neighbours[0].score > 0.9999
    assert {n.class_name for n in neighbours} == {"blue"}
    assert all(n.path.endswith("blue.png") for n in neighbours)


def test_v1_similar_searches_the_given_index(colour_package: Path, scored_index: Path) -> None:
    settings = ServeSettings(model=colour_package, similar_index=scored_index)
    with TestClient(create_app(settings)) as client:
        red = base64.b64encode(_png(Image.new("RGB", (31, 30), shade("red", 9)))).decode()
        body = client.post("/v1/similar", json={"image": red, "k": 3}).json()
    assert [n["class"] for n in body["neighbors"]] == ["red"] * 3
    assert body["neighbors"][0]["id"] == 9  # row 9 of the index: 09-red.png
    assert all("thumbnail_url" not in n for n in body["neighbors"])  # not package images


def test_an_index_of_another_model_is_refused(colour_package: Path, scored_index: Path) -> None:
    meta = json.loads((scored_index / "index.json").read_text())
    meta["source"]["model"]["version"] = "2"
    (scored_index / "index.json").write_text(json.dumps(meta))
    classifier = Classifier.load(colour_package, similar_index=scored_index)
    with classifier, pytest.raises(PackageError, match="built from embeddings of colour-layout"):
        classifier.similar(solid("red"))


def test_a_directory_that_is_no_index_is_refused(colour_package: Path, tmp_path: Path) -> None:
    classifier = Classifier.load(colour_package, similar_index=tmp_path)
    with classifier, pytest.raises(PackageError, match="not a similarity index"):
        classifier.similar(solid("red"))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
