"""Downloads with a progress bar, checksum verification and atomic writes."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from flowerclf.core.errors import DownloadError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file published at ``url`` with a known digest (``algorithm`` is sha256 or md5)."""

    url: str
    filename: str
    digest: str
    algorithm: str = "sha256"
    size: int | None = None


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, remote: RemoteFile) -> None:
    """Raise :class:`DownloadError` unless ``path`` matches ``remote``'s size and digest.

    An empty ``remote.digest`` (a user-given URL without a published checksum) checks only
    the size, when known.
    """
    if remote.size is not None and path.stat().st_size != remote.size:
        raise DownloadError(
            f"{path} has {path.stat().st_size:,} bytes, expected {remote.size:,} ({remote.url})"
        )
    if not remote.digest:
        return
    actual = file_digest(path, remote.algorithm)
    if actual != remote.digest:
        raise DownloadError(
            f"{path}: {remote.algorithm} {actual} does not match the published "
            f"{remote.digest} for {remote.url}; the file is corrupt or was changed upstream"
        )


def download(remote: RemoteFile, directory: Path, *, timeout: float = 60.0) -> Path:
    """Fetch ``remote`` into ``directory`` unless a verified copy is already there.

    The download goes to ``<name>.part`` and is renamed only after the checksum matches, so
    a crash or a bad network never leaves a file that looks complete.

    Raises:
        DownloadError: network failure (with advice for offline use) or checksum mismatch.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / remote.filename
    if target.exists():
        try:
            verify_file(target, remote)
            log.info("using verified %s", target)
            return target
        except DownloadError:
            log.warning("existing %s failed verification; downloading again", target)
    part = target.with_name(target.name + ".part")
    h = hashlib.new(remote.algorithm)
    try:
        request = urllib.request.Request(remote.url, headers={"User-Agent": "flowerclf"})
        with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as fh:
            total = int(response.headers.get("Content-Length") or 0) or remote.size
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=remote.filename
            ) as bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    fh.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"could not download {remote.url}: {reason}. If this machine is offline, download "
            f"it elsewhere and pass data.source=<file or directory>, or set FLOWERCLF_SOURCES "
            f"to a directory that holds the dataset."
        ) from exc
    if not remote.digest:
        log.warning(
            "%s has no published checksum; its %s is %s",
            remote.url,
            remote.algorithm,
            h.hexdigest(),
        )
    elif h.hexdigest() != remote.digest:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{remote.url}: {remote.algorithm} {h.hexdigest()} does not match the published "
            f"{remote.digest}; the download is corrupt or the file changed upstream"
        )
    part.replace(target)
    log.info("downloaded %s", target)
    return target
