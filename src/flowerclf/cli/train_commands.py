"""``flowerclf train`` and ``flowerclf evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from flowerclf.core.metric_names import REPORT_METRICS


def _train(args: argparse.Namespace) -> int:
    from flowerclf.config import compose_config
    from flowerclf.training.train import train

    cfg = compose_config(args.overrides, args.config)
    result = train(cfg)
    if args.json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        out = sys.stdout
        out.write(f"run: {result.run_id} ({result.tracking_uri})\n")
        out.write(f"checkpoint: {result.checkpoint}\n")
        for key, value in sorted(result.metrics.items()):
            out.write(f"{key}: {value:.4f}\n")
        for split, path in result.reports.items():
            out.write(f"{split} report: {path}\n")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from flowerclf.evaluation.evaluate import evaluate, parse_evaluate_options

    options = parse_evaluate_options(args.options)
    report = evaluate(args.target, **options)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        out = sys.stdout
        for key in REPORT_METRICS:
            if key in report:
                out.write(f"{key}: {report[key]}\n")
        out.write(f"report: {report['report']['markdown']}\n")
        for name, path in report["plots"].items():
            out.write(f"{name}: {path}\n")
    return 0


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_overrides: Callable[[argparse.ArgumentParser], None],
) -> None:
    train = commands.add_parser(
        "train",
        help="train a classifier (tracked in MLflow)",
        description=(
            "Train model=<name> on a prepared data=<name>, tracked in MLflow "
            "(MLFLOW_TRACKING_URI or sqlite:///mlflow.db). trainer=cpu_fast trains on cached "
            "frozen-backbone outputs; trainer=default fine-tunes end to end; "
            "resume=<run id> continues an interrupted run."
        ),
    )
    train.add_argument(
        "--json", action="store_true", help="print one JSON object as the last stdout line"
    )
    add_overrides(train)
    train.set_defaults(handler=_train, extra="train")

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a run or checkpoint: metrics, reports and plots",
        description=(
            "Evaluate the best checkpoint of an MLflow run (by id) or a .ckpt file on a split "
            "of its dataset. Options: split=train|val|test (default test), data.root=DIR, "
            "batch_size=N, num_workers=N, out=DIR."
        ),
    )
    evaluate.add_argument("target", help="MLflow run id or checkpoint path")
    evaluate.add_argument("options", nargs="*", metavar="KEY=VALUE", help="split=test etc.")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=_evaluate, extra="train")
