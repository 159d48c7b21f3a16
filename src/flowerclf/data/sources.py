"""Resolve where a dataset comes from and materialise its raw copy under the data root.

Source resolution, in order:

1. ``data.source`` — a local directory, a local archive, or an http(s) URL of an archive.
2. ``$FLOWERCLF_SOURCES/<raw_name>`` — a directory of local dataset copies (how tests, CI
   and offline machines point at ``../shared/data``).
3. The dataset's official URLs, downloaded with checksum verification.

The raw copy is written once and then reused while its recorded source is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from flowerclf.core.fs import staged_directory, write_atomic
from flowerclf.data.download import RemoteFile, download
from flowerclf.data.recipes import DatasetLayoutError, Recipe

log = logging.getLogger(__name__)

SOURCES_ENV = "FLOWERCLF_SOURCES"
DATA_DIR_ENV = "FLOWERCLF_DATA_DIR"
RAW_MARKER = ".flowerclf-raw.json"


def default_data_root() -> Path:
    """``$FLOWERCLF_DATA_DIR``, else the per-user data directory ``~/.local/share/flowerclf``
    (``$XDG_DATA_HOME/flowerclf`` when that is set)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "flowerclf"


def _is_url(value: str) -> bool:
    return urlparse(value).scheme in ("http", "https")


def describe_source(recipe: Recipe, source: str | None) -> str:
    """The source that :func:`acquire_raw` would use, as a string (for logs and reports)."""
    if source:
        return source if _is_url(source) else str(Path(source).expanduser().resolve())
    env = os.environ.get(SOURCES_ENV)
    if env and (Path(env).expanduser() / recipe.raw_name).exists():
        return str((Path(env).expanduser() / recipe.raw_name).resolve())
    if not recipe.remote_files:
        raise DatasetLayoutError(
            f"dataset recipe {recipe.name!r} has no download URL: set data.source=<directory "
            f"or archive> (or {SOURCES_ENV}=<directory holding {recipe.raw_name}/>)"
        )
    return " + ".join(r.url for r in recipe.remote_files)


def _fetch_source(
    recipe: Recipe, source: str | None, download_dir: Path, source_sha256: str | None
) -> Path:
    if source and _is_url(source):
        name = Path(urlparse(source).path).name or "download"
        # A user-given URL has no published checksum unless data.source_sha256 gives one.
        remote = RemoteFile(url=source, filename=name, digest=source_sha256 or "")
        return download(remote, download_dir / "url")
    if source:
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data.source {path} does not exist")
        return path
    env = os.environ.get(SOURCES_ENV)
    if env:
        candidate = Path(env).expanduser() / recipe.raw_name
        if candidate.exists():
            return candidate
        log.warning("%s=%s has no %s/; falling back to download", SOURCES_ENV, env, recipe.raw_name)
    directory = download_dir / recipe.raw_name
    paths = [download(remote, directory) for remote in recipe.remote_files]
    # Multi-file datasets (Oxford-102) are read as a directory; single archives directly.
    return paths[0] if len(paths) == 1 else directory


def acquire_raw(
    recipe: Recipe,
    source: str | None,
    root: Path,
    *,
    refresh: bool = False,
    source_sha256: str | None = None,
) -> tuple[Path, str]:
    """Return ``<root>/raw/<raw_name>`` and the source it was made from, creating it if needed."""
    raw_dir = root / "raw" / recipe.raw_name
    described = describe_source(recipe, source)
    marker = raw_dir / RAW_MARKER
    if raw_dir.is_dir() and marker.is_file() and not refresh:
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("source")
        if recorded == described or not source:
            log.info("reusing raw copy %s (from %s)", raw_dir, recorded)
            return raw_dir, str(recorded)
        log.info("source changed (%s -> %s); rebuilding %s", recorded, described, raw_dir)
    fetched = _fetch_source(recipe, source, root / "downloads", source_sha256)
    log.info("materialising %s from %s", raw_dir, fetched)
    # Built beside the old copy and swapped in whole: an interrupted rebuild keeps the old
    # raw copy, and the marker is only ever next to a complete one.
    with staged_directory(raw_dir, create=False) as staging:
        recipe.materialize(fetched, staging)
        write_atomic(
            staging / RAW_MARKER,
            (json.dumps({"recipe": recipe.raw_name, "source": described}, indent=2) + "\n").encode(
                "utf-8"
            ),
        )
    return raw_dir, described
