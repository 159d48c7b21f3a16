"""Archive extraction that refuses to write outside its destination.

Tar and zip members are checked before anything is written: absolute paths, ``..``
components, symbolic and hard links, device files and FIFOs all abort the extraction. The
archive is unpacked into a temporary sibling directory and renamed into place only when
complete, so an interrupted extraction never leaves a half-filled dataset behind.

Archive bombs are refused before anything is written, from the sizes the archive declares:
too many members, too many bytes in total, or more bytes than a photo archive can plausibly
expand to (photos are already compressed, so a real dataset expands by a few percent; a
306 KB file that claims 300 MiB is not a dataset). The declared sizes are binding: a tar
member's size is the exact number of bytes that follow it, and ``zipfile`` stops reading
a member at its declared size.
"""

from __future__ import annotations

import logging
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from flowerclf.core.errors import DatasetLayoutError, UnsafeArchiveError
from flowerclf.core.fs import current_umask, staged_directory

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may expand to. The defaults fit every supported recipe with room
    (Oxford-102: 8,189 files, 0.35 GB; tf_flowers: 3,670 files, 0.23 GB)."""

    max_members: int = 25_000
    max_total_bytes: int = 8 * 1024**3
    # Expansion ratio (declared bytes / archive bytes) refused above this, once the total is
    # large enough to matter: JPEG datasets expand ~1.0-1.1x, zeros expand ~1000x.
    max_ratio: float = 20.0
    ratio_applies_above: int = 64 * 1024**2
    # Archive bytes per member refused below this, past a thousand members: a photo costs
    # kilobytes even compressed, while 20,000 empty members pack into ~300 KB.
    min_packed_bytes_per_member: int = 1024
    density_applies_above: int = 1000


DEFAULT_LIMITS = ArchiveLimits()


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


def _check_totals(archive: Path, members: int, total_bytes: int, limits: ArchiveLimits) -> None:
    """Refuse archive bombs by the totals they declare (see the module docstring)."""
    if members > limits.max_members:
        raise UnsafeArchiveError(
            f"{archive.name}: more than {limits.max_members:,} members; not extracting "
            "(a dataset this large needs a higher limit)"
        )
    if total_bytes > limits.max_total_bytes:
        raise UnsafeArchiveError(
            f"{archive.name}: expands to {total_bytes:,} bytes, over the limit of "
            f"{limits.max_total_bytes:,}"
        )
    packed = max(archive.stat().st_size, 1)
    if (
        members > limits.density_applies_above
        and packed / members < limits.min_packed_bytes_per_member
    ):
        raise UnsafeArchiveError(
            f"{archive.name}: {members:,} members in {packed:,} bytes; photo archives "
            f"need at least {limits.min_packed_bytes_per_member:,} bytes per file, so this "
            "looks like an archive bomb"
        )
    if total_bytes > limits.ratio_applies_above and total_bytes / packed > limits.max_ratio:
        raise UnsafeArchiveError(
            f"{archive.name}: {packed:,} bytes expand to {total_bytes:,} "
            f"({total_bytes / packed:,.0f}x); photo archives expand by less than "
            f"{limits.max_ratio:g}x, so this looks like an archive bomb"
        )


def _safe_tar_members(
    tar: tarfile.TarFile, archive: Path, limits: ArchiveLimits
) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    total = 0
    # Iterate rather than getmembers(): a bomb with millions of headers stops at the limit.
    for member in tar:
        members.append(member)
        total += member.size
        _check_totals(archive, len(members), total, limits)
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


def _safe_zip_members(
    zf: zipfile.ZipFile, archive: Path, limits: ArchiveLimits
) -> list[zipfile.ZipInfo]:
    members = zf.infolist()
    _check_totals(archive, len(members), sum(info.file_size for info in members), limits)
    for info in members:
        _check_member_name(info.filename, archive)
        # Unix symlinks stored in zip files carry S_IFLNK in the high external attributes.
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise UnsafeArchiveError(f"{archive.name}: link in archive member {info.filename!r}")
    return members


def _readable_by_all(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """Python's "data" filter, then ordinary permissions (0644/0755 under the usual umask):
    a dataset extracted from an archive with 0600 members must be readable by the non-root
    user a container runs as."""
    member = tarfile.data_filter(member, path)
    mode = (0o777 if member.isdir() else 0o666) & ~current_umask()
    return member.replace(mode=mode, deep=False)


def extract_archive(
    archive: Path, destination: Path, limits: ArchiveLimits = DEFAULT_LIMITS
) -> Path:
    """Safely extract ``archive`` so that its contents end up in ``destination``.

    Returns:
        ``destination``, which did not exist before and now holds the archive's contents.

    Raises:
        UnsafeArchiveError: a member is absolute, contains ``..``, is a link or special file;
            or the archive exceeds ``limits`` (members, total size, expansion ratio).
        ValueError: the file is not a supported archive.
    """
    if not is_archive(archive):
        raise DatasetLayoutError(
            f"{archive} is not a supported archive; expected one of {', '.join(ARCHIVE_SUFFIXES)}"
        )
    with staged_directory(destination) as staging:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = _safe_zip_members(zf, archive, limits)
                for info in tqdm(members, desc=f"extract {archive.name}", unit="file"):
                    zf.extract(info, staging)
        else:
            with tarfile.open(archive) as tar:
                members = _safe_tar_members(tar, archive, limits)
                for member in tqdm(members, desc=f"extract {archive.name}", unit="file"):
                    # Names were validated above; the "data" filter is a second line of
                    # defence on Pythons that have it.
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, staging, filter=_readable_by_all)
                    else:  # pragma: no cover - Python < 3.10.12
                        tar.extract(member, staging)
    log.info("extracted %s to %s", archive, destination)
    return destination
