"""Benchmark goals come from a targets file, not from the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowerclf.core.errors import UsageError
from flowerclf.inference.benchmark import (
    TARGET_FIGURES,
    end_to_end_ceiling,
    format_report,
    judge_targets,
    load_targets,
)

PROJECT_TARGETS = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_targets.json"


def _report(fp32_vs_torch: float, p50_ms: float, int8_vs_fp32: float | None) -> dict:
    return {
        "ratios": {"onnx_fp32_vs_torch": fp32_vs_torch, "onnx_int8_vs_fp32": int8_vs_fp32},
        "onnx_fp32": {"p50_ms": p50_ms},
        "int8_accuracy": {"accuracy_drop_points": 0.5},
    }


def test_the_project_targets_file_sets_a_goal_for_every_figure():
    assert set(load_targets(PROJECT_TARGETS)) == set(TARGET_FIGURES)


def test_goals_are_judged_in_the_direction_of_each_figure():
    goals = {"onnx_fp32_vs_torch": 4.0, "onnx_fp32_p50_ms": 5.0, "onnx_int8_vs_fp32": 1.3,
             "int8_accuracy_drop_points": 1.0}  # fmt: skip
    judged = judge_targets(_report(4.8, 7.4, 1.09), goals)
    assert {k: v["met"] for k, v in judged.items() if k in goals} == {
        "onnx_fp32_vs_torch": True,  # higher is better: 4.8 >= 4
        "onnx_fp32_p50_ms": False,  # lower is better: 7.4 > 5
        "onnx_int8_vs_fp32": False,
        "int8_accuracy_drop_points": True,  # 0.5 <= 1
    }
    assert judged["onnx_fp32_p50_ms"] == {"value": 7.4, "target": 5.0, "met": False}
    # exactly on the goal counts as met, in both directions
    on_goal = judge_targets(_report(4.0, 5.0, 1.3), goals)
    assert on_goal["onnx_fp32_vs_torch"]["met"] and on_goal["onnx_fp32_p50_ms"]["met"]


def test_without_goals_every_figure_is_reported_but_none_is_judged():
    judged = judge_targets(_report(4.8, 7.4, None), {})
    assert set(judged) == set(TARGET_FIGURES)
    assert judged["onnx_fp32_vs_torch"] == {"value": 4.8, "target": None, "met": None}
    assert judged["onnx_int8_vs_fp32"]["value"] is None  # no int8 model measured
    # a goal for a figure that was not measured is neither met nor missed
    assert judge_targets(_report(4.8, 7.4, None), {"onnx_int8_vs_fp32": 1.3})[
        "onnx_int8_vs_fp32"
    ] == {"value": None, "target": 1.3, "met": None}


def test_auto_ratios_are_judged_like_the_others():
    report = _report(4.8, 7.4, 1.09)
    report["ratios"] |= {"auto_vs_onnx_fp32": 1.2, "auto_vs_onnx_fp32_latency": 1.1,
                         "end_to_end_vs_auto": 0.96}  # fmt: skip
    goals = {"auto_vs_onnx_fp32": 1.15, "auto_vs_onnx_fp32_latency": 1.18,
             "end_to_end_vs_auto": 0.95}  # fmt: skip
    judged = judge_targets(report, goals)
    assert [judged[k]["met"] for k in goals] == [True, False, True]


def test_end_to_end_ceiling_counts_the_host_work_against_the_cores():
    # 400 img/s on 2 cores = 5 core-ms per image; 2.5 core-ms of decoding on top: 2/3.
    assert end_to_end_ceiling(400.0, 2.5, 2) == pytest.approx(2 / 3)
    # a slow model hides the same decoding almost entirely
    assert end_to_end_ceiling(50.0, 2.5, 2) == pytest.approx(1 / 1.0625)
    assert end_to_end_ceiling(400.0, 0.0, 2) == 1.0


def test_text_report_says_when_no_goal_was_given():
    report = _report(4.8, 7.4, 1.09) | {
        "model": "m", "version": "1", "hardware": "cpu", "threads": 2, "batch_size": 32,
        "images": {"count": 1, "source": "x"}, "end_to_end_ips": 1.0,
    }  # fmt: skip
    report["onnx_fp32"] |= {"throughput_ips": 116.7, "p95_ms": 7.8, "peak_rss_mb": 820.0}
    report["targets"] = judge_targets(report, {"onnx_fp32_p50_ms": 5.0})
    report["end_to_end"] = {"stages": {"decode_ms": 1.3, "preprocess_ms": 0.4, "images": 1}}
    report["ratios"]["end_to_end_ceiling_vs_auto"] = 0.74
    text = format_report(report)
    assert "target onnx_fp32_p50_ms: 7.4 (target 5.0): NOT met" in text
    assert "decode 1.30 ms + preprocess 0.40 ms; with 2 cores that allows at most 0.74x" in text
    assert "target onnx_fp32_vs_torch: 4.8 (no goal given: --targets FILE)" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"onnx_fp32_p50_ms": 5}', '"targets" object'),
        ('{"targets": {"onnx_fp32_p50": 5}}', "did you mean 'onnx_fp32_p50_ms'"),
        ('{"targets": {"onnx_fp32_p50_ms": "fast"}}', "must be a number"),
        ('{"targets": {"onnx_fp32_p50_ms": true}}', "must be a number"),
    ],
)
def test_bad_targets_files_say_what_is_wrong(tmp_path: Path, content: str, message: str):
    path = tmp_path / "targets.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_targets(path)


def test_missing_targets_file_is_a_file_not_found_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        load_targets(tmp_path / "nowhere.json")
    assert json.loads(PROJECT_TARGETS.read_text())["about"]  # the file says what it is


def test_the_cli_reports_a_bad_targets_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from flowerclf.cli.main import main

    bad = tmp_path / "targets.json"
    bad.write_text('{"targets": {"p50_ms": 5}}')
    assert main(["benchmark", "--model", str(tmp_path), "--targets", str(bad)]) != 0
    err = capsys.readouterr().err
    assert "unknown figure 'p50_ms'" in err and "Traceback" not in err
