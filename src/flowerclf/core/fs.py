"""File-system helpers: crash-safe writes and directory replacement, a process lock.

Everything here follows one rule: a reader sees either the old complete state or the new
complete state, never a mixture, also after Ctrl-C or a power cut. Files are written under
a unique temporary name, flushed to disk (``fsync``) and renamed; directories are filled
under a unique temporary name and swapped in; the parent directory is synced so that the
rename itself survives a crash. Results get ordinary permissions (``0o666``/``0o777``
minus the umask, usually 0644/0755), not ``mkstemp``'s 0600 and ``mkdtemp``'s 0700: a
model package mounted into a container that runs as another user must stay readable.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no advisory locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_FALLBACK_UMASK = 0o022
_RENAME_EXCHANGE = 2  # linux/fs.h: atomically swap two paths
_AT_FDCWD = -100


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only set it, which
    would race with other threads creating files); 022 where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _FALLBACK_UMASK


def fsync_directory(directory: Path) -> None:
    """Make a rename or new entry in ``directory`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):  # some file systems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, whole.

    The temporary name is unique (two writers cannot clobber each other's half-written
    file), the data is fsynced before the rename and the directory after it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o666 & ~current_umask())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory below ``root`` to disk (before renaming it into place)."""
    for directory, _dirs, files in os.walk(root):
        for name in files:
            file_path = Path(directory) / name
            if file_path.is_symlink():
                continue
            with suppress(OSError), file_path.open("rb") as fh:
                os.fsync(fh.fileno())
        fsync_directory(Path(directory))


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2``); False where unsupported."""
    try:
        # The symbols already loaded into this process, libc's included: no library search
        # (ctypes.util.find_library would start a subprocess on every call).
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False  # old kernel or a file system without RENAME_EXCHANGE
    raise OSError(code, os.strerror(code), str(first))


def replace_directory(new: Path, destination: Path) -> None:
    """Put the complete directory ``new`` at ``destination``, replacing what was there.

    Where the kernel can, the two are swapped atomically and the old tree is deleted
    afterwards. Elsewhere the old tree is renamed aside first (never deleted before the new
    one is in place), so a crash leaves either the old or the new directory plus a
    ``.<name>.old-*`` leftover, not nothing.
    """
    if not destination.exists():
        new.rename(destination)
        return
    if _exchange(new, destination):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old tree
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
    old = aside / destination.name
    destination.rename(old)
    try:
        new.rename(destination)
    except BaseException:
        old.rename(destination)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def staged_directory(destination: Path, *, create: bool = True) -> Iterator[Path]:
    """Fill a fresh sibling directory that replaces ``destination`` only on success.

    On any failure (including Ctrl-C) the staging directory is removed and ``destination``
    is left as it was, so readers never see a half-written directory. On success the tree
    is fsynced, gets the usual directory permissions and is swapped in (see
    :func:`replace_directory`).

    Args:
        create: yield an existing empty directory; with ``False`` the yielded path does
            not exist yet (for code that insists on creating its target itself).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    staging = holder / destination.name
    try:
        if create:
            staging.mkdir()
        yield staging
        if not staging.is_dir():
            raise FileNotFoundError(f"nothing was written to {staging} for {destination}")
        staging.chmod(0o777 & ~current_umask())
        fsync_tree(staging)
        replace_directory(staging, destination)
        fsync_directory(destination.parent)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) while inside.

    A second process asking for the same lock waits; the kernel drops the lock when the
    holder exits, also on a crash, so a stale lock file never blocks anyone.
    """
    if fcntl is None:  # pragma: no cover - Windows: run one preparation at a time
        log.warning("file locking is unavailable here; do not run two preparations at once")
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s (another process holds it)", path)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
