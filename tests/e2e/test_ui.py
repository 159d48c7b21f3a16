"""The Streamlit UI: AppTest against a local package and a live service."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from flowerclf.ui.clients import UI_ENV_API, UI_ENV_MODEL, examples
from tests.helpers.colour_package import split
from tests.helpers.paths import REPO_ROOT
from tests.helpers.server import LiveServer

PAGE = REPO_ROOT / "src" / "flowerclf" / "ui" / "app.py"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _app(monkeypatch: pytest.MonkeyPatch, api: str | None = None, model: Path | None = None):
    monkeypatch.delenv(UI_ENV_API, raising=False)
    monkeypatch.delenv(UI_ENV_MODEL, raising=False)
    if api:
        monkeypatch.setenv(UI_ENV_API, api)
    if model:
        monkeypatch.setenv(UI_ENV_MODEL, str(model))
    app = AppTest.from_file(str(PAGE), default_timeout=60)
    app.run()
    return app


def _markdown(app: AppTest) -> str:
    return "\n".join(m.value for m in app.markdown)


def test_bundled_examples_ship_with_the_package() -> None:
    assert set(examples()) == {f"{c}.jpg" for c in
                               ("daisy", "dandelion", "roses", "sunflowers", "tulips")}  # fmt: skip


@pytest.mark.parametrize("source", ["model", "api"])
def test_upload_predicts_with_chart_gallery_and_errors(
    source: str, colour_package: Path, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if source == "api":
        app = _app(monkeypatch, api=live_server.url)
    else:
        app = _app(monkeypatch, model=colour_package)
    assert not app.exception
    assert "colour-layout" in "\n".join(m.value for m in app.sidebar.markdown)
    app.file_uploader(key="uploads").set_value([
        ("upright.png", png(split("blue", "red")), "image/png"),
        ("notes.txt", b"not an image", "text/plain"),
        ("broken.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg"),
    ]).run()  # fmt: skip
    assert not app.exception
    text = _markdown(app)
    assert "### blue" in text
    assert "Most similar training images" in text
    assert len(app.get("vega_lite_chart")) == 1  # the probability bar chart
    assert len(app.get("image")) == 1 + 6  # the upload's preview + the similar-images gallery
    errors = [e.value for e in app.error]
    assert any("notes.txt" in e and "not a recognised image" in e for e in errors), errors
    assert any("broken.jpg" in e and "corrupt" in e for e in errors), errors


def test_examples_and_unreachable_api(
    colour_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(monkeypatch, model=colour_package)
    app.multiselect(key="examples").set_value(["roses.jpg", "tulips.jpg"]).run()
    assert not app.exception
    assert [s.value for s in app.subheader] == ["roses.jpg", "tulips.jpg"]

    down = _app(monkeypatch, api="http://127.0.0.1:9")
    assert not down.exception
    assert "Cannot reach the model" in down.error[0].value


# --- issue 12 (15): what the page shows and fetches ------------------------------------------


def test_sidebar_names_no_local_path(colour_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(monkeypatch, model=colour_package)
    shown = "\n".join(e.value for e in [*app.sidebar.markdown, *app.sidebar.caption])
    assert "colour-layout" in shown and "local model package" in shown
    assert str(colour_package.parent) not in shown


def test_a_model_that_fails_to_load_shows_no_exception_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(monkeypatch, model=tmp_path / "not-a-package")
    assert not app.exception
    assert "Cannot reach the model" in app.error[0].value
    assert str(tmp_path) not in app.error[0].value
