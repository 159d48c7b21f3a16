"""The MLflow pyfunc model: no file reads by default, a confined root when allowed, and
per-row errors that never fail the batch or tell whether a file exists."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from flowerclf.inference.pyfunc import PATH_REFUSED, PATHS_DISABLED, FlowerclfPyfunc
from tests.helpers.colour_package import solid
from tests.helpers.corpus import encode

RED = encode(solid("red"), "PNG")


def _model(package: Path, **config: Any) -> FlowerclfPyfunc:
    model = FlowerclfPyfunc()
    model.load_context(SimpleNamespace(artifacts={"package": str(package)}, model_config=config))
    return model


def _predict(model: FlowerclfPyfunc, rows: list[dict[str, Any]]) -> pd.DataFrame:
    return model.predict(None, pd.DataFrame(rows))


def test_path_column_is_off_by_default_and_leaks_no_existence(
    colour_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWERCLF_PYFUNC_PATH_ROOT", raising=False)
    model = _model(colour_package)
    image = base64.b64encode(RED).decode()
    out = _predict(model, [
        {"image": image, "path": None},
        {"image": None, "path": "/etc/passwd"},
        {"image": None, "path": "/no/such/file.jpg"},
        {"image": None, "path": str(colour_package / "gallery" / "100.jpg")},
    ])  # fmt: skip
    assert out.loc[0, "predicted_class"] == "red" and out.loc[0, "error"] == ""
    assert list(out.loc[1:, "error"]) == [PATHS_DISABLED] * 3
    assert list(out.loc[1:, "predicted_class"]) == [""] * 3


def test_path_root_confines_reads_with_one_refusal_message(
    colour_package: Path, tmp_path: Path
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "red.png").write_bytes(RED)
    (root / "big.png").write_bytes(RED + b"\0" * 5000)
    (root / "zero").symlink_to("/dev/zero")
    (root / "escape.png").symlink_to(colour_package / "gallery" / "100.jpg")
    model = _model(colour_package, path_root=str(root), max_file_bytes=4096)
    paths = ["red.png", "zero", "escape.png", "../package/gallery/100.jpg", "/etc/passwd",
             "missing.png", str(root / "red.png"), "big.png"]  # fmt: skip
    out = _predict(model, [{"path": p} for p in paths])
    assert out.loc[0, "predicted_class"] == "red" and out.loc[0, "error"] == ""
    assert out.loc[6, "predicted_class"] == "red"  # absolute, but inside the root
    for row in (1, 2, 3, 4, 5):  # device, links out, traversal, outside, missing: one message
        assert out.loc[row, "error"] == PATH_REFUSED, (paths[row], out.loc[row, "error"])
    assert "larger than the limit of 4,096 bytes" in out.loc[7, "error"]


def test_path_root_from_the_environment(
    colour_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "red.png").write_bytes(RED)
    monkeypatch.setenv("FLOWERCLF_PYFUNC_PATH_ROOT", str(tmp_path))
    out = _predict(_model(colour_package), [{"path": "red.png"}])
    assert out.loc[0, "predicted_class"] == "red"


def test_a_failing_row_never_fails_the_batch(
    colour_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(colour_package)
    real_predict = model.classifier.predict

    def flaky(source: Any, top_k: int | None = None) -> Any:
        if source == b"boom":
            raise RuntimeError(f"decoder bug at {Path.cwd()!s}")  # internal detail
        return real_predict(source, top_k)

    monkeypatch.setattr(model.classifier, "predict", flaky)
    rows = [{"image": base64.b64encode(d).decode()} for d in (RED, b"boom", b"not an image")]
    rows.append({"image": "%%% not base64"})
    out = _predict(model, rows)
    assert list(out["predicted_class"]) == ["red", "", "", ""]
    assert out.loc[1, "error"] == "internal error while predicting this row"
    assert str(Path.cwd()) not in out.loc[1, "error"]
    assert "not a recognised image" in out.loc[2, "error"]
    assert "base64" in out.loc[3, "error"]
