"""Measure inference speed with `flowerclf benchmark --json` and render it.

    python scripts/benchmark_table.py run --model DIR [--images DIR]   # measure, re-render
    python scripts/benchmark_table.py table                            # the results-page table
    python scripts/benchmark_table.py speed                            # the README speed section

`run` stores the benchmark's JSON output verbatim in results/benchmark.json, then re-renders
the README's speed section and the results page from it (`scripts/results.py readme` and
`docs`, what `make results` runs): one command re-makes every speed figure the docs show.
The tables are rendered only from that file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from flowerclf.inference.benchmark import stages_line

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "results" / "benchmark.json"
# Optional: the trunk-cache build time before/after (scripts/trunk_cache_speed.py).
TRUNK_CACHE_FILE = REPO / "results" / "trunk_cache.json"
# Runtimes in the order the tables list them.
RUNTIMES = ("torch", "onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8",
            "openvino_bf16", "auto")  # fmt: skip
# The issue 16 targets the README speed section states: figure, goal, what it means.
SPEED_TARGETS = (
    ("auto_vs_onnx_fp32", 1.15, "auto throughput at batch 32 / ONNX Runtime fp32's"),
    ("auto_vs_onnx_fp32_latency", 1 / 0.85, "ONNX Runtime fp32 batch-1 p50 / auto's "
     "(>= 1.18 is auto's p50 <= 0.85x)"),
    ("end_to_end_vs_auto", 0.95, "Classifier.predict on image files / auto model-only"),
)  # fmt: skip
# This project's speed goals: the benchmark marks each figure met or not against them.
TARGETS_FILE = REPO / "scripts" / "benchmark_targets.json"


def run(model: str, images: str | None, targets: Path = TARGETS_FILE) -> None:
    targets = targets.resolve()
    shown = targets.relative_to(REPO) if targets.is_relative_to(REPO) else targets
    argv = ["flowerclf", "-q", "benchmark", "--model", model, "--json"]
    if images:
        argv += ["--images", images]
    done = subprocess.run(
        [sys.executable, "-m", *argv, "--targets", str(targets)], capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"benchmark failed with exit code {done.returncode}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["command"] = " ".join([*argv[:1], *argv[2:], "--targets", str(shown)])
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n")
    for page in ("readme", "docs"):
        subprocess.run([sys.executable, str(REPO / "scripts" / "results.py"), page], check=True)


def table(report: dict | None = None) -> str:
    """Markdown for a stored benchmark report (default: results/benchmark.json)."""
    report = json.loads(RESULTS_FILE.read_text()) if report is None else report
    lines = [
        f"Model `{report['model']}`, {report['hardware']}, {report['threads']} threads, "
        f"{report['images']['count']} images, batch {report['batch_size']}; "
        f"command: `{report['command']}`.",
        "",
        "| runtime | throughput @ batch "
        f"{report['batch_size']} (img/s) | p50 @ batch 1 (ms) | p95 @ batch 1 (ms) | "
        "peak RSS (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in RUNTIMES:
        row = report.get(name) or {}
        if "throughput_ips" not in row:
            continue
        label = f"{name} (picked {row['backend']})" if "backend" in row else name
        lines.append(
            f"| {label} | {row['throughput_ips']:.1f} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f}"
            f" | {row['peak_rss_mb']:.0f} |"
        )
    backend = report["end_to_end"].get("backend", "onnx_fp32")
    lines.append(
        f"| end to end (decode + preprocess + {backend}) | {report['end_to_end_ips']:.1f} | | | "
        f"{report['end_to_end']['peak_rss_mb']:.0f} |"
    )
    if limit := limit_sentence(report):
        lines += ["", limit]
    lines.append("")
    targets = report["targets"]
    for key, target in targets.items():
        if target["target"] is None:
            continue  # no goal for this figure
        status = {True: "met", False: "**not met**", None: "n/a"}[target["met"]]
        lines.append(f"- `{key}`: {target['value']} (target {target['target']}): {status}")
    accuracy = report.get("int8_accuracy")
    if accuracy:
        lines.append(
            f"- int8 accuracy on the {accuracy['num_images']} {accuracy['split']} images "
            f"(measured at export): {accuracy['int8_accuracy']:.4f} vs fp32 "
            f"{accuracy['fp32_accuracy']:.4f}"
        )
    return "\n".join(lines)


def limit_sentence(report: dict) -> str | None:
    """The machine's limit line, from a report's ``limit`` and ``cpu_features``."""
    limit = report.get("limit") or {}
    if not limit.get("limit_ips"):
        return None
    features = report.get("cpu_features") or {}
    has = ", ".join(name for name, present in features.items() if present) or "none"
    lacks = ", ".join(name for name, present in features.items() if not present) or "none"
    engines = limit.get("matmul_gflops_by_engine") or {}
    measured = ", ".join(f"{k} {v}" for k, v in engines.items() if v is not None)
    return (
        f"Machine limit: fp32 matrix products run at {limit['matmul_gflops']} GFLOP/s"
        f"{f' (best of {measured})' if measured else ''} and the "
        f"model costs {limit['model_gflop_per_image']} GFLOP per image, so no fp32 runtime "
        f"can pass {limit['limit_ips']} img/s here. CPU features: {has} (not: {lacks})."
    )


def _fraction(row: dict) -> str:
    value = row.get("limit_fraction")
    return "" if value is None else f"{value:.0%}"


def speed_summary(report: dict, trunk_cache: dict | None = None) -> str:
    """Markdown for the README's speed section (issue 16): the machine's limit, the runtime
    ``auto`` picks, each runtime's share of the limit, and every ratio of the targets."""
    lines = [
        f"`{report['command']}` on {report['hardware']} ({report['threads']} threads), model "
        f"`{report['model']}`:",
        "",
    ]
    if limit := limit_sentence(report):
        lines += [limit, ""]
    auto = report.get("auto") or {}
    if "backend" in auto:
        lines += [f"`backend=\"auto\"` (the default) picked **{auto['backend']}** on this "
                  "machine.", ""]  # fmt: skip
    lines += [
        f"| runtime | img/s @ batch {report['batch_size']} | share of the limit | "
        "p50 @ batch 1 (ms) |",
        "|---|---:|---:|---:|",
    ]
    for name in RUNTIMES:
        row = report.get(name) or {}
        if "throughput_ips" in row:
            lines.append(
                f"| {name} | {row['throughput_ips']:.1f} | {_fraction(row)} | {row['p50_ms']:.2f} |"
            )
        elif "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | |")
    lines.append(f"| end to end (`Classifier.predict` on files) | {report['end_to_end_ips']:.1f}"
                 " | | |")  # fmt: skip
    lines += ["", "Targets (ratios measured in that one run):", ""]
    ratios = report.get("ratios", {})
    for figure, goal, meaning in SPEED_TARGETS:
        value = ratios.get(figure)
        status = "not measured" if value is None else ("met" if value >= goal else "**not met**")
        line = f"- `{figure}` = {value} (goal >= {goal:.2f}; {meaning}): {status}"
        # Why end to end trails the model: the same sentence `flowerclf benchmark` prints.
        if figure == "end_to_end_vs_auto" and (ceiling := stages_line(report)):
            line += f"; {ceiling}"
        lines.append(line)
    lines.append(_int8_line(report))
    lines.append(_trunk_cache_line(trunk_cache))
    return "\n".join(lines)


def _int8_line(report: dict) -> str:
    """int8: its speed-up over fp32 of the same runtime, its accuracy cost, whether chosen."""
    ratios = report.get("ratios", {})
    vnni = (report.get("cpu_features") or {}).get("vnni")
    parts = []
    for runtime, ratio, key in (
        ("ONNX Runtime int8", "onnx_int8_vs_fp32", "int8_accuracy"),
        ("OpenVINO int8", "openvino_int8_vs_fp32", "openvino_int8_accuracy"),
        ("OpenVINO bf16", "openvino_bf16_vs_fp32", "openvino_bf16_accuracy"),
    ):
        accuracy = report.get(key)
        if ratios.get(ratio) is None and not accuracy:
            continue
        part = f"{runtime} {ratios.get(ratio)}x its fp32"
        if accuracy:
            part += (
                f", {accuracy['accuracy_drop_points']} points lost on the "
                f"{accuracy['num_images']} {accuracy['split']} images"
            )
        parts.append(part)
    auto = report.get("auto") or {}
    if "backend" not in auto:
        chosen = "auto not measured"
    else:
        reduced = "int8" in auto["backend"] or "bf16" in auto["backend"]
        chosen = "chosen by auto" if reduced else "not chosen by auto"
    why = "" if vnni or vnni is None else " (no VNNI/AMX: int8 dot products gain little)"
    measured = "; ".join(parts) if parts else "no int8 measurement"
    return (
        f"- int8 and bf16 (goal: >= 1.30x fp32 of the same runtime, <= 1 point lost): "
        f"{measured}; "
        f"{chosen}{why}."
    )


def _trunk_cache_line(trunk_cache: dict | None) -> str:
    if not trunk_cache:
        return (
            "- trunk-cache build (goal: >= 1.3x faster than ONNX Runtime's): not measured "
            "(`python scripts/trunk_cache_speed.py`)"
        )
    return (
        f"- trunk-cache build (goal: >= 1.3x faster than ONNX Runtime's): "
        f"{trunk_cache['speedup']}x ({trunk_cache['images']} images, "
        f"{trunk_cache['onnx_s']} s -> {trunk_cache['auto_s']} s with "
        f"{trunk_cache['auto_runtime']}; {trunk_cache['note']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("--model", required=True)
    run_parser.add_argument("--images")
    run_parser.add_argument("--targets", type=Path, default=TARGETS_FILE, help="goals (JSON)")
    sub.add_parser("table")
    sub.add_parser("speed")
    args = parser.parse_args()
    if args.action == "run":
        run(args.model, args.images, args.targets)
    elif args.action == "speed":
        print(speed_summary(json.loads(RESULTS_FILE.read_text())))
    else:
        print(table())


if __name__ == "__main__":
    main()
