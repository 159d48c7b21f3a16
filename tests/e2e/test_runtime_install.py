"""``pip install flowerclf`` with no extras classifies images, without torch (issue 11).

A fresh virtual environment gets a non-editable install of this source tree (pip takes
numpy, Pillow and ONNX Runtime from the package index or its cache), then its own
``flowerclf`` predicts on the colour package, whose answers are known. Slow: about a minute,
most of it pip building the wheel and installing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.helpers.colour_package import solid
from tests.helpers.extras import CLI_IN_PROCESS
from tests.helpers.paths import REPO_ROOT

pytestmark = pytest.mark.slow

PIP_TIMEOUT_S = 600
LIST_DISTRIBUTIONS = (
    "import json, importlib.metadata as m; "
    "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))"
)


def _source_copy(destination: Path) -> Path:
    """What the wheel is built from, copied so the build leaves the checkout untouched."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO_ROOT / name, destination / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO_ROOT / "src", destination / "src", ignore=ignore)
    return destination


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH (it would put this checkout's source ahead of the installed package)."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "FLOWERCLF_MODEL")
    return {k: v for k, v in os.environ.items() if k not in dropped}


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install <this source tree>``: the base install, no extras."""
    root = tmp_path_factory.mktemp("runtime-install")
    env_dir = root / "venv"
    # No pip of its own (ensurepip costs seconds): this pip installs into it (--python).
    venv.EnvBuilder(with_pip=False).create(env_dir)
    source = _source_copy(root / "source")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
         "--quiet", str(source)],
        check=True, env=_clean_env(), cwd=root, timeout=PIP_TIMEOUT_S,
    )  # fmt: skip
    return env_dir


def _run(env_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env_dir / "bin" / args[0]), *args[1:]],
        capture_output=True, text=True, env=_clean_env(), cwd=env_dir, timeout=300,
    )  # fmt: skip


def test_base_install_has_no_training_stack(runtime_env: Path) -> None:
    listed = _run(runtime_env, "python", "-c", LIST_DISTRIBUTIONS)
    installed = set(json.loads(listed.stdout))
    assert {"flowerclf", "numpy", "pillow", "onnxruntime"} <= installed
    assert not installed & {"torch", "lightning", "hydra-core", "mlflow", "fastapi", "pandas"}


def test_predict_prints_json_without_importing_torch(
    runtime_env: Path, colour_package: Path, tmp_path: Path
) -> None:
    image = tmp_path / "red.png"
    solid("red").save(image)

    result = _run(runtime_env, "flowerclf", "predict", str(image), "--model", str(colour_package))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predicted_class"] == "red"

    in_process = _run(
        runtime_env, "python", "-c", CLI_IN_PROCESS, "predict", str(image),
        "--model", str(colour_package),
    )  # fmt: skip
    assert in_process.returncode == 0, in_process.stderr
    report = json.loads(in_process.stdout.strip().splitlines()[-1])
    assert report["status"] == 0
    assert json.loads(report["stdout"])["predicted_class"] == "red"
    assert Path(report["flowerclf"]).is_relative_to(runtime_env), report["flowerclf"]
    assert report["heavy"] == []


def test_missing_package_is_one_error_line(runtime_env: Path, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    solid("red").save(image)
    result = _run(runtime_env, "flowerclf", "predict", str(image), "--model", "/missing/dir")
    assert result.returncode != 0
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_help_and_the_training_command_without_its_extra(runtime_env: Path) -> None:
    assert _run(runtime_env, "flowerclf", "--help").returncode == 0
    result = _run(runtime_env, "flowerclf", "train", "seed=1")
    assert result.returncode != 0
    assert result.stderr.startswith(
        "error: flowerclf train needs the training extra: pip install 'flowerclf[train]'"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_benchmark_measures_the_onnx_runtimes(
    runtime_env: Path, colour_package: Path, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate(["red", "green", "blue", "red"]):
        solid(colour).save(images / f"{i}.png")
    result = _run(
        runtime_env, "flowerclf", "benchmark", "--model", str(colour_package),
        "--images", str(images), "--num-images", "4", "--batch-size", "2",
        "--latency-runs", "5", "--threads", "1", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["onnx_fp32"]["throughput_ips"] > 0
    assert "torch" not in report
    assert "PyTorch is not installed" in result.stderr
