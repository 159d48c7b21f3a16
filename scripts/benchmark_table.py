"""Measure inference speed with `flowerclf benchmark --json` and render it as a table.

    python scripts/benchmark_table.py run --model DIR [--images DIR]   # -> results/benchmark.json
    python scripts/benchmark_table.py table                            # print the table

The JSON output of the benchmark is stored verbatim; the table is rendered only from it.
`python scripts/results.py docs` (`make results`) puts it on the docs' results page.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "results" / "benchmark.json"
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
    for name in ("torch", "onnx_fp32", "onnx_int8"):
        row = report.get(name) or {}
        if "throughput_ips" not in row:
            continue
        lines.append(
            f"| {name} | {row['throughput_ips']:.1f} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f}"
            f" | {row['peak_rss_mb']:.0f} |"
        )
    lines.append(
        f"| end to end (decode + preprocess + onnx_fp32) | {report['end_to_end_ips']:.1f} | | | "
        f"{report['end_to_end']['peak_rss_mb']:.0f} |"
    )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("--model", required=True)
    run_parser.add_argument("--images")
    run_parser.add_argument("--targets", type=Path, default=TARGETS_FILE, help="goals (JSON)")
    sub.add_parser("table")
    args = parser.parse_args()
    if args.action == "run":
        run(args.model, args.images, args.targets)
    else:
        print(table())


if __name__ == "__main__":
    main()
