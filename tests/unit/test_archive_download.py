"""Safe archive extraction and verified downloads (against a real local HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from flowerclf.data.archive import ArchiveLimits, UnsafeArchiveError, extract_archive
from flowerclf.data.download import DownloadError, RemoteFile, download


def _tar_with(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            if info.isfile():
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return path


def test_tar_extracts_into_destination(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "ok.tgz", [tarfile.TarInfo("top/a/1.jpg")])
    out = extract_archive(archive, tmp_path / "out")
    assert (out / "top" / "a" / "1.jpg").read_bytes() == b"x"


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("/etc/evil", tarfile.REGTYPE, "absolute path"),
        ("../evil", tarfile.REGTYPE, r"'\.\.'"),
        ("a/../../evil", tarfile.REGTYPE, r"'\.\.'"),
        ("link", tarfile.SYMTYPE, "link"),
        ("hard", tarfile.LNKTYPE, "link"),
        ("fifo", tarfile.FIFOTYPE, "special file"),
    ],
)
def test_unsafe_tar_members_are_refused(
    tmp_path: Path, name: str, kind: bytes, message: str
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "/etc/passwd"
    archive = _tar_with(tmp_path / "bad.tgz", [tarfile.TarInfo("fine.jpg"), info])
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_archive(archive, tmp_path / "out")
    # Nothing is left behind, not even the safe member.
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tgz"]


def test_unsafe_zip_members_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/1.jpg", b"x")
        zf.writestr("../../escape.jpg", b"x")
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.'"):
        extract_archive(archive, tmp_path / "out")

    linked = tmp_path / "link.zip"
    with zipfile.ZipFile(linked, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="link"):
        extract_archive(linked, tmp_path / "out2")


def test_zip_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cls/1.jpg", b"abc")
    assert (extract_archive(archive, tmp_path / "o") / "cls" / "1.jpg").read_bytes() == b"abc"


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.rar").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a supported archive"):
        extract_archive(tmp_path / "x.rar", tmp_path / "o")


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args, **kwargs: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_and_is_atomic(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    base, served = http_server
    payload = b"flower bytes" * 1000
    (served / "data.bin").write_bytes(payload)
    good = RemoteFile(f"{base}/data.bin", "data.bin", hashlib.sha256(payload).hexdigest())
    target = download(good, tmp_path / "dl")
    assert target.read_bytes() == payload
    # A second call reuses the verified file without fetching.
    (served / "data.bin").unlink()
    assert download(good, tmp_path / "dl") == target

    (served / "other.bin").write_bytes(payload)
    md5 = RemoteFile(f"{base}/other.bin", "other.bin", "0" * 32, "md5")
    with pytest.raises(DownloadError, match="does not match"):
        download(md5, tmp_path / "dl")
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["data.bin"]


def test_download_offline_message(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    base, _ = http_server
    missing = RemoteFile(f"{base}/nope.tgz", "nope.tgz", "0" * 64)
    with pytest.raises(DownloadError, match=r"data\.source=.*FLOWERCLF_SOURCES"):
        download(missing, tmp_path / "dl")
    unreachable = RemoteFile("http://127.0.0.1:9/x.tgz", "x.tgz", "0" * 64)
    with pytest.raises(DownloadError, match="could not download"):
        download(unreachable, tmp_path / "dl", timeout=2)
    assert not list((tmp_path / "dl").iterdir())


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, streamed (a 300 MiB member without 300 MiB of memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def _nothing_left_behind(tmp_path: Path, archive: Path) -> None:
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]


def test_archive_expanding_300mib_from_306kb_is_refused_before_writing(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    info = tarfile.TarInfo("flowers/roses/zeros.jpg")
    info.size = 300 * 1024**2
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        tar.addfile(info, io.BufferedReader(_Zeros(info.size)))
    assert archive.stat().st_size < 400_000
    with pytest.raises(UnsafeArchiveError, match="archive bomb"):
        extract_archive(archive, tmp_path / "out")
    _nothing_left_behind(tmp_path, archive)


def test_archive_expanding_past_the_total_limit_is_refused(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "big.tgz", [tarfile.TarInfo("a/1.jpg")], b"y" * 5000)
    with pytest.raises(UnsafeArchiveError, match="over the limit"):
        extract_archive(archive, tmp_path / "out", ArchiveLimits(max_total_bytes=4999))
    _nothing_left_behind(tmp_path, archive)


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_archive_with_20000_tiny_members_is_refused_before_writing(
    tmp_path: Path, suffix: str
) -> None:
    archive = tmp_path / f"many{suffix}"
    names = [f"flowers/c{i % 5}/{i}.jpg" for i in range(20_000)]
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in names:
                zf.writestr(name, b"")
    else:
        _tar_with(archive, [tarfile.TarInfo(name) for name in names], b"")
    with pytest.raises(UnsafeArchiveError, match="members"):
        extract_archive(archive, tmp_path / "out")
    _nothing_left_behind(tmp_path, archive)


def test_archive_member_count_limit(tmp_path: Path) -> None:
    members = [tarfile.TarInfo(f"a/{i}.jpg") for i in range(4)]
    archive = _tar_with(tmp_path / "four.tgz", members, b"z" * 2000)
    with pytest.raises(UnsafeArchiveError, match="more than 3 members"):
        extract_archive(archive, tmp_path / "out", ArchiveLimits(max_members=3))
    assert len(list(extract_archive(archive, tmp_path / "ok").rglob("*.jpg"))) == 4


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("usual_umask")
def test_extracted_data_is_readable_by_other_users(tmp_path: Path) -> None:
    # mkdtemp's 0700 used to survive the rename, and a 0600 member stayed 0600: a container
    # running as another user could not read a dataset or package mounted from the host.
    info = tarfile.TarInfo("top/a/1.jpg")
    info.mode = 0o600
    archive = _tar_with(tmp_path / "private.tgz", [info])
    out = extract_archive(archive, tmp_path / "out")
    assert out.stat().st_mode & 0o777 == 0o755
    assert (out / "top" / "a").stat().st_mode & 0o777 == 0o755
    assert (out / "top" / "a" / "1.jpg").stat().st_mode & 0o777 == 0o644
