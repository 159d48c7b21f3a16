"""The OpenVINO backend and ``backend="auto"`` on the colour package (known answers).

OpenVINO must give ONNX Runtime's outputs; ``auto`` must measure once, cache its choice,
and answer exactly as the runtime it picked.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from flowerclf import Classifier
from flowerclf.core.errors import MissingExtraError, UsageError
from flowerclf.core.hardware import cpu_description, cpu_features
from flowerclf.core.package_format import DESCRIPTOR_FILE, load_package
from flowerclf.inference import auto
from flowerclf.inference.backends import create_backend
from tests.helpers.colour_package import COLOURS, solid, split

pytest.importorskip("openvino")

IMAGES = [solid(c) for c in COLOURS] + [split("red", "green"), split("blue", "red")] * 3


@pytest.fixture
def measuring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Let ``auto`` measure (the suite forces ONNX Runtime), with a cache in tmp_path."""
    monkeypatch.delenv(auto.FORCE_ENV, raising=False)
    monkeypatch.setenv(auto.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(auto, "LATENCY_SECONDS", 0.01)  # the choice itself is not tested here
    return tmp_path / "cache"


def test_openvino_matches_onnx_runtime(colour_package: Path) -> None:
    package = load_package(colour_package)
    batch = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    onnx = create_backend(package, "onnx")
    openvino = create_backend(package, "openvino")
    for ours, reference in zip(openvino.run_logits(batch), onnx.run_logits(batch), strict=True):
        np.testing.assert_allclose(ours, reference, atol=1e-5)
    with Classifier.load(colour_package, backend="openvino") as classifier:
        assert classifier.backend_name == "openvino"
        answers = [p.predicted_class for p in classifier.predict(IMAGES[:3])]
    assert answers == list(COLOURS)


def test_openvino_missing_says_what_to_install(
    colour_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(MissingExtraError, match=r"flowerclf\[openvino\]"):
        Classifier.load(colour_package, backend="openvino")


def test_auto_answers_as_the_runtime_it_picked_and_caches_the_choice(
    colour_package: Path, measuring: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Classifier.load(colour_package, backend="auto") as classifier:
        choice = classifier.auto_choice
        assert choice is not None and not choice.from_cache and not choice.forced
        assert {"onnx", "openvino"} <= set(choice.candidates)
        assert "p50_ms" in choice.candidates["openvino"]  # passed parity, was measured
        assert classifier.backend_name == choice.name
        batch_probs = classifier.predict_proba(IMAGES)  # 8 images: the throughput winner
        single_probs = classifier.predict_proba(IMAGES[3])  # batch 1: the latency winner
    with Classifier.load(colour_package, backend=choice.throughput) as picked:
        np.testing.assert_array_equal(batch_probs, picked.predict_proba(IMAGES))
    with Classifier.load(colour_package, backend=choice.latency) as picked:
        np.testing.assert_array_equal(single_probs, picked.predict_proba(IMAGES[3]))
    assert len(list(measuring.rglob("*.json"))) == 1

    def no_second_measurement(*args: object, **kwargs: object) -> None:
        raise AssertionError("auto measured again instead of reading its cache")

    monkeypatch.setattr(auto, "select", no_second_measurement)
    with Classifier.load(colour_package, backend="auto") as again:
        assert again.auto_choice is not None and again.auto_choice.from_cache
        assert again.backend_name == choice.name


def test_auto_forced_by_the_environment_does_not_measure(
    colour_package: Path, monkeypatch: pytest.MonkeyPatch, measuring: Path
) -> None:
    monkeypatch.setattr(auto, "select", None)  # would fail if called
    monkeypatch.setenv(auto.FORCE_ENV, "openvino")
    with Classifier.load(colour_package) as classifier:  # auto is the default
        assert classifier.backend_name == "openvino"
        assert classifier.auto_choice is not None and classifier.auto_choice.forced
    monkeypatch.setenv(auto.FORCE_ENV, "tensorflow")
    with pytest.raises(UsageError, match="valid: onnx"):
        Classifier.load(colour_package)
    assert not measuring.exists()


def test_int8_outside_its_accuracy_budget_is_never_a_candidate(
    colour_package: Path, tmp_path: Path, measuring: Path
) -> None:
    package_dir = tmp_path / "package"
    shutil.copytree(colour_package, package_dir)
    descriptor_path = package_dir / DESCRIPTOR_FILE
    descriptor = json.loads(descriptor_path.read_text())
    descriptor["files"]["onnx_int8"] = "model.onnx"  # any model: it must not even be loaded
    descriptor["checks"] = {"int8": {"accuracy_drop_points": 1.09}}
    descriptor_path.write_text(json.dumps(descriptor))
    package = load_package(package_dir, verify=False)
    assert "1.09" in (auto.budget_reason(package, "onnx_int8") or "")
    descriptor["checks"]["int8"]["accuracy_drop_points"] = 0.5
    descriptor_path.write_text(json.dumps(descriptor))
    assert auto.budget_reason(load_package(package_dir, verify=False), "onnx_int8") is None
    assert "no such model" in (auto.budget_reason(package, "openvino_int8") or "")


def test_bf16_needs_its_measured_accuracy_and_a_cpu_with_bf16_units(
    colour_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package_dir = tmp_path / "package"
    shutil.copytree(colour_package, package_dir)
    descriptor_path = package_dir / DESCRIPTOR_FILE
    descriptor = json.loads(descriptor_path.read_text())
    with_bf16 = {"avx2": True, "avx512": True, "vnni": True, "bf16": True, "amx": False}
    monkeypatch.setattr(auto, "cpu_features", lambda: with_bf16)
    package = load_package(package_dir, verify=False)
    assert "no accuracy measured" in (auto.budget_reason(package, "openvino_bf16") or "")
    descriptor["checks"] = {"openvino_bf16": {"accuracy_drop_points": 0.0}}
    descriptor_path.write_text(json.dumps(descriptor))
    package = load_package(package_dir, verify=False)
    assert auto.budget_reason(package, "openvino_bf16") is None
    monkeypatch.setattr(auto, "cpu_features", lambda: with_bf16 | {"bf16": False})
    assert "no bf16 units" in (auto.budget_reason(package, "openvino_bf16") or "")


def test_cpu_features_from_cpuinfo_flags() -> None:
    zen4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n"
    haswell = "flags\t: fpu sse4_2 avx avx2 fma\n"
    assert cpu_features(zen4) == {
        "avx2": True, "avx512": True, "vnni": True, "bf16": True, "amx": False,
    }  # fmt: skip
    assert cpu_features(haswell) == {
        "avx2": True, "avx512": False, "vnni": False, "bf16": False, "amx": False,
    }  # fmt: skip


def test_the_cpu_description_names_the_instruction_sets_that_set_its_speed() -> None:
    # One model name covers EPYCs with and without AVX-512, about 2x apart in speed.
    zen3 = "model name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n"
    zen5 = "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n"
    assert cpu_description(zen3).startswith("CPU: AMD EPYC x")
    assert cpu_description(zen3).endswith(" (avx2)")
    assert cpu_description(zen5).endswith(" (avx2, avx512, vnni, bf16)")
    assert "(" not in cpu_description("")  # no flags known: the model alone


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        # One runtime wins both: nothing to decide.
        ({"onnx": (6.0, 100.0), "openvino": (5.0, 150.0)}, ("openvino", "openvino")),
        # The throughput winner is 10 % slower at batch 1: it serves both (one thread pool).
        ({"onnx": (5.0, 100.0), "openvino": (5.5, 150.0)}, ("openvino", "openvino")),
        # The latency winner gives up only 5 % of throughput: it serves both.
        ({"onnx": (3.0, 142.5), "openvino": (5.5, 150.0)}, ("onnx", "onnx")),
        # Far apart at both tasks: each batch class keeps its own winner.
        ({"onnx": (3.0, 100.0), "openvino": (5.5, 150.0)}, ("onnx", "openvino")),
    ],
)
def test_one_runtime_serves_both_batch_classes_unless_the_gap_is_large(
    figures: dict[str, tuple[float, float]], expected: tuple[str, str]
) -> None:
    table = {name: {"p50_ms": p50, "batch_ips": ips} for name, (p50, ips) in figures.items()}
    assert auto.pick_winners(table, list(table)) == expected
