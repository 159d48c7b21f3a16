"""scripts/results.py: the results page and the README summary are rendered only from the
stored result files, and `check` notices when either is out of date."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.paths import REPO_ROOT
from tests.helpers.scripts import load_script

SCRIPTS = REPO_ROOT / "scripts"
START, END = "<!-- results-summary:start -->", "<!-- results-summary:end -->"
OPEN_WORLD = "<!-- open-world:start -->\nold\n<!-- open-world:end -->"
README = f"# x\n\nintro\n\n{START}\nold\n{END}\n\n{OPEN_WORLD}\n\nend\n"


@pytest.fixture
def results(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The script imports its sibling benchmark_table as `python scripts/results.py` would.
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return load_script("results", "results_script")


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _metrics(accuracy: float) -> dict[str, float]:
    return {
        "test/accuracy": accuracy, "test/macro_f1": accuracy - 0.01,
        "test/cross_entropy": 0.5, "test/ece": 0.02, "test/knn_accuracy": accuracy - 0.02,
    }  # fmt: skip


def _train_row(accuracy: float, command: str) -> dict:
    return {
        "metrics": _metrics(accuracy), "train_time_s": 12.3, "hardware": "CPU: test x2",
        "command": command,
    }  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one DVC recipe's metrics and the ce seed rows of tf_flowers."""
    test = {key.removeprefix("test/"): value for key, value in _metrics(0.9).items()}
    _write_json(tmp_path / "reports" / "tf_flowers" / "metrics.json", test)
    _write_json(
        tmp_path / "runs" / "tf_flowers" / "metrics.json",
        {"train_time_s": 201.6, "hardware": "CPU: test x2"},
    )
    for seed, accuracy in ((1, 0.8), (2, 0.7)):
        row = f"tf_flowers-lite0-ce-seed{seed}"
        _write_json(tmp_path / "results" / f"{row}.json", _train_row(accuracy, f"cmd seed={seed}"))
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "docs").mkdir()
    return tmp_path


def test_readme_summary_comes_from_the_pipeline_metrics(results: ModuleType, repo: Path) -> None:
    text = results.outputs(repo)[repo / "README.md"]
    assert "old" not in text
    assert text.startswith(f"# x\n\nintro\n\n{START}\n| recipe |")
    assert f"{END}\n\n<!-- open-world:start -->\n" in text
    assert text.endswith("<!-- open-world:end -->\n\nend\n")
    row = (
        "| `tf_flowers` | 0.9000 | 0.8900 | 202 s | CPU: test x2 "
        "| `dvc repro evaluate@tf_flowers` |"
    )
    assert row in text.splitlines()
    # Recipes without metrics files (not run yet) get no row rather than a made-up one.
    assert "tf_flowers4" not in text


def test_results_page_has_each_stored_row_and_the_seed_spread(
    results: ModuleType, repo: Path
) -> None:
    page = results.results_page(repo)
    lines = page.splitlines()
    assert lines[0] == "# Results"
    assert any(line.startswith("| tf_flowers | lite0 | ce-seed2 | 0.7000 |") for line in lines)
    assert any(line.endswith("| `cmd seed=1` |") for line in lines)
    # mean of 0.9, 0.8, 0.7 and the max - min spread in points
    assert "| ce | 0.9000 | 0.8000 | 0.7000 | 0.8000 | 20.0 |" in lines
    # Losses whose three seed rows are not all stored are left out of the seed table.
    assert not any(line.startswith("| ce_cosine |") for line in lines)
    # No stored benchmark, so no benchmark section.
    assert "## Inference speed" not in page


def test_check_finds_stale_files_until_they_are_written(results: ModuleType, repo: Path) -> None:
    readme, page = repo / "README.md", repo / "docs" / "results.md"
    assert results.stale(repo) == [readme, page]
    results.write([readme, page], repo)
    assert results.stale(repo) == []
    _write_json(repo / "results" / "tf_flowers-majority.json", _train_row(0.25, "majority"))
    assert results.stale(repo) == [page]


def test_readme_without_markers_is_refused(results: ModuleType, repo: Path) -> None:
    (repo / "README.md").write_text("# no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        results.outputs(repo)


def test_repository_results_are_rendered_from_its_files(results: ModuleType) -> None:
    """The committed README and docs/results.md are what `make results` would write."""
    assert results.stale(REPO_ROOT) == []


def test_readme_speed_section_has_the_limit_the_choice_and_every_target(
    results: ModuleType, repo: Path
) -> None:
    speed = "<!-- speed:start -->\nold\n<!-- speed:end -->"
    (repo / "README.md").write_text(README + f"\n## Speed\n\n{speed}\n")
    row = {"throughput_ips": 120.0, "p50_ms": 8.0, "p95_ms": 9.0, "peak_rss_mb": 300.0}
    _write_json(repo / "results" / "benchmark.json", {
        "model": "m", "version": "1", "hardware": "CPU: test x2", "threads": 2,
        "batch_size": 32, "images": {"count": 64, "source": "x"}, "command": "flowerclf bench",
        "cpu_features": {"avx2": True, "avx512": False, "vnni": False, "bf16": False,
                         "amx": False},
        "onnx_fp32": row | {"limit_fraction": 0.8}, "openvino_fp32": row,
        "auto": row | {"backend": "openvino", "throughput_ips": 140.0, "p50_ms": 6.5},
        "end_to_end_ips": 133.0, "end_to_end": {"peak_rss_mb": 400.0, "backend": "openvino",
                                                 "stages": {"decode_ms": 1.3,
                                                            "preprocess_ms": 0.45}},
        "limit": {"matmul_gflops": 60.0, "model_gflop_per_image": 0.4, "limit_ips": 150.0},
        "ratios": {"auto_vs_onnx_fp32": 1.17, "auto_vs_onnx_fp32_latency": 1.23,
                   "end_to_end_vs_auto": 0.95, "end_to_end_ceiling_vs_auto": 0.89},
        "targets": {},
    })  # fmt: skip
    text = results.outputs(repo)[repo / "README.md"]
    section = text.split("<!-- speed:start -->")[1].split("<!-- speed:end -->")[0]
    assert "old" not in section
    assert "60.0 GFLOP/s" in section and "150.0 img/s" in section and "(not: avx512" in section
    assert "picked **openvino**" in section
    assert "| onnx_fp32 | 120.0 | 80% | 8.00 |" in section
    assert "`auto_vs_onnx_fp32` = 1.17 (goal >= 1.15" in section and "): met" in section
    assert "`end_to_end_vs_auto` = 0.95" in section
    # The same sentence as `flowerclf benchmark` prints (stages_line).
    assert "decode 1.30 ms + preprocess 0.45 ms; with 2 cores that allows at most 0.89x" in section
    assert "no VNNI/AMX" in section and "trunk-cache build" in section


def test_readme_calibration_line_shows_each_recipe_and_what_its_temperature_was_fitted_on(
    results: ModuleType, repo: Path
) -> None:
    calibrated = {"ece_uncalibrated": 0.172, "ece": 0.0284, "temperature": 0.408}
    _write_json(repo / "reports" / "oxford102" / "metrics.json", calibrated)
    line = results._calibration_line(repo)
    # tf_flowers' fixture metrics have no temperature (an older evaluate): left out.
    assert "`tf_flowers`" not in line
    assert "`oxford102` 0.172 -> 0.028 (T = 0.41 fitted on the fifth of the validation" in line
    assert "`dvc repro evaluate@oxford102`" in line
    (repo / "reports" / "oxford102" / "metrics.json").unlink()
    assert results._calibration_line(repo) is None


def test_robust_recipe_seeds_line_lists_each_seeds_target_drops_and_their_mean(
    results: ModuleType, tmp_path: Path
) -> None:
    def report(blur: float, jpeg: float) -> dict:
        return {"results": {"blur_r2": {"drop_points": blur}, "jpeg_q30": {"drop_points": jpeg}}}

    pattern = results.ROBUST_SEED_ROW
    assert results.robust_seed_reports(tmp_path, pattern, (43, 44)) == {}
    row = pattern.format(seed=43)
    _write_json(tmp_path / "results" / "robustness" / f"{row}.json", report(2.0, 1.0))
    seeds = {42: report(3.8, 1.4)} | results.robust_seed_reports(tmp_path, pattern, (43, 44))
    line = results.robust_seeds_line(seeds, "`tf_flowers_robust`")
    assert "seeds 42, 43" in line and pattern.format(seed="N") in line
    assert "lost by `tf_flowers_robust`: blur_r2 3.8, 2.0 (mean 2.9); jpeg_q30 1.4, 1.0" in line
    assert line.endswith("(mean 1.2) (target 3).")


def _tta_report(single: float, mirrored: float, count: int = 100) -> dict:
    modes = {
        mode: {"accuracy": accuracy, "ece": 0.03, "ms_per_image": ms}
        for mode, accuracy, ms in (("single", single, 5.0), ("tta", mirrored, 10.0))
    }
    return {
        "count": count, "results": modes, "accuracy_gain_points": 100 * (mirrored - single),
        "cost_ratio": 2.0, "train_command": "flowerclf train x", "hardware": "CPU: test (avx2)",
    }  # fmt: skip


def test_tta_table_orders_seeds_by_number_and_gives_each_recipes_mean(
    results: ModuleType, tmp_path: Path
) -> None:
    for name, (single, mirrored) in {
        "best-seed142": (0.96, 0.97), "best-seed42": (0.90, 0.90), "fast-seed42": (0.8, 0.81),
    }.items():  # fmt: skip
        _write_json(tmp_path / "results" / "tta" / f"{name}.json", _tta_report(single, mirrored))
    text = results.tta_table(tmp_path)
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| best-seed42", "| best-seed142", "| fast-seed42"]
    assert "| best-seed142 | 100 | 0.9600 | 0.9700 | +1.00 |" in text
    assert "`best` 0.9300 -> 0.9350 (2 seeds)" in text and "`fast` one seed" in text
    assert results.tta_table(tmp_path / "elsewhere") is None


def _fusion_report(classifier: float, fused: float, k: int, weight: float) -> dict:
    return {
        "count": 100, "test_accuracy_classifier": classifier, "test_accuracy_knn": 0.9,
        "test_accuracy_fused": fused, "gain_points": 100 * (fused - classifier),
        "test_accuracy_best_on_test": max(classifier, fused) + 0.01,
        "chosen": {"k": k, "weight": weight, "val_accuracy": 0.95},
        "train_command": "flowerclf train x", "hardware": "CPU: test (avx2)",
    }  # fmt: skip


def test_fusion_table_shows_the_val_chosen_pair_and_each_recipes_mean(
    results: ModuleType, tmp_path: Path
) -> None:
    for name, report in {
        "best-seed242": _fusion_report(0.94, 0.93, 20, 0.1),
        "best-seed42": _fusion_report(0.95, 0.95, 5, 0.0),
    }.items():
        _write_json(tmp_path / "results" / "knn_fusion" / f"{name}.json", report)
    text = results.fusion_table(tmp_path)
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| best-seed42", "| best-seed242"]
    assert "| best-seed242 | 100 | 0.9400 | 0.9000 | 0.9300 | 20, 0.10 | -1.00 | 0.9500 |" in text
    assert "`best` 0.9450 -> 0.9400 (2 seeds)" in text
    assert results.fusion_table(tmp_path / "elsewhere") is None


def _resolution_report(trained: float, chosen: float, size: int, crop: float) -> dict:
    return {
        "count": 100, "test_accuracy_trained": trained, "test_accuracy_chosen": chosen,
        "gain_points": 100 * (chosen - trained),
        "test_accuracy_best_on_test": max(trained, chosen) + 0.01,
        "trained": {"input_size": 224, "crop_pct": 0.875},
        "chosen": {"input_size": size, "crop_pct": crop, "val_accuracy": 0.95},
        "train_command": "flowerclf train x", "hardware": "CPU: test (avx2)",
    }  # fmt: skip


def test_resolution_table_shows_trained_and_val_chosen_inputs_and_each_recipes_mean(
    results: ModuleType, tmp_path: Path
) -> None:
    for name, report in {
        "best-seed142": _resolution_report(0.94, 0.96, 288, 1.0),
        "best-seed42": _resolution_report(0.95, 0.95, 224, 0.875),
    }.items():
        _write_json(tmp_path / "results" / "eval_resolution" / f"{name}.json", report)
    text = results.resolution_table(tmp_path)
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| best-seed42", "| best-seed142"]
    assert (
        "| best-seed142 | 100 | 224 px, crop 0.875 | 0.9400 | 288 px, no crop | 0.9600 | +2.00 |"
        in text
    )
    assert "`best` 0.9450 -> 0.9550 (2 seeds)" in text
    assert results.resolution_table(tmp_path / "elsewhere") is None
