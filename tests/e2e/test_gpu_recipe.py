"""scripts/gpu_recipe.py: the GPU recipe's two steps, as a CPU smoke run (``--tiny``).

The bundle (re-encoded data, float16 weights) must be a valid input for the real commands:
`flowerclf data prepare` cuts a split from the re-encoded copy, training starts from the
float16 weights through `model.weights=`, export and the benchmark run on the package, and
the row it writes has the shape of a results row.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from tests.helpers.images import make_photo
from tests.helpers.paths import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"


def _script() -> ModuleType:
    # Imported by name (not from its file path): the bundle step's process pool pickles the
    # module's functions by module name.
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("gpu_recipe")


def test_reencoding_shrinks_to_the_shorter_side_and_never_upscales(tmp_path: Path) -> None:
    gpu_recipe = _script()
    for name, size in (("big.png", (600, 400)), ("small.png", (90, 120))):
        make_photo(size).save(tmp_path / name)
    with Image.open(io.BytesIO(gpu_recipe.encode(tmp_path / "big.png", 200, 85))) as big:
        assert (big.format, big.size) == ("JPEG", (300, 200))
    with Image.open(io.BytesIO(gpu_recipe.encode(tmp_path / "small.png", 200, 85))) as small:
        assert small.size == (90, 120)


def test_per_class_keeps_that_many_images_per_folder_and_every_other_file(tmp_path: Path) -> None:
    gpu_recipe = _script()
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for index in range(4):
            (tmp_path / folder / f"{index}.jpg").write_bytes(b"x")
    (tmp_path / "LICENSE.txt").write_text("licence")
    kept = gpu_recipe.pick_files(tmp_path, per_class=2)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in kept) == [
        "LICENSE.txt", "a/0.jpg", "a/1.jpg", "b/0.jpg", "b/1.jpg"
    ]  # fmt: skip


@pytest.mark.slow
def test_tiny_bundle_then_run_writes_a_results_row(shared_data: Path, tmp_path: Path) -> None:
    gpu_recipe = _script()
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    gpu_recipe.main([
        "bundle", "--out", str(bundle), "--sources", str(shared_data), "--datasets", "tf_flowers",
        "--members", "tf_efficientnet_lite0", "--per-class", "6", "--size", "128",
        "--budget-mib", "12", "--no-wheels",
    ])  # fmt: skip
    described = json.loads((bundle / "bundle.json").read_text())
    assert described["total_mib"] <= 12
    assert described["datasets"]["tf_flowers"]["files"] >= 30
    with Image.open(next((bundle / "data" / "tf_flowers" / "daisy").iterdir())) as image:
        assert min(image.size) <= 128

    gpu_recipe.main(["run", "--bundle", str(bundle), "--out", str(out), "--work",
                     str(tmp_path / "work"), "--tiny"])  # fmt: skip
    row = json.loads((out / "tf_flowers-lite0-gpu.json").read_text())
    assert 0.0 <= row["metrics"]["test/accuracy"] <= 1.0
    assert row["command"].startswith("flowerclf train experiment=tf_flowers_gpu")
    assert row["hardware"]
    assert row["export"]["checks"]  # the export's parity checks ran on the package
    assert row["benchmark_cpu"]["onnx_fp32"]["throughput_ips"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["rows"]) == ["tf_flowers-lite0-gpu"]
