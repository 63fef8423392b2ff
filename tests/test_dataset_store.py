"""Preparing (trim + split), sampling, saving and reloading named datasets; Kaggle handles."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core import kaggle_source
from core.dataset import DEMO, class_counts, open_dataset, prepare, sample_rows, size_stats
from core.dataset_store import SAVED_PREFIX, list_definitions, load_definition, open_source, save_definition
from core.errors import DatasetError
from tests.conftest import make_class_folders


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    for split, n in (("train", 20), ("val", 4), ("test", 4)):
        make_class_folders(tmp_path / "ds" / split, {"a": n, "b": n // 2, "c": 2})
    return tmp_path / "ds"


def test_prepare_trims_and_keeps_or_replaces_the_source_split(split_folder: Path) -> None:
    ds = open_dataset(split_folder)
    kept, dropped = prepare(ds, max_per_class=16, min_per_class=7)
    assert dropped == ["c"] and kept.split_from_source
    assert kept.table["label"].value_counts().to_dict() == {"a": 16, "b": 14}
    assert set(kept.table["split"]) == {"train", "val", "test"}
    resplit, _ = prepare(ds, resplit=True, fractions=(0.5, 0.5, 0.0), seed=2)
    assert not resplit.split_from_source
    counts = class_counts(resplit.table)
    assert list(counts.columns) == ["train", "val", "total"] and counts.loc["a", "train"] == 14
    with pytest.raises(DatasetError, match="fewer than two classes"):
        prepare(ds, min_per_class=20)


def test_sample_rows_is_seeded_and_per_class() -> None:
    table = open_dataset(DEMO).table
    one, again, other = sample_rows(table, 3, seed=1), sample_rows(table, 3, seed=1), sample_rows(table, 3, seed=2)
    assert one["label"].tolist() == ["NORMAL"] * 3 + ["PNEUMONIA"] * 3
    assert one["path"].tolist() == again["path"].tolist() != other["path"].tolist()
    assert len(sample_rows(table.head(2), 5)) == 2


def test_size_stats_include_file_size() -> None:
    table = pd.DataFrame({"width": [100, 300], "height": [100, 100], "bytes": [1024, 3072]})
    stats = size_stats(table)
    assert stats["aspect"] == {"mean": 2.0, "median": 2.0, "min": 1.0, "max": 3.0}
    assert stats["file_kb"]["max"] == 3.0


def test_save_list_load_round_trip(split_folder: Path) -> None:
    prepared, _ = prepare(open_dataset(split_folder), max_per_class=10, seed=3)
    save_definition("pneumonia v1", prepared, {"max_per_class": 10})
    listed = {d["name"]: d for d in list_definitions()}
    assert listed["pneumonia v1"]["images"] == len(prepared.table) and listed["pneumonia v1"]["error"] is None
    assert listed["pneumonia v1"]["settings"] == {"max_per_class": 10}
    loaded = open_source(SAVED_PREFIX + "pneumonia v1")
    pd.testing.assert_frame_equal(loaded.table.reset_index(drop=True), prepared.table.reset_index(drop=True), check_dtype=False)
    assert loaded.split_from_source and load_definition("pneumonia v1").classes == prepared.classes


def test_bad_names_missing_and_damaged_definitions(split_folder: Path) -> None:
    ds = open_dataset(split_folder)
    for bad in ("", "../escape", "a/b", ".hidden", "x" * 65):
        with pytest.raises(DatasetError, match="cannot be a dataset name"):
            save_definition(bad, ds)
    with pytest.raises(DatasetError, match="no saved dataset named 'ghost'"):
        load_definition("ghost")
    path = save_definition("broken", ds)
    path.with_suffix(".json").write_text("{not json")
    broken = next(d for d in list_definitions() if d["name"] == "broken")
    assert "unreadable" in broken["error"]
    with pytest.raises(DatasetError, match="damaged"):
        load_definition("broken")
    save_definition("tableless", ds)
    path.with_name("tableless.csv").unlink()
    assert next(d for d in list_definitions() if d["name"] == "tableless")["error"] == "its table file is missing"
    assert json.loads(path.with_name("tableless.json").read_text())["name"] == "tableless"


def test_kaggle_handles(monkeypatch: pytest.MonkeyPatch, split_folder: Path) -> None:
    with pytest.raises(DatasetError, match="not a Kaggle dataset handle"):
        open_dataset("kaggle:not a handle")
    import kagglehub

    def offline(handle: str) -> str:
        raise ConnectionError("Failed to resolve 'api.kaggle.com' NameResolutionError")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(DatasetError, match=r"no network connection to Kaggle.*kaggle.json.*open it here as a zip"):
        open_dataset("kaggle:paultimothymooney/chest-xray-pneumonia")
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: str(split_folder))
    ds = open_dataset("kaggle:owner/some-set")
    assert ds.split_from_source and ds.source == "kaggle:owner/some-set"
    assert kaggle_source.download("owner/some-set") == split_folder
