"""``flowerclf score`` (batch scoring on a process pool or Spark) and ``flowerclf index``
(an approximate-nearest-neighbour index over scored embeddings)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from flowerclf.cli.inference_commands import MODEL_ENV, NO_VERIFY_HELP, resolve_model
from flowerclf.inference.classifier import DEFAULT_BATCH_SIZE


def _score(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from flowerclf.scoring import ScoreOptions, run_score

    options = ScoreOptions(
        model=resolve_model(args.model), input=args.input, output=args.output,
        engine=args.engine, workers=args.workers, spark_master=args.spark_master,
        ship_package=args.ship_package, batch_size=args.batch_size,
        partition_size=args.partition_size, threads=args.threads, embeddings=args.embeddings,
        overwrite=args.overwrite, verify=not args.no_verify, backend=args.backend,
    )  # fmt: skip
    # Spark reports once at the end; the local engine partition by partition.
    with tqdm(desc="score", unit="img", file=sys.stderr, disable=args.quiet) as bar:
        report = run_score(options, progress=lambda result: bar.update(result.rows))
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(
            f"{report['images']} images ({report['errors']} unreadable) in "
            f"{report['partitions']} partitions ({report['skipped_partitions']} already there) "
            f"-> {report['output']}; {report['images_per_s']} images/s on {report['engine']} "
            f"with {report['workers']} workers\n"
        )
    return 0


def register_score(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from flowerclf.inference.backends import BACKENDS
    from flowerclf.scoring.job import DEFAULT_PARTITION_SIZE, ENGINES

    score = commands.add_parser(
        "score",
        help="score many images into a parquet dataset (local process pool or Spark)",
        description=(
            "Classify every image named by --input into a parquet dataset in --output: one "
            "row per image with path, predicted_class, confidence, probabilities (class "
            "names in the schema metadata), is_known/unknown_score, the embedding "
            "(--embeddings) and error (null when the image was read; an unreadable image "
            "gives an error row and the job goes on). The output is split into "
            "part-NNNNN.parquet files of --partition-size images in input order, each "
            "written atomically: a rerun into the same --output skips the partitions "
            "already written."
        ),
    )
    score.add_argument("--model", help=f"model package directory (default ${MODEL_ENV})")
    score.add_argument(
        "--input", required=True,
        help="a directory (walked recursively), a glob, a text file of paths (.txt, one a "
        "line) or a parquet file/directory with a 'path' column",
    )  # fmt: skip
    score.add_argument("--output", required=True, help="parquet dataset directory to write")
    score.add_argument("--engine", choices=ENGINES, default="local")
    score.add_argument(
        "--workers", type=int, default=None,
        help="local: worker processes (default: physical cores); spark: local[N] when no "
        "--spark-master is given",
    )  # fmt: skip
    score.add_argument(
        "--spark-master", default=None,
        help="Spark master URL (default local[*]; spark://host:7077, yarn, k8s://...)",
    )  # fmt: skip
    score.add_argument(
        "--ship-package", action="store_true",
        help="spark: send the package to every executor (SparkContext.addFile) instead of "
        "reading it from --model's path on each of them",
    )  # fmt: skip
    score.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    score.add_argument("--partition-size", type=int, default=DEFAULT_PARTITION_SIZE,
                       help="images per output file (the unit of resumption)")  # fmt: skip
    score.add_argument(
        "--threads", type=int, default=None,
        help="ONNX Runtime threads per session (default: 1 with several workers, else all "
        "physical cores)",
    )  # fmt: skip
    score.add_argument("--embeddings", action="store_true", help="add the embedding column")
    score.add_argument("--backend", choices=("onnx", "onnx_int8"), default="onnx",
                       help=f"ONNX Runtime model (of {', '.join(BACKENDS)})")  # fmt: skip
    score.add_argument("--overwrite", action="store_true",
                       help="replace an --output that holds another job")  # fmt: skip
    score.add_argument("--no-verify", action="store_true", help=NO_VERIFY_HELP)
    score.add_argument("--json", action="store_true", help="print one JSON object (last line)")
    score.set_defaults(handler=_score, extra="score")


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_overrides: Callable[[argparse.ArgumentParser], None],
) -> None:
    register_score(commands)
