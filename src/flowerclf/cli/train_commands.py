"""``flowerclf train`` and ``flowerclf evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flowerclf.core.errors import UsageError
from flowerclf.core.metric_names import REPORT_METRICS
from flowerclf.core.package_format import DESCRIPTOR_FILE


def _train(args: argparse.Namespace) -> int:
    from flowerclf.config import compose_config
    from flowerclf.training.train import train

    cfg = compose_config(args.overrides, args.config)
    result = train(cfg)
    if result.global_rank != 0:
        return 0  # another process of a DDP run: rank 0 prints the run's result
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


# ``evaluate <package> --ood | --robustness | --tta`` options: KEY=VALUE -> keyword of the
# report function. ``backend=`` picks the runtime the report measures (default: the one
# ``backend="auto"`` serves, which may be an int8 model: pass ``backend=onnx`` to
# measure the float32 network).
PACKAGE_REPORT_OPTIONS: dict[str, tuple[str, type]] = {
    "data.root": ("data_root", str), "out": ("out", str), "backend": ("backend", str),
    "ood.max_images": ("max_images", int), "ood.oxford_root": ("oxford_root", str),
    "ood.seed": ("seed", int),
}  # fmt: skip
# The keys each report takes; --robustness and --tta read no out-of-distribution set.
REPORT_KEYS = {
    "--ood": tuple(PACKAGE_REPORT_OPTIONS),
    "--robustness": ("data.root", "out", "backend", "ood.max_images"),
    "--tta": ("data.root", "out", "backend", "ood.max_images"),
}


def _parse_package_options(options: list[str], flag: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    keys = REPORT_KEYS[flag]
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in keys:
            valid = ", ".join(f"{k}=<{PACKAGE_REPORT_OPTIONS[k][1].__name__}>" for k in keys)
            raise UsageError(f"unknown {flag} option {option!r}; valid: {valid}")
        name, kind = PACKAGE_REPORT_OPTIONS[key]
        try:
            parsed[name] = kind(value)
        except ValueError:
            raise UsageError(f"{key} must be {kind.__name__}, got {value!r}") from None
    return parsed


def _is_package(target: str) -> bool:
    return (Path(target) / DESCRIPTOR_FILE).is_file()


def _default_out(target: str, flag: str) -> str:
    """Where a run's or checkpoint's package report goes without ``out=``: beside its
    evaluation reports (``<run dir>/eval/<kind>``) for a checkpoint, ``./<run id>-<kind>``
    for a run id (a package's report goes beside the package)."""
    kind = flag.removeprefix("--")
    path = Path(target)
    if path.suffix == ".ckpt":
        return str(path.resolve().parent.parent / "eval" / kind)
    return f"{target}-{kind}"


@contextmanager
def _as_package(target: str, flag: str, options: dict[str, Any]) -> Iterator[str]:
    """``target`` itself when it is a model package; for a run id or checkpoint, a
    temporary package exported from it, so its calibration and thresholds are fitted as
    ``flowerclf export`` fits them (the int8, OpenVINO, TensorRT, Triton, MLflow and gallery
    parts, which these reports do not read, are left out)."""
    if _is_package(target):
        yield target
        return
    from flowerclf.export.options import ExportOptions
    from flowerclf.export.package_writer import export_package

    options.setdefault("out", _default_out(target, flag))
    lean = ExportOptions(
        int8="none", tensorrt="off", openvino="off", triton=False, mlflow=False,
        gallery=False, data_root=options.get("data_root"),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="flowerclf-evaluate-") as tmp:
        sys.stderr.write(f"{flag}: exporting {target} to a temporary package first\n")
        try:
            export_package(target, Path(tmp) / "package", lean)
        except FileNotFoundError as exc:
            raise UsageError(
                f"{flag} evaluates a model package, a run id or a checkpoint: {exc}"
            ) from None
        yield str(Path(tmp) / "package")


def _print_package_report(args: argparse.Namespace, report: dict[str, Any]) -> int:
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(Path(report["report"]["markdown"]).read_text(encoding="utf-8"))
        sys.stdout.write(f"report: {report['report']['markdown']}\n")
    return 0


def _evaluate_ood(args: argparse.Namespace) -> int:
    from flowerclf.evaluation.ood import evaluate_ood

    options = _parse_package_options(args.options, "--ood")
    with _as_package(args.target, "--ood", options) as package:
        return _print_package_report(args, evaluate_ood(package, **options))


def _evaluate_package(
    args: argparse.Namespace, flag: str, run: Callable[..., dict[str, Any]]
) -> int:
    """A package report that takes data.root=, out=, backend= and ood.max_images=
    (``--robustness``, ``--tta``)."""
    options = _parse_package_options(args.options, flag)
    with _as_package(args.target, flag, options) as package:
        return _print_package_report(args, run(package, **options))


def _evaluate_robustness(args: argparse.Namespace) -> int:
    from flowerclf.evaluation.robustness import evaluate_robustness

    return _evaluate_package(args, "--robustness", evaluate_robustness)


def _evaluate_tta(args: argparse.Namespace) -> int:
    from flowerclf.evaluation.tta import evaluate_tta

    return _evaluate_package(args, "--tta", evaluate_tta)


def _evaluate(args: argparse.Namespace) -> int:
    from flowerclf.evaluation.evaluate import evaluate, parse_evaluate_options

    if args.ood:
        return _evaluate_ood(args)
    if args.robustness:
        return _evaluate_robustness(args)
    if args.tta:
        return _evaluate_tta(args)

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
            "batch_size=N, num_workers=N, out=DIR. Reports ece (temperature-scaled, as the "
            "package ships) and ece_uncalibrated. --ood: see below."
        ),
    )
    evaluate.add_argument(
        "target",
        help="MLflow run id or checkpoint path; with --ood, --robustness or --tta also a "
        "model package directory (a run or checkpoint is exported to a temporary package "
        "first, and its report goes to <run dir>/eval/<kind> or ./<run id>-<kind> unless "
        "out= is given)",
    )
    evaluate.add_argument("options", nargs="*", metavar="KEY=VALUE", help="split=test etc.")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--ood", action="store_true",
        help="unknown-image rejection of a model package: test split vs unseen Oxford-102 "
        "species, bundled non-flower photos and synthetic images; AUROC, FPR@95%%TPR and "
        "share rejected per method (options: data.root=, out=, backend=, "
        "ood.oxford_root=, ood.max_images=, ood.seed=)",
    )  # fmt: skip
    evaluate.add_argument(
        "--robustness", action="store_true",
        help="accuracy of a model package on its test split under JPEG, blur, noise, "
        "brightness/contrast, rotation and downscaling corruptions (options: data.root=, "
        "out=, backend=, ood.max_images=)",
    )  # fmt: skip
    evaluate.add_argument(
        "--tta", action="store_true",
        help="test-time augmentation of a model package: test-split accuracy, macro-F1, ECE, "
        "NLL and model time without and with the mirrored view averaged in (options: "
        "data.root=, out=, backend=, ood.max_images=)",
    )  # fmt: skip
    evaluate.set_defaults(handler=_evaluate, extra="train")
