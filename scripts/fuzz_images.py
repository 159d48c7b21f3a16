"""Fuzz flowerclf's image decoding with seeded mutated images and print the figures.

Run from the repository root (it uses the generator in ``tests/helpers/fuzz.py``)::

    python -m scripts.fuzz_images --count 20000 --seed 0
    python -m scripts.fuzz_images --count 20000 --model models/tf_flowers   # + CLI, REST

Part 1 sends every case through ``decode_rgb``: each must give an RGB image or an
``ImageDecodeError`` with a documented ``kind``; anything else is an uncaught exception.
Part 2 (with ``--model``) writes the cases into a folder and runs ``flowerclf predict
FOLDER`` once, in a subprocess: every file must get exactly one JSON line (a prediction,
or an error for the files ``decode_rgb`` refused), and no traceback may appear.

Part 3 (with ``--model``) starts a real ``flowerclf serve`` on loopback and posts every case
to ``POST /v1/predict``: each answer must be the one the service's own decoder gives in
process (a 200 prediction, or 413 / 415 / 422 with the documented error code in the error
schema), never a 5xx or a dropped connection; the server must stay up and log no traceback.

Prints counts per outcome and per mutation, the uncaught exceptions (seed and index
reproduce each one), and the seconds taken. Exits 1 when anything escaped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from tests.helpers.fuzz import FuzzCase, mutations
from tests.helpers.server import run_server

from flowerclf.core.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_rgb
from flowerclf.core.package_format import load_package
from flowerclf.serving.errors import ApiError
from flowerclf.serving.images import decode_upload

DOCUMENTED_KINDS = frozenset({"empty", "unrecognised", "unsupported", "too_large", "corrupt"})


def fuzz_decode(cases: Sequence[FuzzCase], max_pixels: int) -> dict[str, Any]:
    """Every case through decode_rgb; outcome counts, uncaught exceptions, timings."""
    outcomes: Counter[str] = Counter()
    by_mutation: dict[str, Counter[str]] = defaultdict(Counter)
    uncaught: list[dict[str, Any]] = []
    durations: list[float] = []
    for case in cases:
        start = time.perf_counter()
        outcome = _decode_outcome(case, max_pixels, uncaught)
        durations.append(time.perf_counter() - start)
        outcomes[outcome] += 1
        by_mutation[case.mutation][outcome] += 1
    durations.sort()
    return {
        "cases": len(cases),
        "outcomes": dict(outcomes.most_common()),
        "by_mutation": {name: dict(counts) for name, counts in sorted(by_mutation.items())},
        "uncaught": uncaught,
        "seconds": round(sum(durations), 2),
        "slowest_case_s": round(durations[-1], 3) if durations else 0.0,
        "p99_case_ms": round(1000 * durations[int(0.99 * (len(durations) - 1))], 2)
        if durations
        else 0.0,
    }


def _decode_outcome(case: FuzzCase, max_pixels: int, uncaught: list[dict[str, Any]]) -> str:
    try:
        image = decode_rgb(case.data, max_pixels=max_pixels).image
    except ImageDecodeError as exc:
        if exc.kind not in DOCUMENTED_KINDS:
            uncaught.append(_describe(case, f"undocumented kind {exc.kind!r}: {exc}"))
            return "undocumented_kind"
        return f"refused:{exc.kind}"
    except Exception as exc:  # the property under test: nothing else may escape
        uncaught.append(_describe(case, f"{type(exc).__name__}: {exc}"))
        return "uncaught"
    if image.mode != "RGB":
        uncaught.append(_describe(case, f"decoded to mode {image.mode}, not RGB"))
        return "wrong_mode"
    return "decoded"


def _describe(case: FuzzCase, error: str) -> dict[str, Any]:
    return {"index": case.index, "seed_image": case.seed_name, "mutation": case.mutation,
            "error": error}  # fmt: skip


def fuzz_cli_folder(
    cases: Sequence[FuzzCase], model: Path, max_pixels: int, workdir: Path
) -> dict[str, Any]:
    """Run ``flowerclf predict FOLDER`` on all cases; check one line per file, no traceback."""
    folder = workdir / "fuzz-images"
    folder.mkdir(parents=True, exist_ok=True)
    # The classifier decodes with the package's resize size as the shrink target.
    target = load_package(model).spec.resize_size
    expected: dict[str, bool] = {}
    for case in cases:
        path = folder / f"{case.index:06d}-{case.seed_name}-{case.mutation}{case.suffix}"
        path.write_bytes(case.data)
        expected[str(path)] = _decodes(case.data, max_pixels, target)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "flowerclf", "predict", str(folder), "--model", str(model)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    seen = Counter(line.get("path") for line in lines)
    predicted = {line["path"] for line in lines if "predicted_class" in line}
    refused = {line["path"] for line in lines if "error" in line}
    problems = []
    if "Traceback" in done.stderr:
        problems.append("traceback on stderr: " + done.stderr[-2000:])
    if sorted(seen) != sorted(expected) or any(count != 1 for count in seen.values()):
        problems.append(f"{len(lines)} lines for {len(expected)} files")
    wrong = [p for p, ok in expected.items() if (p in predicted) != ok]
    if wrong:
        problems.append(f"{len(wrong)} files answered unlike decode_rgb, e.g. {wrong[:3]}")
    expected_status = 1 if refused else 0
    if done.returncode != expected_status:
        problems.append(f"exit status {done.returncode}, expected {expected_status}")
    return {
        "files": len(expected),
        "predicted": len(predicted),
        "refused": len(refused),
        "exit_status": done.returncode,
        "problems": problems,
        "seconds": round(seconds, 2),
    }


# The error codes an image upload may be refused with, per status (docs/guide/serving.md).
IMAGE_ERRORS = {413: "image_too_large", 415: "unsupported_image_format", 422: "invalid_image"}
REST_CLIENTS = 4  # concurrent connections: the server's decode pool sees overlapping work


def fuzz_rest(cases: Sequence[FuzzCase], model: Path) -> dict[str, Any]:
    """Post every case to a real server's ``/v1/predict``; check each answer against the
    service's decoder run in process, and that the server survives without a traceback.
    The server keeps its default pixel limit (``--max-pixels`` is for parts 1 and 2)."""
    max_pixels = DEFAULT_MAX_PIXELS
    target = load_package(model).spec.resize_size
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    start = time.perf_counter()
    with (
        run_server(model) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):

        def answer(case: FuzzCase) -> tuple[FuzzCase, int, str | None]:
            try:
                response = client.post("/v1/predict", files={"file": ("upload", case.data)})
            except httpx.HTTPError as exc:
                return case, 0, f"{type(exc).__name__}: {exc}"
            return case, response.status_code, _rest_problem(case, response, max_pixels, target)

        with concurrent.futures.ThreadPoolExecutor(REST_CLIENTS) as pool:
            for case, status, problem in pool.map(answer, cases):
                statuses[status] += 1
                if problem:
                    problems.append(f"case {case.index} ({case.seed_name}, {case.mutation}): "
                                    f"{problem}")  # fmt: skip
        if not server.alive():
            problems.append(f"the server exited with status {server.process.returncode}")
        if "Traceback" in server.output():
            problems.append("traceback in the server log: " + server.output()[-2000:])
    return {
        "requests": len(cases),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "problems": problems,
        "seconds": round(time.perf_counter() - start, 2),
    }


def _rest_problem(
    case: FuzzCase, response: httpx.Response, max_pixels: int, target: int
) -> str | None:
    """Why the answer is wrong, or None: the status the in-process decoder implies, and
    for a refusal the documented code in the error schema."""
    try:
        decode_upload(case.data, max_pixels, target)
        expected = 200
    except ApiError as exc:
        expected = exc.status
    if response.status_code != expected:
        return f"status {response.status_code}, expected {expected}: {response.text[:200]}"
    body = response.json()
    if expected == 200:
        return None if "predicted_class" in body else f"200 without a prediction: {body}"
    error = body.get("error") or {}
    if set(error) != {"code", "message", "status", "details"}:
        return f"not the error schema: {body}"
    if error["code"] != IMAGE_ERRORS.get(expected) or not error["message"]:
        return f"undocumented error: {error}"
    return None


def _decodes(data: bytes, max_pixels: int, target_short_side: int) -> bool:
    try:
        decode_rgb(data, max_pixels=max_pixels, target_short_side=target_short_side)
    except ImageDecodeError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="mutated images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument(
        "--model", type=Path, help="model package: also fuzz the CLI on a folder and REST"
    )
    parser.add_argument("--cli-count", type=int, default=None,
                        help="cases for the CLI part (default: all)")  # fmt: skip
    parser.add_argument("--rest-count", type=int, default=None,
                        help="cases for the REST part (default: all)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    # Pillow warns about every damaged EXIF block it skips; thousands of them hide the result.
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")

    cases = list(mutations(args.count, seed=args.seed))
    report: dict[str, Any] = {"seed": args.seed, "max_pixels": args.max_pixels}
    report["decode_rgb"] = fuzz_decode(cases, args.max_pixels)
    if args.model:
        cli_cases = cases[: args.cli_count] if args.cli_count else cases
        with tempfile.TemporaryDirectory(prefix="flowerclf-fuzz-") as workdir:
            report["cli_folder"] = fuzz_cli_folder(
                cli_cases, args.model, args.max_pixels, Path(workdir)
            )
        rest_cases = cases[: args.rest_count] if args.rest_count else cases
        report["rest"] = fuzz_rest(rest_cases, args.model)
    failed = bool(report["decode_rgb"]["uncaught"]) or any(
        report.get(part, {}).get("problems") for part in ("cli_folder", "rest")
    )
    sys.stdout.write(json.dumps(report) + "\n" if args.json else _format(report))
    return 1 if failed else 0


def _format(report: dict[str, Any]) -> str:
    decode = report["decode_rgb"]
    lines = [
        f"decode_rgb: {decode['cases']:,} mutated images (seed {report['seed']}, "
        f"max_pixels {report['max_pixels']:,}) in {decode['seconds']} s "
        f"(p99 {decode['p99_case_ms']} ms, slowest {decode['slowest_case_s']} s)",
        "  outcomes: " + ", ".join(f"{k} {v:,}" for k, v in decode["outcomes"].items()),
    ]
    for name, counts in decode["by_mutation"].items():
        lines.append(f"  {name}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    lines.append(f"  uncaught exceptions: {len(decode['uncaught'])}")
    lines += [f"    {item}" for item in decode["uncaught"][:20]]
    cli = report.get("cli_folder")
    if cli:
        lines.append(
            f"flowerclf predict FOLDER: {cli['files']:,} files, {cli['predicted']:,} predicted, "
            f"{cli['refused']:,} refused, exit status {cli['exit_status']}, {cli['seconds']} s"
        )
        lines.append(f"  problems: {len(cli['problems'])}")
        lines += [f"    {problem}" for problem in cli["problems"]]
    rest = report.get("rest")
    if rest:
        lines.append(
            f"POST /v1/predict (a real server, {REST_CLIENTS} clients): {rest['requests']:,} "
            "requests, statuses "
            + ", ".join(f"{k}: {v:,}" for k, v in rest["statuses"].items())
            + f", {rest['seconds']} s"
        )
        lines.append(f"  problems: {len(rest['problems'])}")
        lines += [f"    {problem}" for problem in rest["problems"][:20]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")  # for the CLI subprocess
    raise SystemExit(main())
