"""``flowerclf data prepare`` end to end on tiny generated datasets."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from flowerclf.cli.main import main
from flowerclf.data.curation import Candidate, curate
from flowerclf.data.split import stratified_split
from tests.helpers.images import build_folder_dataset, encode, make_photo


def _messy_dataset(root: Path) -> Path:
    build_folder_dataset(root, per_class=12)
    good = encode(make_photo((50, 40), 999))
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "a" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "b" / "cmyk.jpg").write_bytes(encode(make_photo((40, 40), 5).convert("CMYK")))
    (root / "b" / "alpha.png").write_bytes(encode(make_photo((40, 40), 6).convert("RGBA"), "PNG"))
    # One exact duplicate inside class c, and one image filed under both a and b.
    shutil.copy(root / "c" / "img_000.jpg", root / "c" / "copy_of_000.jpg")
    (root / "a" / "both.jpg").write_bytes(good)
    (root / "b" / "both.jpg").write_bytes(good)
    return root


def _run(*args: str) -> int:
    return main(["-q", *args])


def _prepare_json(capsys: pytest.CaptureFixture[str], *overrides: str) -> dict:
    assert _run("data", "prepare", "--json", *overrides) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_messy_folder_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _messy_dataset(tmp_path / "src")
    root = tmp_path / "data"
    summary = _prepare_json(
        capsys, "data=folder", f"data.source={source}", f"data.root={root}", "data.name=messy"
    )
    excluded = {e["path"]: e["reason"] for e in summary["excluded"]}
    assert excluded["a/empty.jpg"].startswith("empty file")
    assert "truncated" in excluded["a/truncated.jpg"]
    assert "not a recognised image" in excluded["a/notes.txt"]
    assert excluded["b/.DS_Store"] == "hidden file"
    assert "label conflict" in excluded["a/both.jpg"] and "label conflict" in excluded["b/both.jpg"]
    assert excluded["c/img_000.jpg"].startswith("exact duplicate of c/copy_of_000.jpg")
    assert summary["num_classes"] == 3
    assert summary["classes"] == ["a", "b", "c"]
    # 36 generated + cmyk + alpha kept; nothing else.
    assert summary["num_images"] == 38
    assert sum(summary["splits"].values()) == 38
    assert len(summary["conflicts"]) == 1 and summary["conflicts"][0]["classes"] == ["a", "b"]

    prepared = root / "messy"
    with (prepared / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    paths = {r["path"] for r in rows}
    assert "b/cmyk.jpg" in paths and "b/alpha.png" in paths
    assert not paths & set(excluded)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert json.loads((prepared / "classes.json").read_text())["classes"] == ["a", "b", "c"]
    for name in ("report.json", "report.md", "class_counts.png", "dataset.json"):
        assert (prepared / name).is_file(), name
    assert Image.open(prepared / "class_counts.png").format == "PNG"
    assert "label conflict" in (prepared / "report.md").read_text()


def test_manifest_is_byte_identical_and_seed_dependent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = build_folder_dataset(tmp_path / "src", per_class=20)
    common = ("data=folder", f"data.source={source}", f"data.root={tmp_path / 'd'}")
    first = _prepare_json(capsys, *common, "seed=1")
    manifest = (tmp_path / "d" / "folder" / "manifest.csv").read_bytes()
    again = _prepare_json(capsys, *common, "seed=1")
    assert (tmp_path / "d" / "folder" / "manifest.csv").read_bytes() == manifest
    assert again["manifest_sha256"] == first["manifest_sha256"]
    other = _prepare_json(capsys, *common, "seed=2")
    assert other["manifest_sha256"] != first["manifest_sha256"]
    assert other["splits"] == first["splits"]  # same stratified sizes, different members


@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_archive_source(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    source = build_folder_dataset(tmp_path / "flowers" / "wrapped", per_class=5)
    archive = tmp_path / f"flowers.{kind}"
    if kind == "tgz":
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(source, arcname="wrapped")
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(source.rglob("*.jpg")):
                zf.write(path, f"wrapped/{path.relative_to(source)}")
    summary = _prepare_json(
        capsys, "data=folder", f"data.source={archive}", f"data.root={tmp_path / 'd'}"
    )
    assert summary["num_images"] == 15
    assert summary["classes"] == ["a", "b", "c"]


def test_report_command_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = build_folder_dataset(tmp_path / "src", per_class=6)
    overrides = ("data=folder", f"data.source={source}", f"data.root={tmp_path / 'd'}")
    prepared = _prepare_json(capsys, *overrides)
    (tmp_path / "d" / "folder" / "class_counts.png").unlink()
    assert _run("data", "report", "--json", *overrides) == 0
    report = json.loads(capsys.readouterr().out)
    for key in (
        "num_images", "num_classes", "classes", "splits", "excluded", "conflicts",
        "manifest_sha256",
    ):  # fmt: skip
        assert key in report, key
    assert report["manifest_sha256"] == prepared["manifest_sha256"]
    assert set(report["splits"]) == {"train", "val", "test"}
    assert (tmp_path / "d" / "folder" / "class_counts.png").is_file()


def test_report_before_prepare_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run("data", "report", "data=tf_flowers", f"data.root={tmp_path}")
    assert code == 1
    assert "flowerclf data prepare" in capsys.readouterr().err


def test_missing_source_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run("data", "prepare", "data=folder", f"data.source={tmp_path / 'nope'}")
    assert code == 1
    assert "does not exist" in capsys.readouterr().err


def test_folder_without_class_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.jpg").write_bytes(encode(make_photo()))
    code = _run("data", "prepare", "data=folder", f"data.source={tmp_path / 'flat'}")
    assert code == 1
    assert "class sub-folders" in capsys.readouterr().err


def test_curation_keeps_earliest_split_copy() -> None:
    result = curate(
        [
            Candidate("z_test.jpg", "x", "h1", "test"),
            Candidate("a_train.jpg", "x", "h1", "train"),
            Candidate("b.jpg", "x", "h2", "val"),
            Candidate("c.jpg", "y", "h2", "val"),
        ]
    )
    assert [c.path for c in result.kept] == ["a_train.jpg"]
    assert result.duplicates[0].dropped == ["z_test.jpg"]
    assert result.duplicates[0].crosses_splits
    assert result.conflicts[0].classes == ["x", "y"]


def test_stratified_split_is_order_independent_and_stratified() -> None:
    items = [(f"{c}/{i}.jpg", c) for c in ("a", "b") for i in range(50)]
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    forward = stratified_split(items, fractions, seed=3)
    backward = stratified_split(list(reversed(items)), fractions, seed=3)
    assert forward == backward
    for cls in ("a", "b"):
        splits = [forward[p] for p, c in items if c == cls]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (40, 5, 5)
    assert stratified_split(items, fractions, seed=4) != forward


def test_tiny_classes_still_get_every_split() -> None:
    items = [(f"a/{i}.jpg", "a") for i in range(3)] + [("b/0.jpg", "b")]
    split = stratified_split(items, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    assert sorted(split[f"a/{i}.jpg"] for i in range(3)) == ["test", "train", "val"]
    assert split["b/0.jpg"] == "train"


def _corrupt_exif_jpeg() -> bytes:
    """Tag 0x0109 (a SHORT) stored as ASCII: ``struct.error`` in Pillow's exif_transpose."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera"
    raw = exif.tobytes().replace(b"\x01\x0f\x00\x02", b"\x01\x09\x00\x02")
    return encode(make_photo((64, 48), 77), "JPEG", exif=raw)


def test_prepare_survives_a_jpeg_with_corrupt_exif(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: struct.error aborted `flowerclf data prepare` with a traceback.
    source = build_folder_dataset(tmp_path / "src", per_class=4)
    (source / "a" / "bad_exif.jpg").write_bytes(_corrupt_exif_jpeg())
    summary = _prepare_json(
        capsys, "data=folder", f"data.source={source}", f"data.root={tmp_path / 'data'}",
        "data.name=exif",
    )  # fmt: skip
    assert summary["num_images"] == 13  # the photo is usable: only its EXIF is damaged
    assert not summary["excluded"]


def _prepared_state(prepared: Path) -> tuple[str, str]:
    manifest_sha = hashlib.sha256((prepared / "manifest.csv").read_bytes()).hexdigest()
    recorded = json.loads((prepared / "dataset.json").read_text())["manifest_sha256"]
    return manifest_sha, recorded


def test_interrupted_prepare_leaves_the_previous_dataset_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: manifest.csv was replaced first and dataset.json later, so Ctrl-C in between
    # left a dataset.json whose manifest_sha256 no longer matched the manifest.
    from flowerclf.data import prepare

    source = build_folder_dataset(tmp_path / "src", per_class=6)
    root = tmp_path / "data"
    common = ("data=folder", f"data.source={source}", f"data.root={root}", "data.name=ds")
    _prepare_json(capsys, *common, "seed=1")
    before = _prepared_state(root / "ds")
    assert before[0] == before[1]
    manifest_before = (root / "ds" / "manifest.csv").read_bytes()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "write_report_files", interrupted)
    assert _run("data", "prepare", *common, "seed=2") != 0  # the CLI reports "interrupted"
    assert (root / "ds" / "manifest.csv").read_bytes() == manifest_before
    assert _prepared_state(root / "ds") == before
    assert not [p.name for p in root.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_prepared_dataset_is_readable_by_other_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    previous = os.umask(0o022)
    try:
        source = build_folder_dataset(tmp_path / "src", per_class=3)
        root = tmp_path / "data"
        _prepare_json(capsys, "data=folder", f"data.source={source}", f"data.root={root}",
                      "data.name=perm")  # fmt: skip
    finally:
        os.umask(previous)
    for path in [root / "perm", root / "raw" / "folder"]:
        assert path.stat().st_mode & 0o777 == 0o755, path
    for path in (root / "perm").iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path
