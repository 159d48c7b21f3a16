"""The CLI's error contract: a FlowerclfError (or an OS error about a path the user gave)
is one line and an exit code; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from flowerclf.cli import main as cli
from flowerclf.core.errors import (
    EXIT_FAILURE,
    EXIT_USAGE,
    ConfigError,
    FlowerclfError,
    PackageError,
)


def run_with_handler(monkeypatch: pytest.MonkeyPatch, exc: BaseException, *extra: str) -> int:
    """Run ``flowerclf config show`` with its handler replaced by one that raises ``exc``."""

    def raising(args: argparse.Namespace) -> int:
        raise exc

    monkeypatch.setattr(cli, "_config_show", raising)
    return cli.main(["config", "show", *extra])


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PackageError("no model package at /x"), EXIT_FAILURE),
        (ConfigError("seed must be an integer"), EXIT_USAGE),
        (FileNotFoundError(2, "No such file or directory", "/missing.jpg"), EXIT_FAILURE),
    ],
)
def test_user_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    code: int,
) -> None:
    assert run_with_handler(monkeypatch, error) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("error", [ValueError("bug"), KeyError("bug"), RuntimeError("bug")])
def test_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    with pytest.raises(type(error)):
        run_with_handler(monkeypatch, error)


def test_every_user_error_derives_from_one_base() -> None:
    from flowerclf.core import errors

    user_errors = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type)
        and issubclass(obj, Exception)
        and obj.__module__ == errors.__name__
    ]
    assert len(user_errors) > 10
    assert all(issubclass(e, FlowerclfError) for e in user_errors)


def test_missing_package_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    image = tmp_path / "x.jpg"
    image.write_bytes(b"")
    code = cli.main(["predict", str(image), "--model", str(tmp_path / "no-package")])
    err = capsys.readouterr().err
    assert code == EXIT_FAILURE
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "no-package" in err


def test_json_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    image = tmp_path / "x.jpg"
    image.write_bytes(b"")
    code = cli.main(["benchmark", "--model", str(tmp_path / "no-package"), "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == EXIT_FAILURE
    assert json.loads(out[-1])["type"] in ("PackageError", "FileNotFoundError")
