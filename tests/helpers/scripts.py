"""Import a file from the repository's ``scripts/`` folder (not a package) as a module."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.helpers.paths import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"


def load_script(name: str, module_name: str | None = None) -> ModuleType:
    """``scripts/<name>.py`` executed as a fresh module named ``module_name`` (default:
    ``name``)."""
    spec = importlib.util.spec_from_file_location(module_name or name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
