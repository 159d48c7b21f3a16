"""Which install extra each command needs, and a one-line error when it is not installed.

``pip install flowerclf`` is the runtime (predict, benchmark); the other commands need an
extra (``flowerclf[train]``, ``[export]``, ``[serve]``, ``[ui]``). Each subparser declares
its extra with ``set_defaults(extra=...)``. Before a command runs, the extra's requirements
(read from flowerclf's own install metadata, so pyproject.toml stays the one list) are
checked; a module that still turns out missing while the command runs gets the same
message. Either way the user sees one line that says what to install, not a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata

from flowerclf.core.errors import MissingExtraError

DISTRIBUTION = "flowerclf"
# How the message names each extra ("needs the training extra").
EXTRA_NAMES = {
    "train": "training", "export": "export", "serve": "serving", "ui": "UI", "score": "scoring",
    "spark": "Spark", "index": "similarity index",
}  # fmt: skip
MAX_NAMED = 4  # missing distributions named in the message; the rest are counted

# `name[extra,...] (specifier); marker`, as Requires-Dist writes it.
_REQUIREMENT = re.compile(r"\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?")
_ONLY_EXTRA_MARKER = re.compile(r"""^\s*extra\s*==\s*["'](?P<extra>[^"']+)["']\s*$""")


def missing_extra_error(command: str, extra: str, missing: Sequence[str]) -> MissingExtraError:
    what = EXTRA_NAMES.get(extra, extra)
    named = ", ".join(missing[:MAX_NAMED])
    if len(missing) > MAX_NAMED:
        named += f" and {len(missing) - MAX_NAMED} more"
    return MissingExtraError(
        f"flowerclf {command} needs the {what} extra: pip install 'flowerclf[{extra}]' "
        f"(not installed: {named})"
    )


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse(requirement: str) -> tuple[str, list[str], str | None] | None:
    """``(name, extras it asks for, the extra it belongs to)``; None for a requirement with
    any other marker (Python version, platform), which this check leaves to pip."""
    text, _, marker = requirement.partition(";")
    match = _REQUIREMENT.match(text)
    if match is None:
        return None
    extras = [e.strip() for e in (match["extras"] or "").split(",") if e.strip()]
    if not marker.strip():
        return _normalise(match["name"]), extras, None
    only_extra = _ONLY_EXTRA_MARKER.match(marker)
    if only_extra is None:
        return None
    return _normalise(match["name"]), extras, only_extra["extra"]


def _is_installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def missing_requirements(
    extra: str,
    requirements: Iterable[str],
    is_installed: Callable[[str], bool] = _is_installed,
) -> list[str]:
    """Distributions that ``flowerclf[extra]`` requires (following ``flowerclf[other]``
    self-references) and that are not installed, sorted."""
    parsed = [p for p in (_parse(r) for r in requirements) if p is not None]
    missing: set[str] = set()
    pending, seen = [extra], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for name, extras, belongs_to in parsed:
            if belongs_to != current:
                continue
            if name == DISTRIBUTION:
                pending.extend(extras)
            elif not is_installed(name):
                missing.add(name)
    return sorted(missing)


def _declared_requirements() -> list[str]:
    try:
        return metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        return []


def check_extra(command: str, extra: str) -> None:
    """Raise :class:`MissingExtraError` when ``flowerclf[extra]`` is not fully installed."""
    missing = missing_requirements(extra, _declared_requirements())
    if missing:
        raise missing_extra_error(command, extra, missing)


def is_third_party(module: str | None) -> bool:
    """Whether a missing module is someone else's (an install problem), not flowerclf's own
    (a bug, which keeps its traceback)."""
    if not module:
        return False
    return module.split(".")[0] != DISTRIBUTION
