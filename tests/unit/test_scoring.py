"""``flowerclf score`` on the local engine: inputs, rows, error rows, resumption, the CLI.

The colour package answers by colour, so each row's class is known in advance.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowerclf.cli.main import main
from flowerclf.core.errors import UsageError
from flowerclf.inference.classifier import Classifier
from flowerclf.scoring import ScoreOptions, run_score
from flowerclf.scoring.inputs import resolve_inputs
from flowerclf.scoring.output import JOB_FILE, SUCCESS_FILE, partition_name
from flowerclf.scoring.rows import CLASSES_KEY
from tests.helpers.colour_package import CLASSES, solid, split
from tests.helpers.extras import CLI_IN_PROCESS, declared
from tests.helpers.server import subprocess_env

CORRUPT = b"\xff\xd8\xff\xe0 not really a jpeg"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Eleven images in class folders (in sorted order: blue, corrupt, green, red), one of
    them a corrupt file."""
    root = tmp_path / "images"
    for colour, count in (("red", 4), ("green", 3), ("blue", 3)):
        (root / colour).mkdir(parents=True)
        for i in range(count):
            image = solid(colour, (40 + i, 30)) if i else split(colour, colour)
            image.save(root / colour / f"{colour}-{i}.png")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "bad.jpg").write_bytes(CORRUPT)
    return root


def _options(package: Path, images: Path | str, out: Path, **kwargs: object) -> ScoreOptions:
    defaults: dict[str, object] = {"engine": "local", "workers": 1, "partition_size": 3}
    return ScoreOptions(
        model=str(package), input=str(images), output=str(out), **(defaults | kwargs)
    )


def _read(out: Path) -> pa.Table:
    return pq.read_table(out)  # the whole dataset; _-files are ignored


def test_inputs_directory_glob_text_file_and_parquet(images: Path, tmp_path: Path) -> None:
    walked = resolve_inputs(str(images))
    assert walked == sorted(walked) and len(walked) == 11
    assert resolve_inputs(str(images / "red" / "*.png")) == sorted(
        str(p) for p in (images / "red").glob("*.png")
    )
    listing = tmp_path / "paths.txt"
    listing.write_text("# chosen\nimages/green/green-1.png\n\n" + walked[0] + "\n")
    assert resolve_inputs(str(listing)) == [str(images / "green" / "green-1.png"), walked[0]]
    table = pa.table({"path": [walked[3], walked[1]], "other": [1, 2]})
    pq.write_table(table, tmp_path / "paths.parquet")
    assert resolve_inputs(str(tmp_path / "paths.parquet")) == [walked[3], walked[1]]
    pq.write_table(pa.table({"file": ["x"]}), tmp_path / "nopath.parquet")
    with pytest.raises(UsageError, match="no 'path' column"):
        resolve_inputs(str(tmp_path / "nopath.parquet"))
    with pytest.raises(UsageError, match="no such file"):
        resolve_inputs(str(tmp_path / "missing"))


def test_rows_match_the_classifier_and_a_corrupt_file_is_an_error_row(
    colour_package: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    report = run_score(_options(colour_package, images, out, embeddings=True))
    assert report["images"] == 11 and report["errors"] == 1 and report["partitions"] == 4
    assert report["skipped_partitions"] == 0 and report["engine"] == "local"
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [partition_name(i) for i in
                                                                   range(4)]  # fmt: skip
    table = _read(out)
    assert json.loads(table.schema.metadata[CLASSES_KEY]) == CLASSES
    rows = table.to_pylist()
    assert [r["path"] for r in rows] == resolve_inputs(str(images))  # input order kept

    bad = [r for r in rows if r["error"] is not None]
    assert [Path(r["path"]).name for r in bad] == ["bad.jpg"]
    assert bad[0]["predicted_class"] is None and bad[0]["probabilities"] is None

    good = [r for r in rows if r["error"] is None]
    assert all(Path(r["path"]).parent.name == r["predicted_class"] for r in good)
    with Classifier.load(colour_package) as classifier:
        paths = [r["path"] for r in good]
        expected = classifier.predict_proba(paths)
        embeddings = classifier.embed(paths)
    np.testing.assert_allclose([r["probabilities"] for r in good], expected, atol=1e-6)
    np.testing.assert_allclose([r["embedding"] for r in good], embeddings, atol=1e-6)
    np.testing.assert_allclose([r["confidence"] for r in good], expected.max(axis=1), atol=1e-6)


def test_a_rerun_writes_only_missing_partitions(
    colour_package: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    first = run_score(_options(colour_package, images, out))
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    (out / partition_name(2)).unlink()
    (out / SUCCESS_FILE).unlink()
    (out / f".{partition_name(3)}.123.tmp").write_bytes(b"half a file")  # a killed writer

    second = run_score(_options(colour_package, images, out))
    assert second["skipped_partitions"] == 3 and second["scored"] == 3
    assert second["images"] == first["images"] and second["errors"] == first["errors"]
    for name, mtime in written.items():
        if name != partition_name(2):
            assert (out / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
    paths = _read(out).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 11
    assert json.loads((out / SUCCESS_FILE).read_text())["images"] == 11
    assert not list(out.glob(".part-*")), "the killed writer's file was left behind"


def test_another_job_in_the_same_output_is_refused_unless_overwritten(
    colour_package: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    run_score(_options(colour_package, images, out))
    with pytest.raises(UsageError, match="another scoring job.*partition_size"):
        run_score(_options(colour_package, images, out, partition_size=5))
    report = run_score(_options(colour_package, images / "red", out, overwrite=True))
    assert report["images"] == 4 and report["skipped_partitions"] == 0
    assert len(_read(out)) == 4  # the old job's extra partitions are gone
    assert json.loads((out / JOB_FILE).read_text())["images"] == 4

    foreign = tmp_path / "not-empty"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        run_score(_options(colour_package, images, foreign))


def test_cli_prints_one_json_object_last(
    colour_package: Path, images: Path, tmp_path: Path
) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["-q", "score", "--model", str(colour_package), "--input", str(images),
                     "--output", str(tmp_path / "s"), "--workers", "1", "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    assert {"images", "errors", "images_per_s", "output", "engine", "workers"} <= set(report)
    assert report["images"] == 11 and report["errors"] == 1 and report["images_per_s"] > 0
    columns = set(_read(tmp_path / "s").column_names)
    assert {"path", "predicted_class", "confidence", "probabilities", "error"} <= columns


def test_cli_bad_input_is_one_line(
    colour_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["score", "--model", str(colour_package), "--input", str(tmp_path / "none"),
                 "--output", str(tmp_path / "s"), "--json"])  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1].startswith("error: --input")
    assert json.loads(captured.out.strip().splitlines()[-1])["type"] == "UsageError"


def test_the_extras_declare_the_engines() -> None:
    assert "pyarrow" in declared("score")
    assert {"pyarrow", "pyspark", "pandas"} <= set(declared("spark"))
    assert {"faiss-cpu", "pyarrow"} <= set(declared("index"))
    assert {"pyarrow", "pyspark", "faiss-cpu"} <= set(declared("all"))


def test_score_imports_no_training_stack(
    colour_package: Path, images: Path, tmp_path: Path
) -> None:
    """Scoring is runtime code: torch and the rest stay out even where they are installed
    (pandas may appear: pyarrow imports it when it is there, and needs it not)."""
    command = ["-q", "score", "--model", str(colour_package), "--input", str(images),
               "--output", str(tmp_path / "s"), "--workers", "1", "--json"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", CLI_IN_PROCESS, *command],
        capture_output=True, text=True, env=subprocess_env(), check=True, timeout=120,
    )  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 0, result.stderr
    assert json.loads(report["stdout"].strip().splitlines()[-1])["images"] == 11
    assert set(report["heavy"]) <= {"pandas"}, report["heavy"]
