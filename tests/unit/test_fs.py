"""Crash-safe writes and directory replacement (issue 12, items 12 and 14)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowerclf.core import fs
from flowerclf.core.fs import exclusive_lock, replace_directory, staged_directory, write_atomic


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_staged_directory_is_readable_by_other_users(tmp_path: Path) -> None:
    # mkdtemp creates 0700 and the rename kept it: a package mounted into the non-root
    # container could not be read.
    with staged_directory(tmp_path / "package") as staging:
        (staging / "model.onnx").write_bytes(b"x")
    assert (tmp_path / "package").stat().st_mode & 0o777 == 0o755


def test_write_atomic_gives_an_ordinary_file_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "manifest.csv"
    write_atomic(target, b"a\n")
    write_atomic(target, b"b\n")
    assert target.read_bytes() == b"b\n"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


def test_concurrent_atomic_writers_never_mix_their_bytes(tmp_path: Path) -> None:
    # A fixed ".name.tmp" let two writers interleave into one temporary file.
    target = tmp_path / "cache.json"
    payloads = [bytes([65 + i]) * 200_000 for i in range(6)]
    threads = [threading.Thread(target=write_atomic, args=(target, p)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


def test_failed_staging_keeps_the_old_directory(tmp_path: Path) -> None:
    destination = tmp_path / "prepared"
    destination.mkdir()
    (destination / "manifest.csv").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_directory(destination) as staging:
        (staging / "manifest.csv").write_text("new")
        raise KeyboardInterrupt
    assert (destination / "manifest.csv").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_replace_directory_never_deletes_before_the_new_tree_is_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    exchanged = []
    real_exchange = fs._exchange

    def recording_exchange(first: Path, second: Path) -> bool:
        exchanged.append(real_exchange(first, second) if exchange else False)
        return exchanged[-1]

    monkeypatch.setattr(fs, "_exchange", recording_exchange)
    destination, new = tmp_path / "data", tmp_path / "new"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    removed_while_missing = []
    real_rmtree = fs.shutil.rmtree

    def watching_rmtree(path: Path, *args: object, **kwargs: object) -> None:
        removed_while_missing.append(not (destination / "new.txt").exists())
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(fs.shutil, "rmtree", watching_rmtree)
    replace_directory(new, destination)
    if exchange and exchanged != [True]:
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert sorted(p.name for p in destination.iterdir()) == ["new.txt"]
    assert not any(removed_while_missing)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_exclusive_lock_serialises_holders(tmp_path: Path) -> None:
    lock = tmp_path / ".prepare.lock"
    inside = []
    events = []

    def hold(name: str) -> None:
        with exclusive_lock(lock):
            inside.append(name)
            events.append(len(inside))
            threading.Event().wait(0.05)
            inside.remove(name)

    threads = [threading.Thread(target=hold, args=(str(i),)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert events == [1, 1, 1]
