"""``flowerclf``: one command, one subcommand per job.

Subcommands that run pipelines take Hydra overrides as trailing ``key=value`` arguments,
e.g. ``flowerclf data prepare data=oxford102 data.root=/data seed=7``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from flowerclf import __version__
from flowerclf.cli import (
    data_commands,
    inference_commands,
    scale_commands,
    serve_commands,
    train_commands,
)
from flowerclf.cli.extras import check_extra, is_third_party, missing_extra_error
from flowerclf.core.errors import EXIT_FAILURE, FlowerclfError

log = logging.getLogger("flowerclf")

OVERRIDES_HELP = (
    "Hydra overrides: group=option (data=oxford102) or key=value (data.root=/data, seed=7); "
    "see `flowerclf config show` and README 'Configuration'"
)

EXIT_OK = 0


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    parser.add_argument(
        "--config",
        metavar="FILE[:SECTION]",
        help="start from this already-composed config (e.g. params.yaml:tf_flowers, written by "
        "`flowerclf config params`) instead of the packaged Hydra configs; KEY=VALUE still apply",
    )


def _config_show(args: argparse.Namespace) -> int:
    from flowerclf.config import compose_config

    sys.stdout.write(compose_config(args.overrides, args.config).to_yaml())
    return EXIT_OK


def _config_params(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flowerclf.config.dvc_params import render_params

    text = render_params(args.overrides)
    out = Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text(encoding="utf-8") != text:
            sys.stderr.write(
                f"{out} is not what the Hydra configs give; regenerate it with "
                f"`flowerclf config params --out {out}` (make params)\n"
            )
            return EXIT_FAILURE
        return EXIT_OK
    out.write_text(text, encoding="utf-8")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowerclf",
        description="flowerclf: train, track, export and serve flower image classifiers.",
        epilog="Run `flowerclf <command> --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"flowerclf {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data_commands.register(commands, add_overrides)
    train_commands.register(commands, add_overrides)
    inference_commands.register(commands, add_overrides)
    serve_commands.register(commands, add_overrides)
    scale_commands.register(commands, add_overrides)

    config = commands.add_parser("config", help="inspect the Hydra configuration")
    config.set_defaults(extra="train")  # Hydra, OmegaConf, pydantic
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_commands.add_parser(
        "show", help="print the composed config for the given overrides (validates them)"
    )
    add_overrides(show)
    show.set_defaults(handler=_config_show)
    params = config_commands.add_parser(
        "params",
        help="write the DVC pipeline's params.yaml: each recipe's config composed from Hydra",
    )
    params.add_argument("--out", default="params.yaml", help="file to write (params.yaml)")
    params.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the file is out of date"
    )
    params.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides applied to every recipe"
    )
    params.set_defaults(handler=_config_params)
    return parser


class _QuietRootSources(logging.Filter):
    """Drops below-WARNING records logged straight to the root logger from these packages."""

    def __init__(self, *path_parts: str) -> None:
        super().__init__()
        self.path_parts = path_parts

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(
            part in record.pathname for part in self.path_parts
        )


_QUIET_ROOT_SOURCES = _QuietRootSources(f"onnxruntime{os.sep}quantization")


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # Third-party libraries are chatty at INFO; keep their warnings only.
    for noisy in ("matplotlib", "PIL", "urllib3", "hydra", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # onnxruntime's quantiser logs through the root logger itself (one INFO line per rescaled
    # bias, hundreds per export), so it has no logger name to quieten: filter by source.
    logging.getLogger().addFilter(_QUIET_ROOT_SOURCES)
    # Lightning attaches its own console handler; without this every line prints twice.
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).propagate = False
        logging.getLogger(name).setLevel(level)


# OS errors that name a path the user gave (a missing input file, an output that exists):
# one line is the whole story. Other OS errors keep their traceback.
_USER_PATH_ERRORS = (
    FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
)  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    """Run the command's handler; a command that needs an install extra (``extra`` in its
    parser defaults) says which one when it, or a module it imports, is not installed."""
    handler: Any = args.handler
    extra: str | None = getattr(args, "extra", None)
    if extra is None:
        return int(handler(args))
    check_extra(args.command, extra)
    try:
        return int(handler(args))
    except ModuleNotFoundError as exc:
        if not is_third_party(exc.name):
            raise
        raise missing_extra_error(args.command, extra, [str(exc.name)]) from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowerclf`` console script; returns the exit status."""
    parser = build_parser()
    # key=value options may follow --flags (`export RUN --out DIR data.root=X`); argparse
    # alone cannot interleave positionals with optionals, so collect them here.
    args, extra = parser.parse_known_args(argv)
    trailing = [e for e in extra if "=" in e and not e.startswith("-")]
    if extra and (len(trailing) != len(extra) or not hasattr(args, "options")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if trailing:
        args.options = [*args.options, *trailing]
    _configure_logging(args)
    try:
        return _run(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except (FlowerclfError, *_USER_PATH_ERRORS) as exc:
        sys.stderr.write(f"error: {exc}\n")
        if args.verbose:
            log.exception("details")
        if getattr(args, "json", False):
            sys.stdout.write(json.dumps({"error": str(exc), "type": type(exc).__name__}) + "\n")
        return exc.exit_code if isinstance(exc, FlowerclfError) else EXIT_FAILURE
