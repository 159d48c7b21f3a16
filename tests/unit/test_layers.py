"""The layer contracts in pyproject.toml ([tool.importlinter]) hold, and they bite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter with the repo's contracts on the package found under ``src``."""
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (the dev extra)")
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO_ROOT / "pyproject.toml"), "--no-cache"],
        cwd=src,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(
        REPO_ROOT / "src" / "flowerclf",
        src / "flowerclf",
        ignore=shutil.ignore_patterns("__pycache__", "*.jpg"),
    )
    return src


def test_the_package_keeps_its_layers(package_copy: Path) -> None:
    result = lint_imports(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "bad_import", "broken"),
    [
        # The runtime reaching into training: a layer violation and a torch import.
        ("core/errors.py", "import flowerclf.training.train", "Layers"),
        # A cycle between two packages: evaluation imports training, training imports back.
        ("training/run.py", "import flowerclf.evaluation.evaluate", "Layers"),
        ("inference/classifier.py", "import torch", "The runtime and the service"),
    ],
)
def test_a_new_violation_fails_lint(
    package_copy: Path, module: str, bad_import: str, broken: str
) -> None:
    path = package_copy / "flowerclf" / module
    path.write_text(path.read_text() + f"\n{bad_import}  # injected by the test\n")
    result = lint_imports(package_copy)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout
