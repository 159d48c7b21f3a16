"""Render a dataset report as JSON, Markdown and a PNG bar chart of class counts."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from flowerclf.core.fs import write_atomic
from flowerclf.data.recipes import SPLITS

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CLASS_COUNTS_PNG = "class_counts.png"
MAX_LISTED = 200


def render_markdown(report: dict[str, Any]) -> str:
    """A human-readable summary of ``report``."""
    lines = [
        f"# Dataset report: {report['dataset']}",
        "",
        f"{report['description']}",
        "",
        f"- recipe: `{report['recipe']}`; source: `{report['source']}`",
        f"- split: {report['split_mode']}"
        + (f" {report['fractions']}" if report.get("fractions") else "")
        + f", seed {report['seed']}",
        f"- files found: {report['num_files']}; decodable images: {report['num_decodable']}; "
        f"usable images: **{report['num_images']}** in {report['num_classes']} classes",
        f"- manifest: `{report['manifest']}` (sha256 `{report['manifest_sha256']}`)",
    ]
    if report.get("licence"):
        lines.append(f"- licence: {report['licence']}")
    if report.get("ignored_classes"):
        lines.append(f"- class folders not in this recipe: {report['ignored_classes']}")
    lines += ["", "## Images per class and split", ""]
    lines.append("| class | " + " | ".join(SPLITS) + " | total |")
    lines.append("|---|" + "---:|" * (len(SPLITS) + 1))
    for name, counts in report["per_class"].items():
        total = sum(counts.values())
        lines.append(f"| {name} | " + " | ".join(str(counts[s]) for s in SPLITS) + f" | {total} |")
    totals = report["splits"]
    lines.append(
        "| **all** | "
        + " | ".join(f"**{totals[s]}**" for s in SPLITS)
        + f" | **{report['num_images']}** |"
    )
    if report.get("official_split"):
        lines += ["", f"Official split sizes: {report['official_split']}"]
    for note in report.get("notes", []):
        lines += ["", f"> {note}"]

    lines += ["", f"## Label conflicts ({len(report['conflicts'])})", ""]
    if report["conflicts"]:
        for conflict in report["conflicts"]:
            lines.append(
                f"- {', '.join(f'`{p}`' for p in conflict['paths'])}: same image in classes "
                f"{conflict['classes']}; {conflict['action']}"
            )
    else:
        lines.append("None.")
    lines += ["", f"## Exact duplicates ({len(report['duplicates'])})", ""]
    if report["duplicates"]:
        for group in report["duplicates"]:
            splits = group.get("official_splits")
            extra = f" (official splits: {splits})" if splits else ""
            lines.append(f"- {group['class_name']}: {group['action']}{extra}")
    else:
        lines.append("None.")
    excluded = report["excluded"]
    lines += ["", f"## Excluded files ({len(excluded)})", ""]
    if excluded:
        lines += ["| file | reason |", "|---|---|"]
        for entry in excluded[:MAX_LISTED]:
            lines.append(f"| `{entry['path']}` | {entry['reason']} |")
        if len(excluded) > MAX_LISTED:
            lines.append(f"| ... | {len(excluded) - MAX_LISTED} more in report.json |")
    else:
        lines.append("None.")
    stats = report.get("size_stats") or {}
    if stats:
        lines += ["", "## Image sizes (after EXIF rotation)", ""]
        lines += ["| measure | min | median | mean | max |", "|---|---:|---:|---:|---:|"]
        for key in ("width", "height", "shorter_side", "aspect_ratio"):
            s = stats[key]
            lines.append(f"| {key} | {s['min']} | {s['median']} | {s['mean']} | {s['max']} |")
        lines += ["", f"Formats: {stats['formats']}; colour modes: {stats['modes']}"]
    lines += ["", f"![class counts]({CLASS_COUNTS_PNG})", ""]
    return "\n".join(lines)


def plot_class_counts(report: dict[str, Any], path: Path) -> None:
    """Horizontal stacked bars of images per class and split."""
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot import
    import matplotlib.pyplot as plt

    classes = list(report["per_class"])
    height = max(3.0, 0.22 * len(classes) + 1.5)
    fig, ax = plt.subplots(figsize=(9, height))
    left = [0] * len(classes)
    colours = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}
    for split in SPLITS:
        values = [report["per_class"][c][split] for c in classes]
        ax.barh(classes, values, left=left, label=split, color=colours[split])
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title(f"{report['dataset']}: {report['num_images']} images, {len(classes)} classes")
    ax.legend(loc="lower right")
    ax.tick_params(axis="y", labelsize=8 if len(classes) > 20 else 10)
    fig.tight_layout()
    # No timestamp metadata: the same report gives the same PNG.
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def write_report_files(directory: Path, report: dict[str, Any]) -> dict[str, Path]:
    """Write report.json, report.md and class_counts.png into ``directory``."""
    paths = {
        "json": directory / REPORT_JSON,
        "markdown": directory / REPORT_MD,
        "png": directory / CLASS_COUNTS_PNG,
    }
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    write_atomic(paths["json"], text.encode("utf-8"))
    write_atomic(paths["markdown"], render_markdown(report).encode("utf-8"))
    plot_class_counts(report, paths["png"])
    return paths
