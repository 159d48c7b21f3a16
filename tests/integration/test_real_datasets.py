"""The built-in recipes on the real datasets (local copies in ../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowerclf.cli.main import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One root for the module: tf_flowers and tf_flowers4 share their raw copy and scan cache.
    return tmp_path_factory.mktemp("real-data")


def _prepare(capsys: pytest.CaptureFixture[str], *overrides: str) -> dict:
    assert main(["-q", "data", "prepare", "--json", *overrides]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_tf_flowers(shared_data: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = (
        "data=tf_flowers",
        f"data.source={shared_data / 'tf_flowers'}",
        f"data.root={data_root}",
    )
    report = _prepare(capsys, *common)
    assert report["num_files"] == 3670
    assert report["num_classes"] == 5
    assert report["classes"] == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert [c["paths"] for c in report["conflicts"]] == [
        ["roses/15922772266_1167a06620.jpg", "tulips/15922772266_1167a06620.jpg"]
    ]
    dropped = sorted(d for group in report["duplicates"] for d in group["dropped"])
    assert [p.split("/")[1].split("_")[0] for p in dropped] == ["15066430311", "15072973261"]
    assert report["num_images"] == 3670 - 2 - 2
    assert sum(report["splits"].values()) == report["num_images"]
    assert abs(report["splits"]["test"] / report["num_images"] - 0.1) < 0.01
    prepared = data_root / "tf_flowers"
    assert (prepared / "class_counts.png").stat().st_size > 1000
    manifest = (prepared / "manifest.csv").read_bytes()

    again = _prepare(capsys, *common)
    assert (prepared / "manifest.csv").read_bytes() == manifest
    assert again["manifest_sha256"] == report["manifest_sha256"]
    other = _prepare(capsys, *common, "seed=7")
    assert other["manifest_sha256"] != report["manifest_sha256"]

    assert main(["-q", "data", "report", "--json", *common]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["manifest_sha256"] == other["manifest_sha256"]


def test_tf_flowers4(
    shared_data: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _prepare(
        capsys, "data=tf_flowers4", f"data.source={shared_data / 'tf_flowers'}",
        f"data.root={data_root}",
    )  # fmt: skip
    assert report["num_files"] == 2871
    assert report["classes"] == ["daisy", "dandelion", "roses", "sunflowers"]
    # The roses/tulips conflict vanishes with tulips; the two sunflower duplicates remain.
    assert report["conflicts"] == []
    assert report["num_images"] == 2871 - 2


@pytest.mark.slow
def test_oxford102(shared_data: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _prepare(
        capsys, "data=oxford102", f"data.source={shared_data / 'oxford102'}",
        f"data.root={data_root}",
    )  # fmt: skip
    assert report["num_files"] == 8189
    assert report["num_classes"] == 102
    assert report["official_split"] == {"train": 1020, "val": 1020, "test": 6149}
    groups = {g["kept"]: g["dropped"] for g in report["duplicates"]}
    assert groups == {
        "jpg/image_07307.jpg": ["jpg/image_07309.jpg"],  # train keeps it, test copy dropped
        "jpg/image_07323.jpg": ["jpg/image_07328.jpg"],
        "jpg/image_07885.jpg": ["jpg/image_07886.jpg"],
        "jpg/image_08077.jpg": ["jpg/image_08067.jpg"],  # val keeps it, test copy dropped
    }
    assert report["splits"] == {"train": 1020, "val": 1020, "test": 6145}
    classes = json.loads((data_root / "oxford102" / "classes.json").read_text())["classes"]
    assert classes[0] == "pink primrose" and len(set(classes)) == 102

    swapped = _prepare(
        capsys, "data=oxford102_swapped", f"data.source={shared_data / 'oxford102'}",
        f"data.root={data_root}",
    )  # fmt: skip
    assert swapped["official_split"] == {"train": 6149, "val": 1020, "test": 1020}
    assert swapped["splits"]["test"] == 1020 - 1  # 07307 now sits in test, its copy in train
