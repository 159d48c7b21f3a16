"""Open world (issue 13) on a package that ``flowerclf export`` wrote from a trained run:
the fitted section, the same calibrated confidence on every backend, ``evaluate`` ECE
before/after, and the one-command OOD report."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowerclf import Classifier
from flowerclf.cli.main import main
from flowerclf.core.open_set import METHODS, OPEN_SET_FILE
from flowerclf.core.package_format import DESCRIPTOR_FILE
from tests.helpers.packages import TrainedPackage

pytestmark = pytest.mark.slow


def _images(model_package: TrainedPackage, count: int = 6) -> list[Path]:
    return sorted(model_package.images.rglob("*.jpg"))[:count]


def test_export_fits_calibration_and_rejection(model_package: TrainedPackage) -> None:
    descriptor = json.loads((model_package.package / DESCRIPTOR_FILE).read_text())
    section = descriptor["open_world"]
    assert section["temperature"] > 0
    assert set(section["reject"]["thresholds"]) == set(METHODS)
    assert section["reject"]["keep"] == 0.95
    assert section["calibration"]["count"] > 0 and 0 <= section["calibration"]["ece"] <= 1
    assert descriptor["files"]["open_set"] == OPEN_SET_FILE
    assert (model_package.package / OPEN_SET_FILE).is_file()
    assert "open_set" in descriptor["sha256"]
    # The pyfunc's slim copy carries the statistics too.
    mlflow_package = model_package.package / descriptor["files"]["mlflow"]
    assert list(mlflow_package.rglob(OPEN_SET_FILE))


def test_onnx_and_torch_give_the_same_calibrated_confidence_and_score(
    model_package: TrainedPackage,
) -> None:
    images = _images(model_package)
    with Classifier.load(model_package.package) as onnx_clf:
        onnx_out = onnx_clf.predict(images)
    with Classifier.load(model_package.package, backend="torch") as torch_clf:
        torch_out = torch_clf.predict(images)
        method = onnx_clf.open_world.method
        stats = onnx_clf.open_world.stats
    # The default score (msp_knn) is a rank among the validation scores: two runtimes'
    # 1e-5 differences can move it by up to one step of that rank, 1 / (validation size).
    step = 1.0 / len(stats.reference_msp) if method == "msp_knn" and stats else 0.0
    for a, b in zip(onnx_out, torch_out, strict=True):
        assert a.predicted_class == b.predicted_class and a.is_known == b.is_known
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
        assert a.unknown_score == pytest.approx(b.unknown_score, abs=1e-3 + step)


def test_evaluate_json_reports_calibrated_and_raw_ece(
    model_package: TrainedPackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", model_package.tracking_uri)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        data_root = f"data.root={model_package.root / 'data'}"
        code = main(["-q", "evaluate", str(model_package.checkpoint), "split=test", data_root,
                     f"out={tmp_path}", "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    assert 0 <= report["ece"] <= 1 and 0 <= report["ece_uncalibrated"] <= 1
    assert report["temperature"] > 0
    assert (tmp_path / "reliability.png").is_file()
    assert (tmp_path / "reliability_uncalibrated.png").is_file()


def _fake_oxford(root: Path) -> Path:
    """Four Oxford-102 style images; one of class "a", which the model knows."""
    from scipy.io import savemat

    (root / "jpg").mkdir(parents=True)
    names = {"1": "oxeye daisy", "2": "lotus", "3": "a"}  # "a" overlaps the model's class a
    (root / "cat_to_name.json").write_text(json.dumps(names))
    savemat(root / "imagelabels.mat", {"labels": np.array([[1, 2, 2, 3]])})
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "jpg" / f"image_{i + 1:05d}.jpg")
    return root


def test_evaluate_ood_writes_json_markdown_and_png(
    model_package: TrainedPackage, tmp_path: Path
) -> None:
    oxford = _fake_oxford(tmp_path / "oxford")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["-q", "evaluate", str(model_package.package), "--ood", "--json",
                     f"data.root={model_package.root / 'data'}", f"out={tmp_path / 'ood'}",
                     f"ood.oxford_root={oxford}", "ood.max_images=20"])  # fmt: skip
    assert code == 0
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    assert set(report["methods"]) == set(METHODS)
    assert report["groups"]["unseen_species"]["count"] == 3  # every image but class "a"
    assert report["notes"]["unseen_species_excluded_classes"] == ["a"]
    for entry in report["methods"].values():
        for group in ("unseen_species", "non_flower_photos", "synthetic", "non_flower"):
            row = entry["groups"][group]
            assert 0 <= row["auroc"] <= 1 and 0 <= row["fpr_at_95_tpr"] <= 1
            assert 0 <= row["rejected"] <= 1
    for name in ("ood.json", "ood.md", "ood_histograms.png"):
        assert (tmp_path / "ood" / name).is_file()
    assert "| knn | synthetic |" in (tmp_path / "ood" / "ood.md").read_text()


def test_evaluate_ood_on_a_checkpoint_exports_it_first_and_matches_its_package(
    model_package: TrainedPackage, tmp_path: Path
) -> None:
    oxford = _fake_oxford(tmp_path / "oxford")
    common = [f"data.root={model_package.root / 'data'}", f"ood.oxford_root={oxford}",
              "ood.max_images=20"]  # fmt: skip
    reports = {}
    for name, target in (("package", model_package.package), ("run", model_package.checkpoint)):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["-q", "evaluate", str(target), "--ood", "--json", *common,
                         f"out={tmp_path / name}"])  # fmt: skip
        assert code == 0
        reports[name] = json.loads(out.getvalue().strip().splitlines()[-1])
    # Same calibration and thresholds as `flowerclf export` fits: the same figures.
    for method, entry in reports["package"]["methods"].items():
        for group, row in entry["groups"].items():
            theirs = reports["run"]["methods"][method]["groups"][group]
            assert theirs["auroc"] == pytest.approx(row["auroc"], abs=1e-6), (method, group)
            assert theirs["rejected"] == pytest.approx(row["rejected"], abs=1e-6), (method, group)
    assert (tmp_path / "run" / "ood.md").is_file()


def test_evaluate_ood_on_something_else_says_what_it_takes(tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["evaluate", str(tmp_path / "nothing.ckpt"), "--ood"]) != 0
    assert "nothing.ckpt" in err.getvalue()


def test_evaluate_robustness_writes_the_table(model_package: TrainedPackage, tmp_path: Path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["-q", "evaluate", str(model_package.package), "--robustness", "--json",
                     f"data.root={model_package.root / 'data'}", f"out={tmp_path}"])  # fmt: skip
    assert code == 0
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    results = report["results"]
    assert results["clean"]["drop_points"] == 0.0
    assert {"jpeg_q30", "blur_r2", "noise_s25", "rotate_90", "downscale_64"} <= set(results)
    assert all(0 <= row["accuracy"] <= 1 and 0 <= row["known"] <= 1 for row in results.values())
    for name in ("robustness.json", "robustness.md", "robustness.png"):
        assert (tmp_path / name).is_file()


def test_evaluate_tta_on_the_chosen_backend_reports_both_modes(
    model_package: TrainedPackage, tmp_path: Path
) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["-q", "evaluate", str(model_package.package), "--tta", "--json",
                     f"data.root={model_package.root / 'data'}", f"out={tmp_path}",
                     "backend=onnx"])  # fmt: skip
    assert code == 0
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    # backend= picks the runtime measured (auto may serve an int8 model instead).
    assert report["backend"] == "onnx"
    single, tta = report["results"]["single"], report["results"]["tta"]
    assert report["accuracy_gain_points"] == pytest.approx(
        100 * (tta["accuracy"] - single["accuracy"])
    )
    assert report["cost_ratio"] == pytest.approx(tta["ms_per_image"] / single["ms_per_image"])
    for name in ("tta.json", "tta.md"):
        assert (tmp_path / name).is_file()


@pytest.mark.parametrize("flag", ["--tta", "--robustness"])
def test_a_package_report_names_its_own_flag_and_options_when_one_is_wrong(
    flag: str, tmp_path: Path
) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["evaluate", str(tmp_path), flag, "ood.seed=3"]) != 0
    message = err.getvalue()
    # ood.seed= is an --ood option: the error says which flag rejected it and what it takes.
    assert f"unknown {flag} option 'ood.seed=3'" in message
    assert "backend=<str>" in message and "ood.oxford_root" not in message
