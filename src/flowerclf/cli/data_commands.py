"""``flowerclf data list | prepare | report``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPORT_KEYS = (
    "dataset",
    "num_files",
    "num_images",
    "num_classes",
    "classes",
    "splits",
    "excluded",
    "conflicts",
    "duplicates",
    "official_split",
    "manifest",
    "manifest_sha256",
)


def _data_list(args: argparse.Namespace) -> int:
    from importlib import resources

    from omegaconf import OmegaConf

    from flowerclf.config.compose import CONFIG_MODULE, group_options

    rows = []
    for option in group_options("data"):
        # Read descriptions straight from the packaged YAML: cheap, no Hydra composition.
        text = resources.files(CONFIG_MODULE).joinpath("data", f"{option}.yaml").read_text()
        cfg = OmegaConf.create(text)
        rows.append({"name": option, "description": cfg.get("description", "")})
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        width = max(len(r["name"]) for r in rows)
        for row in rows:
            sys.stdout.write(f"{row['name']:<{width}}  {row['description']}\n")
        sys.stdout.write("\nPrepare one with: flowerclf data prepare data=<name> [data.root=DIR]\n")
    return 0


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    prepared_dir = Path(report["data_root"]) / report["prepared_dir"]
    return {key: report.get(key) for key in REPORT_KEYS} | {"prepared_dir": str(prepared_dir)}


def _print_human(report: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(
        f"{report['dataset']}: {report['num_files']} files found, "
        f"{report['num_decodable']} decodable images, {report['num_images']} usable images, "
        f"{report['num_classes']} classes\n"
    )
    out.write(f"splits: {report['splits']}\n")
    if report.get("official_split"):
        out.write(f"official split sizes: {report['official_split']}\n")
    for conflict in report["conflicts"]:
        out.write(
            f"label conflict: {conflict['paths']} ({'/'.join(conflict['classes'])}): "
            f"{conflict['action']}\n"
        )
    for group in report["duplicates"]:
        out.write(f"duplicate: {group['action']}\n")
    invalid = [e for e in report["excluded"] if e.get("kind") == "invalid"]
    for entry in invalid[:20]:
        out.write(f"excluded: {entry['path']}: {entry['reason']}\n")
    if len(invalid) > 20:
        out.write(f"... and {len(invalid) - 20} more excluded files (see report.json)\n")
    prepared = f"{report['data_root']}/{report['prepared_dir']}"
    out.write(f"manifest: {report['data_root']}/{report['manifest']}\n")
    out.write(f"manifest sha256: {report['manifest_sha256']}\n")
    out.write(f"report: {prepared}/report.md, {prepared}/class_counts.png\n")


def _data_prepare(args: argparse.Namespace) -> int:
    from flowerclf.config import compose_config
    from flowerclf.data.prepare import PrepareOptions, prepare_dataset

    cfg = compose_config(args.overrides, args.config)
    report = prepare_dataset(PrepareOptions.from_config(cfg))
    if args.json:
        sys.stdout.write(json.dumps(_summary(report)) + "\n")
    else:
        _print_human(report)
    return 0


def _data_fetch(args: argparse.Namespace) -> int:
    from flowerclf.config import compose_config
    from flowerclf.data.prepare import resolve_root
    from flowerclf.data.recipes import make_recipe
    from flowerclf.data.sources import acquire_raw

    cfg = compose_config(args.overrides, args.config)
    data = cfg.data
    recipe = make_recipe(data.recipe, list(data.classes) if data.classes else None)
    raw_dir, source = acquire_raw(
        recipe, data.source, resolve_root(data.root), refresh=bool(data.refresh),
        source_sha256=data.source_sha256,
    )  # fmt: skip
    if args.json:
        sys.stdout.write(json.dumps({"raw_dir": str(raw_dir), "source": source}) + "\n")
    else:
        sys.stdout.write(f"raw copy: {raw_dir} (from {source})\n")
    return 0


def _data_report(args: argparse.Namespace) -> int:
    from flowerclf.config import compose_config
    from flowerclf.data.prepare import load_report, resolve_root
    from flowerclf.data.report import write_report_files

    cfg = compose_config(args.overrides, args.config)
    prepared_dir = resolve_root(cfg.data.root) / cfg.data.name
    report = load_report(prepared_dir)
    write_report_files(prepared_dir, report)
    if args.json:
        sys.stdout.write(json.dumps(_summary(report)) + "\n")
    else:
        _print_human(report)
    return 0


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_overrides: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add the ``data`` command group to the top-level parser."""
    data = commands.add_parser("data", help="list, prepare and report datasets")
    data.set_defaults(extra="train")  # Hydra configs, matplotlib report, scipy (oxford102)
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list the built-in dataset recipes")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_data_list)

    fetch = actions.add_parser(
        "fetch",
        help="only acquire the raw copy <data.root>/raw/<dataset> (what `prepare` starts with)",
        description=(
            "Download (or copy from data.source / $FLOWERCLF_SOURCES) a dataset's raw files "
            "into <data.root>/raw/<dataset>/, without validating or splitting them. The DVC "
            "pipeline versions this raw copy as its own stage."
        ),
    )
    fetch.add_argument("--json", action="store_true", help="print a JSON summary")
    add_overrides(fetch)
    fetch.set_defaults(handler=_data_fetch)

    prepare = actions.add_parser(
        "prepare",
        help="acquire, validate, de-duplicate and split a dataset; write manifest and report",
        description=(
            "Acquire a dataset (data.source, $FLOWERCLF_SOURCES or the official download), "
            "decode every image once, exclude unusable files with a reason, drop exact "
            "duplicates and label conflicts, split it (seeded, stratified) and write "
            "manifest.csv, classes.json, report.{json,md} and class_counts.png under "
            "<data.root>/<data.name>/."
        ),
    )
    prepare.add_argument("--json", action="store_true", help="print a JSON summary")
    add_overrides(prepare)
    prepare.set_defaults(handler=_data_prepare)

    report = actions.add_parser(
        "report",
        help="print and re-render the report of a prepared dataset",
        description="Re-render report.md and class_counts.png of a prepared dataset and print "
        "its summary (one JSON object with --json).",
    )
    report.add_argument("--json", action="store_true", help="print one JSON object")
    add_overrides(report)
    report.set_defaults(handler=_data_report)
