"""Safe archive extraction and verified downloads (against a real local HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from flowerclf.data.archive import UnsafeArchiveError, extract_archive
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
