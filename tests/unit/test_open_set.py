"""Open world (issue 13): the scoring, calibration and fitting math on tiny arrays with
answers worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowerclf.core.errors import PackageError, UsageError
from flowerclf.core.open_set import (
    OPEN_SET_FILE,
    OpenSetStats,
    combined_score,
    empirical_cdf,
    energy_score,
    knn_score,
    load_open_world,
    log_softmax,
    mahalanobis_score,
    msp_score,
    softmax,
    unknown_scores,
)
from flowerclf.evaluation.ood import (
    SYNTHETIC_KINDS,
    method_available,
    synthetic_image,
    unseen_species_paths,
)
from flowerclf.export.open_world import OpenWorldOptions, SplitOutputs, fit_open_world
from flowerclf.export.options import DEFAULT_METHOD
from flowerclf.metrics.calibration import (
    fit_temperature,
    logits_from_probabilities,
    negative_log_likelihood,
)
from flowerclf.metrics.open_set import auroc, fit_stats, fit_threshold, fpr_at_tpr


def test_softmax_with_temperature() -> None:
    logits = np.array([[0.0, math.log(3.0)]])
    assert softmax(logits) == pytest.approx(np.array([[0.25, 0.75]]))
    # T = 2 halves the log-odds: odds 3 -> sqrt(3).
    p = softmax(logits, 2.0)[0, 1]
    assert p == pytest.approx(math.sqrt(3) / (1 + math.sqrt(3)), rel=1e-6)
    # Temperature never changes the predicted class.
    rng = np.random.default_rng(0)
    many = rng.normal(size=(50, 7)) * 5
    assert (softmax(many, 3.7).argmax(1) == many.argmax(1)).all()


def test_msp_and_energy_scores() -> None:
    logits = np.array([[10.0, 0.0], [0.0, 0.0]])
    assert msp_score(logits) == pytest.approx([1 - 1 / (1 + math.exp(-10)), 0.5])
    assert energy_score(logits)[1] == pytest.approx(-math.log(2.0))
    # More total evidence -> lower energy (more known).
    assert energy_score(np.array([[5.0, 5.0]]))[0] < energy_score(np.array([[1.0, 1.0]]))[0]


def test_knn_score_is_one_minus_kth_similarity() -> None:
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)]], np.float32)
    query = np.array([[1.0, 0.0]], np.float32)
    assert knn_score(query, bank, 1)[0] == pytest.approx(0.0, abs=1e-6)
    assert knn_score(query, bank, 2)[0] == pytest.approx(1 - math.sqrt(0.5), abs=1e-6)
    assert knn_score(query, bank, 3)[0] == pytest.approx(1.0, abs=1e-6)
    assert knn_score(query, bank, 99)[0] == pytest.approx(1.0, abs=1e-6)  # k clipped


def test_mahalanobis_score_uses_nearest_class_and_precision() -> None:
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    precision = np.diag([1.0, 4.0])  # variance 1 along x, 1/4 along y
    points = np.array([[1.0, 0.0], [0.0, 1.0], [9.0, 0.5]])
    assert mahalanobis_score(points, means, precision) == pytest.approx([1.0, 4.0, 2.0])


def test_auroc_and_fpr_known_answers() -> None:
    assert auroc([0, 1, 2], [3, 4]) == 1.0
    assert auroc([3, 4], [0, 1, 2]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5  # ties count a half
    assert auroc([0, 2], [1, 3]) == pytest.approx(0.75)
    known = np.arange(100, dtype=float)  # threshold keeping 95 % is 95
    assert fit_threshold(known, 0.95) == 95.0
    assert fpr_at_tpr(known, np.array([50.0, 94.0, 96.0, 200.0])) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        auroc([], [1.0])


def test_fit_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 5)) * 2.0
    cumulative = np.exp(log_softmax(true_logits)).cumsum(axis=1)
    labels = (rng.uniform(size=(4000, 1)) > cumulative).sum(axis=1).clip(0, 4)
    overconfident = true_logits * 3.0  # a network 3x too sure of itself
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.08)
    assert negative_log_likelihood(overconfident, labels, temperature) < negative_log_likelihood(
        overconfident, labels, 1.0
    )


def test_logits_from_probabilities_give_the_same_calibration() -> None:
    logits = np.array([[2.0, -1.0, 0.5], [30.0, 0.0, -5.0]])
    recovered = logits_from_probabilities(softmax(logits))
    assert softmax(recovered, 2.5) == pytest.approx(softmax(logits, 2.5), abs=1e-5)


def _toy_split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.arange(n) % 3
    centres = np.eye(3, 8) * 4.0
    embeddings = centres[labels] + rng.normal(scale=0.5, size=(n, 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    logits = np.eye(3)[labels] * 6.0 + rng.normal(size=(n, 3))
    return logits, embeddings.astype(np.float32), labels


def test_fit_open_world_writes_a_section_the_runtime_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    _, train_emb, train_labels = _toy_split(rng, 300)
    val = SplitOutputs(*_toy_split(rng, 200))
    files, section = fit_open_world(
        tmp_path, val, train_emb, train_labels, ["a", "b", "c"], OpenWorldOptions(keep=0.9)
    )
    assert files == {"open_set": OPEN_SET_FILE}
    assert section["reject"]["method"] == DEFAULT_METHOD == "msp_knn"
    descriptor = {"files": files, "open_world": json.loads(json.dumps(section))}
    world = load_open_world(descriptor, tmp_path)
    assert world.available and world.enabled
    scores = world.scores(val.logits, val.embeddings)
    assert scores is not None
    kept = np.mean([world.is_known(s) for s in scores])
    assert kept == pytest.approx(0.9, abs=0.01)  # the threshold keeps `keep` of val
    # Random directions in embedding space are far from every class: rejected.
    noise = rng.normal(size=(50, 8)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    far = world.scores(np.zeros((50, 3)), noise)
    assert np.mean([not world.is_known(s) for s in far]) > 0.8
    # Overrides: rejection off, another method, a threshold.
    off = load_open_world(descriptor, tmp_path, reject=False)
    assert all(off.is_known(s) for s in far)
    strict = load_open_world(descriptor, tmp_path, method="mahalanobis", threshold=0.0)
    assert strict.method == "mahalanobis" and not strict.is_known(0.1)
    with pytest.raises(UsageError, match="unknown open-set method"):
        load_open_world(descriptor, tmp_path, method="vibes")


def test_old_descriptor_means_rejection_unavailable(tmp_path: Path) -> None:
    world = load_open_world({"files": {}}, tmp_path)
    assert not world.available and world.scores(np.zeros((1, 2)), np.zeros((1, 2))) is None
    assert world.is_known(None)
    assert world.temperature == 1.0
    assert world.describe()["rejection"]["available"] is False
    assert "re-export" in world.describe()["rejection"]["reason"]


def test_missing_statistics_file_is_a_package_error(tmp_path: Path) -> None:
    section = {"temperature": 1.2, "reject": {"method": "knn", "thresholds": {"knn": 0.3}}}
    with pytest.raises(PackageError, match=OPEN_SET_FILE):
        load_open_world({"files": {}, "open_world": section}, tmp_path)
    bad = {"files": {}, "open_world": {"temperature": -1.0}}
    with pytest.raises(PackageError, match="temperature"):
        load_open_world(bad, tmp_path)


def test_fit_stats_round_trip(tmp_path: Path) -> None:
    _, embeddings, labels = _toy_split(np.random.default_rng(2), 90)
    stats = fit_stats(embeddings, labels, 3, k=4)
    loaded = OpenSetStats.load(stats.save(tmp_path / OPEN_SET_FILE))
    assert loaded.k == 4 and loaded.bank.shape == (90, 8)
    assert np.allclose(loaded.precision, stats.precision)
    with pytest.raises(ValueError, match="no training embeddings"):
        fit_stats(embeddings, labels, 4)


def test_empirical_cdf_interpolates_between_reference_scores() -> None:
    reference = np.array([1.0, 2.0, 3.0, 4.0])
    ranks = empirical_cdf(np.array([0.0, 1.0, 2.5, 4.0, 9.0]), reference)
    assert ranks == pytest.approx([0.0, 0.25, 0.625, 1.0, 1.0])


def test_msp_knn_is_the_mean_of_the_two_validation_ranks(tmp_path: Path) -> None:
    _, embeddings, labels = _toy_split(np.random.default_rng(3), 60)
    stats = fit_stats(embeddings, labels, 3, k=1)
    with pytest.raises(PackageError, match="re-export"):
        combined_score(np.zeros(1), np.zeros(1), stats)  # no references: an older package
    assert not method_available("msp_knn", stats) and method_available("knn", stats)
    stats = stats.with_references(np.array([0.1, 0.3, 0.2, 0.4]), np.array([0.5, 0.7, 0.6, 0.8]))
    # MSP 0.3 is the 3rd of 4 reference scores (0.75), kNN 0.8 the 4th (1.0): mean 0.875.
    assert combined_score(np.array([0.3]), np.array([0.8]), stats) == pytest.approx([0.875])
    loaded = OpenSetStats.load(stats.save(tmp_path / OPEN_SET_FILE))
    assert loaded.reference_msp is not None and loaded.reference_knn is not None
    assert loaded.reference_msp == pytest.approx([0.1, 0.2, 0.3, 0.4])
    logits, queries = np.eye(3)[labels[:5]] * 5.0, embeddings[:5]
    expected = combined_score(msp_score(logits), knn_score(queries, loaded.bank, 1), loaded)
    assert unknown_scores("msp_knn", logits, queries, 1.0, loaded) == pytest.approx(expected)
    assert method_available("msp_knn", loaded)


def test_unseen_species_leave_out_every_overlapping_name(tmp_path: Path) -> None:
    from scipy.io import savemat

    names = {"1": "oxeye daisy", "2": "desert-rose", "3": "pink primrose", "4": "lotus"}
    (tmp_path / "cat_to_name.json").write_text(json.dumps(names))
    savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[1, 2, 3, 4, 3, 4]])})
    (tmp_path / "jpg").mkdir()
    classes = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    paths, excluded = unseen_species_paths(tmp_path, classes, limit=10)
    assert excluded == ["desert-rose", "oxeye daisy"]
    assert [p.name for p in paths] == [f"image_0000{i}.jpg" for i in (3, 4, 5, 6)]


@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_synthetic_images_are_rgb(kind: str) -> None:
    image = synthetic_image(kind, np.random.default_rng(0), size=64)
    assert image.mode == "RGB" and image.size == (64, 64)


def test_corruptions_keep_an_rgb_photo_and_change_it() -> None:
    from flowerclf.evaluation.robustness import corruptions

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    for name, corrupt in corruptions().items():
        out = corrupt(photo)
        assert out.mode == "RGB", name
        expected = (40, 60) if name == "rotate_90" else (60, 40)
        assert out.size == expected, name
        if name != "rotate_180":
            assert not np.array_equal(np.asarray(out), np.asarray(photo)), name
    turned = corruptions()["rotate_180"](photo)
    assert np.array_equal(np.asarray(turned), np.asarray(photo)[::-1, ::-1])
