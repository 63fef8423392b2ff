"""What every page shares: the active dataset, cached loads, the sidebar, error display."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.dataset import DEMO, Dataset, open_dataset
from core.device_info import device_summary
from core.errors import MedImageError

DATASET_KEY = "dataset_source"


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
