"""What every page shares: the active dataset, cached loads, the sidebar, error display."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.dataset import DEMO, Dataset, open_dataset
from core.device_info import device_summary
from core.errors import MedImageError

DATASET_KEY = "dataset_source"


def _leave_legacy_pages_mode() -> None:
    """Make every run go through app.py, even a deep link that is a fresh server's first request.

    Streamlit treats an app with a `pages/` folder (fixed by our layout) as a legacy multipage app
    until some run has called `st.navigation`; in that state a first request for /lab runs
    pages/lab.py alone, without app.py's navigation and sidebar. Every script imports this module
    first, so clearing the flag here and rerunning hands that request to app.py.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the legacy mode: nothing to do
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_legacy_pages_mode()


def active_dataset_name() -> str:
    """The source of the active dataset; the demo set until the user opens another."""
    return st.session_state.setdefault(DATASET_KEY, DEMO)


@st.cache_data(show_spinner=False, max_entries=8)
def _load(source: str) -> Dataset:
    bar = st.progress(0.0, text="Scanning images...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Scanning images... {done:,}/{total:,}")

    try:
        return open_dataset(source, progress=progress)
    finally:
        bar.empty()


def load_dataset(source: str) -> Dataset | None:
    """The dataset for a source, scanned once per session and source; None (with a message) on bad input."""
    try:
        return _load(source)
    except MedImageError as exc:
        st.error(str(exc))
        return None


@st.cache_resource(show_spinner="Loading TensorFlow...")
def device() -> dict[str, Any]:
    return device_summary()


def sidebar(dataset_source: str) -> None:
    with st.sidebar:
        st.caption("Active dataset")
        st.markdown(f"**{'Demo set (synthetic chest X-rays)' if dataset_source == DEMO else dataset_source}**")
        st.caption("Active model")
        st.markdown("none yet: train one on the Train page")
        info = device()
        st.caption("Device")
        st.markdown(f"{info['device']} · TensorFlow {info['tensorflow']} · Keras {info['keras']}")
