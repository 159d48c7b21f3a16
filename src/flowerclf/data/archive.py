"""Archive extraction that refuses to write outside its destination.

Tar and zip members are checked before anything is written: absolute paths, ``..``
components, symbolic and hard links, device files and FIFOs all abort the extraction. The
archive is unpacked into a temporary sibling directory and renamed into place only when
complete, so an interrupted extraction never leaves a half-filled dataset behind.
"""

from __future__ import annotations

import logging
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from flowerclf.core.errors import DatasetLayoutError, UnsafeArchiveError
from flowerclf.core.fs import staged_directory

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")


def is_archive(path: Path) -> bool:
    """Whether ``path`` has a recognised archive suffix."""
    name = path.name.lower()
    return any(name.endswith(suffix) for suffix in ARCHIVE_SUFFIXES)


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    # Zip files written on Windows may use backslashes; treat them as separators too.
    normalised = name.replace("\\", "/")
    member = PurePosixPath(normalised)
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise UnsafeArchiveError(f"{archive.name}: absolute path in archive member {name!r}")
    if ".." in member.parts:
        raise UnsafeArchiveError(f"{archive.name}: '..' in archive member {name!r}")
    return member


def _safe_tar_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for member in members:
        _check_member_name(member.name, archive)
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(
                f"{archive.name}: link in archive member {member.name!r} -> {member.linkname!r}"
            )
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"{archive.name}: special file (device/FIFO) in archive member {member.name!r}"
            )
    return members


def _safe_zip_members(zf: zipfile.ZipFile, archive: Path) -> list[zipfile.ZipInfo]:
    members = zf.infolist()
    for info in members:
        _check_member_name(info.filename, archive)
        # Unix symlinks stored in zip files carry S_IFLNK in the high external attributes.
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise UnsafeArchiveError(f"{archive.name}: link in archive member {info.filename!r}")
    return members


def extract_archive(archive: Path, destination: Path) -> Path:
    """Safely extract ``archive`` so that its contents end up in ``destination``.

    Returns:
        ``destination``, which did not exist before and now holds the archive's contents.

    Raises:
        UnsafeArchiveError: a member is absolute, contains ``..``, is a link or special file.
        ValueError: the file is not a supported archive.
    """
    if not is_archive(archive):
        raise DatasetLayoutError(
            f"{archive} is not a supported archive; expected one of {', '.join(ARCHIVE_SUFFIXES)}"
        )
    with staged_directory(destination) as staging:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = _safe_zip_members(zf, archive)
                for info in tqdm(members, desc=f"extract {archive.name}", unit="file"):
                    zf.extract(info, staging)
        else:
            with tarfile.open(archive) as tar:
                members = _safe_tar_members(tar, archive)
                for member in tqdm(members, desc=f"extract {archive.name}", unit="file"):
                    # Names were validated above; the "data" filter is a second line of
                    # defence on Pythons that have it.
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, staging, filter="data")
                    else:  # pragma: no cover - Python < 3.10.12
                        tar.extract(member, staging)
    log.info("extracted %s to %s", archive, destination)
    return destination
