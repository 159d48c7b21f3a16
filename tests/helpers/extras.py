"""pyproject.toml's dependency lists and the serving pins, for the tests that check installs."""

from __future__ import annotations

import functools
import re
import sys
from importlib.metadata import packages_distributions

from packaging.requirements import Requirement

from tests.helpers.paths import REPO_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (pip-audit in [dev] brings it)
    import tomli as tomllib

PROJECT = "flowerclf"
SERVE_CONSTRAINTS = REPO_ROOT / "docker" / "constraints-serve.txt"
# Distributions the runtime and the service must never pull in.
HEAVY = (
    "torch", "torchvision", "lightning", "mlflow", "hydra-core", "omegaconf", "timm",
    "pandas", "scipy", "matplotlib", "onnx", "torchmetrics", "streamlit", "dvc",
)  # fmt: skip

# `python -c CLI_IN_PROCESS ARGS...`: runs the CLI in process, then prints one JSON line with
# its exit status, its stdout, where flowerclf was imported from, and which heavy modules
# the run imported (none, for the runtime commands).
CLI_IN_PROCESS = """
import contextlib, io, json, sys
from flowerclf.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = main(sys.argv[1:])
import flowerclf
heavy = ("torch", "torchvision", "lightning", "hydra", "omegaconf", "mlflow", "timm",
         "fastapi", "pandas", "scipy", "matplotlib")
print(json.dumps({"status": status, "stdout": out.getvalue(), "flowerclf": flowerclf.__file__,
                  "heavy": sorted(m for m in heavy if m in sys.modules)}))
"""


def normalise(name: str) -> str:
    """PEP 503 name: ``Pillow`` and ``pillow``, ``python_multipart`` and ``python-multipart``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def optional_dependencies() -> dict[str, list[str]]:
    return dict(_project()["optional-dependencies"])


def declared(*extras: str) -> dict[str, Requirement]:
    """The base requirements plus those of ``extras``, ``flowerclf[...]`` self-references
    followed; by normalised name (a name in several lists keeps its first requirement)."""
    optional = optional_dependencies()
    found: dict[str, Requirement] = {}
    pending, seen = [None, *extras], set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        lines = _project()["dependencies"] if extra is None else optional[extra]
        for line in lines:
            requirement = Requirement(line)
            if normalise(requirement.name) == PROJECT:
                pending.extend(sorted(requirement.extras))
            else:
                found.setdefault(normalise(requirement.name), requirement)
    return found


def pinned_serve_versions() -> dict[str, str]:
    """``docker/constraints-serve.txt`` as ``{normalised name: version}``."""
    pins = {}
    for line in SERVE_CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalise(name)] = version.strip()
    return pins


@functools.cache
def _module_distributions() -> dict[str, list[str]]:
    return dict(packages_distributions())  # reads every installed RECORD: once per session


def distributions_of(module: str) -> set[str]:
    """Normalised names of the installed distributions that provide top-level ``module``."""
    return {normalise(d) for d in _module_distributions().get(module, [])}
