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
    # The local engine reports partition by partition; Spark reports once, at the end.
    quiet = args.quiet or args.engine == "spark"
    with tqdm(desc="score", unit="img", file=sys.stderr, disable=quiet) as bar:
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
    from flowerclf.scoring.limits import DEFAULT_PARTITION_SIZE, ENGINES

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


def _index_build(args: argparse.Namespace) -> int:
    from flowerclf.inference.similarity import ANN_THRESHOLD, AnnSettings
    from flowerclf.scoring.gallery import build_gallery_index

    settings = AnnSettings(
        kind=args.kind, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
        ef_search=args.ef_search, nlist=args.nlist, nprobe=args.nprobe,
    )  # fmt: skip
    meta = build_gallery_index(args.embeddings, args.out, settings)
    if meta["count"] < ANN_THRESHOLD:
        sys.stderr.write(
            f"note: {meta['count']} rows is below the {ANN_THRESHOLD:,}-row threshold: "
            "Classifier.similar and /v1/similar search this gallery exactly\n"
        )
    summary = {"out": str(args.out), **meta}
    sys.stdout.write(json.dumps(summary, indent=None if args.json else 2) + "\n")
    return 0


def register_index(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from flowerclf.inference.similarity import ANN_THRESHOLD, KINDS, AnnSettings

    defaults = AnnSettings()
    index = commands.add_parser(
        "index", help="similarity index over scored embeddings (FAISS)",
        description="Build an approximate nearest-neighbour index (FAISS) for similarity "
        f"search over any image collection. Galleries of {ANN_THRESHOLD:,} rows or more are "
        "searched through it; smaller ones exactly.",
    )  # fmt: skip
    actions = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="index the embeddings of `flowerclf score --embeddings` output",
        description="Read the parquet output of `flowerclf score --embeddings` (error rows "
        "are skipped) and write DIR: embeddings.npz (the rows), ann.faiss (the index) and "
        "index.json. Use it with `flowerclf serve --similar-index DIR` or "
        "Classifier.load(..., similar_index=DIR).",
    )  # fmt: skip
    build.add_argument("--embeddings", required=True, help="parquet file or dataset directory")
    build.add_argument("--out", required=True, help="index directory to write")
    build.add_argument("--kind", choices=KINDS, default=defaults.kind,
                       help="hnsw: graph, no training (default); ivf: inverted lists")  # fmt: skip
    build.add_argument("--hnsw-m", type=int, default=defaults.hnsw_m)
    build.add_argument("--ef-construction", type=int, default=defaults.ef_construction)
    build.add_argument("--ef-search", type=int, default=defaults.ef_search)
    build.add_argument("--nlist", type=int, default=None, help="ivf lists (4*sqrt(rows))")
    build.add_argument("--nprobe", type=int, default=defaults.nprobe)
    build.add_argument("--json", action="store_true", help="one-line JSON summary")
    build.set_defaults(handler=_index_build, extra="index")


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_overrides: Callable[[argparse.ArgumentParser], None],
) -> None:
    register_score(commands)
    register_index(commands)
