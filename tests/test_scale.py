"""A hospital-size dataset: a generated archive of 100,000 images (PNG and DICOM, class folders and a CSV).

Speed limits are the benchmark's job (bench/scale_bench.py); here: it opens completely from both
layouts, and every page renders it within 5 s, with charts that aggregate instead of plotting
100k markers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.archive import CSV_NAME, IMAGES_DIR, ArchiveSpec, generate_archive, planted_pairs
from core.dataset import open_dataset

ROOT = Path(__file__).resolve().parents[1]
SPEC = ArchiveSpec(images=100_000, size=32)  # 32 px: generated in ~35 s on 2 cores
PAGES = ["dataset", "lab", "train", "evaluate", "predict", "home"]
PAGE_LIMIT_S = 5.0
pytestmark = pytest.mark.timed  # make test runs this module alone, after the parallel run


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_archive(tmp_path_factory.mktemp("archive"), SPEC)


def test_archive_is_what_it_says(archive: Path) -> None:
    small = ArchiveSpec(images=400, duplicate_share=0.05)
    assert len(planted_pairs(small)) == 20
    folder = open_dataset(archive / IMAGES_DIR)
    assert len(folder.table) == SPEC.images and folder.skipped.empty
    assert folder.table["format"].value_counts().to_dict() == {"PNG": 75_000, "DICOM": 25_000}
    assert folder.table["label"].value_counts().to_dict() == {"NORMAL": 50_000, "PNEUMONIA": 50_000}
    listed = open_dataset(archive / CSV_NAME)
    assert sorted(listed.table["path"]) == sorted(folder.table["path"])


def test_every_page_renders_the_100k_archive_within_5_s(archive: Path) -> None:
    from core import charts
    from pages.common import DATASET_KEY

    open_dataset(archive / IMAGES_DIR)  # this test's cache folder is empty: the scan is not what is timed here
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state[DATASET_KEY] = str(archive / IMAGES_DIR)
    at.run()
    assert not at.exception
    for page in PAGES:
        start = time.perf_counter()
        at.switch_page(f"pages/{page}.py").run()
        took = time.perf_counter() - start
        assert not at.exception, (page, [e.value for e in at.exception])
        assert took <= PAGE_LIMIT_S, f"{page} took {took:.1f} s with 100k images"
        if page == "dataset":
            assert "100,000 images" in " ".join(c.value for c in at.caption)
            figures = [c.proto.spec for c in at.get("plotly_chart")]
            assert figures and all(len(f) < 200_000 for f in figures), [len(f) for f in figures]  # aggregates, not 100k points
    table = open_dataset(archive / IMAGES_DIR).table
    scatter = charts.size_scatter_figure(table)
    assert sum(len(trace.x) for trace in scatter.data) < 100 and "100,000 images" in scatter.layout.title.text
