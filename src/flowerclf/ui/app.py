"""The Streamlit page. Run through ``flowerclf ui``; reads its backend from the environment.

``FLOWERCLF_UI_API`` (a service URL) or ``FLOWERCLF_UI_MODEL`` (a model package directory).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from flowerclf.core.errors import UsageError
from flowerclf.core.open_set import UNKNOWN_MESSAGE
from flowerclf.ui.clients import (
    UI_ENV_API,
    UI_ENV_API_KEY,
    UI_ENV_MODEL,
    Analysis,
    ApiBackend,
    Backend,
    BackendUnavailableError,
    LocalBackend,
    examples,
    preview,
)

log = logging.getLogger(__name__)

SIMILAR_K = 6


@st.cache_resource(show_spinner="Loading the model...")
def _backend(api: str | None, model: str | None) -> Backend:
    if api:
        return ApiBackend(api, api_key=os.environ.get(UI_ENV_API_KEY))
    if model:
        return LocalBackend(Path(model))
    raise UsageError(f"set {UI_ENV_API} or {UI_ENV_MODEL} (flowerclf ui --api URL | --model DIR)")


def _sidebar(info: dict[str, Any], source: str) -> None:
    with st.sidebar:
        st.header("Model")
        st.markdown(f"**{info.get('name', '?')}** version {info.get('version', '?')}")
        st.caption(f"backend: {info.get('backend', '?')} · source: {source}")
        st.markdown("**Classes:** " + ", ".join(info.get("classes", [])))
        metrics = info.get("metrics") or {}
        if metrics:
            st.markdown("**Metrics**")
            st.dataframe(
                pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())}),
                hide_index=True,
            )
        preprocess = info.get("preprocess") or {}
        if preprocess:
            st.markdown("**Preprocessing**")
            st.json(preprocess, expanded=False)


def _show(analysis: Analysis, data: bytes) -> None:
    st.subheader(analysis.name)
    if analysis.error is not None or analysis.prediction is None:
        st.error(f"{analysis.name}: {analysis.error}")
        return
    prediction = analysis.prediction
    left, right = st.columns([1, 2])
    image = preview(data)
    if image is not None:
        left.image(image, width="stretch")
    if prediction.get("is_known", True):
        right.markdown(
            f"### {prediction['predicted_class']}  \nconfidence **{prediction['confidence']:.1%}**"
        )
    else:  # open world (issue 13): say so instead of naming a class with false confidence
        right.warning(
            f"**{UNKNOWN_MESSAGE.capitalize()}.** Closest class: "
            f"{prediction['predicted_class']} ({prediction['confidence']:.1%}); unknown "
            f"score {prediction.get('unknown_score', 0.0):.3f}"
        )
    probabilities = pd.DataFrame(
        {"probability": list(prediction["all_predictions"].values())},
        index=pd.Index(list(prediction["all_predictions"]), name="class"),
    )
    right.bar_chart(probabilities, horizontal=True)
    if analysis.neighbours:
        st.markdown("**Most similar training images**")
        columns = st.columns(len(analysis.neighbours))
        for column, neighbour in zip(columns, analysis.neighbours, strict=True):
            caption = f"{neighbour.class_name} · {neighbour.score:.2f}"
            if neighbour.thumbnail is not None:
                column.image(neighbour.thumbnail, caption=caption, width="stretch")
            else:
                column.caption(caption)


def main() -> None:
    st.set_page_config(page_title="flowerclf", page_icon="🌼", layout="wide")
    st.title("flowerclf: what flower is this?")
    api, model = os.environ.get(UI_ENV_API), os.environ.get(UI_ENV_MODEL)
    try:
        backend = _backend(api, model)
        info = backend.info()
    except BackendUnavailableError as exc:  # its message is written for the page
        st.error(f"Cannot reach the model: {exc}")
        return
    except Exception:  # details (paths, library messages) stay in the log
        log.exception("loading the model failed")
        st.error("Cannot reach the model: it failed to load (details are in the UI's log)")
        return
    # The page names the source, never a directory of the machine the UI runs on.
    _sidebar(info, "service" if api else "local model package")

    uploads = st.file_uploader(
        "Upload one or more photos", accept_multiple_files=True, key="uploads"
    )
    bundled = examples()
    chosen = st.multiselect("...or pick bundled examples", list(bundled), key="examples")
    items = [(u.name, u.getvalue()) for u in uploads or []]
    items += [(name, bundled[name]) for name in chosen]
    if not items:
        st.info("Upload a photo or pick an example to see the predicted class.")
        return
    for name, data in items:
        _show(backend.analyse(name, data, SIMILAR_K), data)


if __name__ == "__main__":  # Streamlit runs the page as __main__
    main()
