"""What every page shares: the active dataset, cached loads, the sidebar, error display."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from core.dataset import DEMO, Dataset
from core.dataset_store import SAVED_PREFIX, open_source
from core.device_info import device_summary, quick_summary
from core.errors import MedImageError
from core.image_reader import read_image
from core.runs import FINAL_STATES, latest_run

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


RUNS_PER_KERAS_CLEAR = 100


def _keep_compiled_models() -> None:
    """Let Streamlit clear Keras' session after every 100th script run instead of after every run.

    Streamlit calls `keras.backend.clear_session()` after each run (`script_runner._clean_problem_modules`), for
    scripts that build a new model every run. That empties TensorFlow's kernel cache, so every cached model
    re-optimised its graph (Grappler) on its next call: a Predict rerun with a MobileNetV2 run took 1.2 s
    instead of 0.2 s (bench/rerun_bench.py). Our pages build models only in cached loaders, and each loader
    clears the session when it loads a model (`core.predict.release_compiled`). Keras layers built during a
    run (the Lab's augmentation preview) leave TensorFlow kernels behind that only a clear frees (about
    60 KB a layer), so a clear still comes every 100th run, which keeps that bounded at the cost of one
    recompile per 100 reruns. The hook's other half closes matplotlib figures, which no page draws. A
    Streamlit without the hook is left as it is.
    """
    from streamlit.runtime.scriptrunner import script_runner

    if not hasattr(script_runner, "_clean_problem_modules"):
        return
    runs = itertools.count(1)

    def clean() -> None:
        if next(runs) % RUNS_PER_KERAS_CLEAR == 0 and "keras" in sys.modules:
            from core.predict import release_compiled

            release_compiled()

    script_runner._clean_problem_modules = clean


_keep_compiled_models()


def active_dataset_name() -> str:
    """The source of the active dataset; the demo set until the user opens another."""
    return st.session_state.setdefault(DATASET_KEY, DEMO)


@st.cache_data(show_spinner=False, max_entries=8)
def _load(source: str) -> Dataset:
    bar = st.progress(0.0, text="Scanning images...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Scanning images... {done:,}/{total:,}")

    try:
        return open_source(source, progress=progress)
    finally:
        bar.empty()


@st.cache_data(show_spinner=False, max_entries=8)
def patients_split(source: str) -> dict[str, int] | None:
    """For a source whose file names carry patient ids: how many patients its split puts on two sides; None otherwise.
    Once per source: a pass over 100,000 names takes 0.2-0.5 s, too long for every rerun of the Dataset page."""
    from core.splits import has_patient_ids, patients_across

    table = _load(source).table
    return patients_across(table) if has_patient_ids(table) else None


def load_dataset(source: str) -> Dataset | None:
    """The dataset for a source, scanned once per session and source; None (with a message) on bad input."""
    try:
        return _load(source)
    except MedImageError as exc:
        st.error(str(exc))
        return None


def source_label(source: str) -> str:
    if source == DEMO:
        return "Demo set (synthetic chest X-rays)"
    if source.startswith(SAVED_PREFIX):
        return f"Saved dataset '{source[len(SAVED_PREFIX):]}'"
    return source


@st.cache_data(show_spinner=False, max_entries=2000)
def thumbnail(path: str, side: int = 192) -> np.ndarray | None:
    """A small uint8 version of an image for grids; None when it cannot be read (caller says so)."""
    try:
        return read_image(path, max_side=side).pixels
    except MedImageError:
        return None


def paged_table(frame, key: str, rows: int = 200) -> None:
    """A long table one page at a time: 100k rows sent at once stall the browser."""
    if len(frame) <= rows:
        st.dataframe(frame, width="stretch", hide_index=True)
        return
    pages = -(-len(frame) // rows)
    page = st.number_input(f"Page (of {pages:,})", 1, pages, 1, key=key)
    start = (int(page) - 1) * rows
    st.dataframe(frame.iloc[start : start + rows], width="stretch", hide_index=True)
    st.caption(f"Rows {start + 1:,}-{min(start + rows, len(frame)):,} of {len(frame):,}")


@st.cache_data(show_spinner=False, max_entries=8)
def duplicate_pairs(source: str, max_distance: int):
    """Pairs and their summary for the active dataset; hashing shows progress the first time."""
    from core import duplicates  # imagehash pulls in scipy: only the Dataset page's duplicates tab needs it

    dataset = _load(source)
    bar = st.progress(0.0, text="Hashing images...")
    try:
        hashed = duplicates.image_hashes(
            dataset.table, progress=lambda done, total: bar.progress(done / max(total, 1), text=f"Hashing images... {done:,}/{total:,}")
        )
    finally:
        bar.empty()
    pairs = duplicates.find_duplicates(hashed, max_distance)
    return pairs, duplicates.summarize(pairs)


def runs_with_models(runs):
    """The runs (from list_runs) that have a model to predict with, a readable config and their classes."""
    from core.runs import can_predict

    return runs if runs.empty else runs[[can_predict(p) for p in runs["path"]]]


def run_labels(runs) -> Callable[[str], str]:
    """A run picker's format_func: the run's name, and for a run made from another how it came about ("... · adapted
    from RUN to hospital-b")."""
    derived = dict(zip(runs["run"], runs["derived"], strict=True))
    return lambda name: f"{name} · {derived[name]}" if derived.get(name) else name


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def _predictor(run_path: str, mtime: int):
    from core.predict import from_run, release_compiled

    release_compiled()
    return from_run(run_path)


def predictor_for(run_path: str):
    """The run's Predictor, loaded once per model file (a new best checkpoint reloads), with the threshold saved now."""
    from dataclasses import replace

    from core.evaluate import models_mtime
    from core.predict import saved_decisions

    return replace(_predictor(run_path, models_mtime(run_path)), **saved_decisions(run_path))


def novelty_for(run_path: str):
    """The run's reference of usual images (core.novelty), loaded once per stored file and model; None when unmeasured."""
    from core.novelty import model_file, path

    files = [path(run_path), model_file(run_path)]
    return _novelty(run_path, tuple(f.stat().st_mtime if f is not None and f.exists() else 0.0 for f in files))


@st.cache_resource(show_spinner=False, max_entries=8)
def _novelty(run_path: str, mtimes: tuple[float, ...]):
    from pathlib import Path

    from core.novelty import load

    return load(Path(run_path))


def validation_for(run_path: str | None):
    """The run's validation predictions for Predict's comparison with images scored alike (core.similar_scores), read once
    per stored table and model; None for an upload, a run whose validation images cannot stand for its calls, or one whose
    validation split was not predicted (by its present model)."""
    if not run_path:
        return None
    from core.evaluate import models_mtime, predictions_path

    table = predictions_path(run_path, "val")
    return _validation(run_path, table.stat().st_mtime_ns if table.exists() else 0, models_mtime(run_path))


@st.cache_data(show_spinner=False, max_entries=8)
def _validation(run_path: str, table_mtime: int, model_mtime: int):
    from pathlib import Path

    from core.similar_scores import validation_table

    return validation_table(Path(run_path))


@st.cache_resource(show_spinner=False, max_entries=8)
def _explainer(key: str, _model, layer: str | None, method: str):
    from core.gradcam import METHODS

    return METHODS[method](_model, layer)


def model_key(predictor) -> str:
    """A cache key for the loaded model: a new checkpoint loads a new model object, and so gets a new key."""
    return f"{predictor.name}-{id(predictor.model)}"


def explainer_for(predictor, layer: str | None = None, method: str = "Grad-CAM"):
    """A Grad-CAM explainer per model, layer and method, built once (it compiles a tf.function)."""
    return _explainer(model_key(predictor), predictor.model, layer, method)


@st.cache_resource(show_spinner="Loading TensorFlow...")
def device() -> dict[str, Any]:
    """TensorFlow's own view of the devices (imports TensorFlow: for pages that need it anyway)."""
    return device_summary()


@st.cache_resource(show_spinner=False)
def quick_device() -> dict[str, Any]:
    """Versions and devices without importing TensorFlow, for the sidebar and Home (first paint)."""
    return quick_summary()


def _latest_run() -> None:
    latest = latest_run()
    st.markdown(f"{latest[0]} ({latest[1]})" if latest else "none yet: train one on the Train page")


def sidebar(dataset_source: str) -> None:
    with st.sidebar:
        st.caption("Active dataset")
        st.markdown(f"**{source_label(dataset_source)}**")
        st.caption("Latest run")
        latest = latest_run()
        active = latest is not None and latest[1] not in FINAL_STATES
        # while a run is queued or training, the line follows it (it said 'queued' beside a completed run before)
        st.fragment(run_every=3 if active else None)(_latest_run)()
        info = quick_device()
        st.caption("Device")
        st.markdown(f"{info['device']} · TensorFlow {info['tensorflow']} · Keras {info['keras']}")
