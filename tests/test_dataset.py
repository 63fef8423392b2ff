"""Dataset tables: every source kind, bad sources, split/trim/weights, the scan cache, the demo set."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import scan
from core.dataset import DEMO, class_counts, imbalance_ratio, open_dataset, size_stats, skipped_summary, store_upload
from core.demo_data import CLASSES, IMAGES_PER_CLASS, generate
from core.errors import DatasetError
from core.safe_zip import extract_zip
from core.splits import assign_split, class_weights, trim
from tests.conftest import CHEST_XRAY, make_class_folders, write_png, zip_bytes


def test_class_folders_with_junk(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "ds", {"cat": 6, "dog": 8})
    (root / "cat" / ".hidden.png").write_bytes(b"x")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "cat_0.png").write_bytes(b"x")
    (root / "dog" / "notes.txt").write_text("hello")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "stray.png").write_bytes((root / "cat" / "cat_0.png").read_bytes())
    write_png(root / "dog" / "nested" / "deep.png")
    ds = open_dataset(root)
    assert ds.classes == ["cat", "dog"]
    assert ds.table["label"].value_counts().to_dict() == {"dog": 9, "cat": 6}
    reasons = skipped_summary(ds.skipped)
    assert reasons["hidden or system file"] == 1
    assert reasons["hidden or system folder"] == 1
    assert reasons["not an image type (.txt)"] == 1
    assert reasons["not inside a class folder"] == 1
    assert any("damaged" in r for r in reasons)
    assert set(ds.table.columns) >= {"path", "label", "split", "width", "height", "channels", "format", "bytes"}
    assert (ds.table["width"] == 16).all() and (ds.table["height"] == 12).all()
    assert set(ds.table["mode"]) == {"L"} and set(ds.table["format"]) == {"PNG"}
    assert not ds.split_from_source and set(ds.table["split"]) == {"train", "val", "test"}


def test_split_folders_kaggle_layout_in_a_wrapper(tmp_path: Path) -> None:
    root = tmp_path / "download" / "chest_xray"
    for split, n in (("train", 6), ("valid", 2), ("test", 3)):
        make_class_folders(root / split, {"NORMAL": n, "PNEUMONIA": n + 1})
    ds = open_dataset(tmp_path / "download")
    assert ds.split_from_source and ds.root == str(root)
    counts = class_counts(ds.table)
    assert counts.loc["NORMAL", "train"] == 6 and counts.loc["PNEUMONIA", "val"] == 3
    assert counts.loc["total", "total"] == 6 + 7 + 2 + 3 + 3 + 4


def test_empty_and_single_class_folders(tmp_path: Path) -> None:
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"No readable images.*not an image type"):
        open_dataset(tmp_path / "empty")
    make_class_folders(tmp_path / "one", {"only": 4})
    (tmp_path / "one" / "other").mkdir()
    with pytest.raises(DatasetError, match="Only one class .'only', 4 images"):
        open_dataset(tmp_path / "one")
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "missing")


def test_unreadable_files_are_reported(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "ds", {"a": 4, "b": 4})
    for i in range(4):
        (root / "b" / f"b_{i}.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="Only one class"):
        open_dataset(root)


def test_csv_source(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "imgs", {"x": 4, "y": 4})
    outside = write_png(tmp_path.parent / f"{tmp_path.name}-outside.png")
    rows = [f"imgs/x/x_{i},x" for i in range(4)] + [f"imgs/y/y_{i},y" for i in range(4)]
    rows = [r.replace(",", ".png,", 1) for r in rows]
    rows += ["imgs/x/x_0.png,x", "imgs/x/x_1.png,y", f"{outside},x", "../escape.png,x", "imgs/missing.png,y", "imgs/y/y_0.png,"]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    ds = open_dataset(csv)
    assert ds.table["label"].value_counts().to_dict() == {"x": 4, "y": 4}
    reasons = skipped_summary(ds.skipped)
    assert reasons["outside the CSV's folder (not read, for safety)"] == 2
    assert reasons["duplicate row"] == 1
    assert reasons["row without a label"] == 1
    assert reasons["listed again with another label (y)"] == 1
    assert reasons["file not found"] == 1


def test_csv_with_split_and_bad_columns(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    lines = ["File,Class,Split"] + [f"{c}/{c}_{i}.png,{c},{s}" for c in "ab" for i, s in enumerate(["train", "valid", "bogus"])]
    (tmp_path / "s.csv").write_text("\n".join(lines))
    ds = open_dataset(tmp_path / "s.csv")
    assert ds.split_from_source and set(ds.table["split"]) == {"train", "val"}
    assert any("unknown split" in r for r in skipped_summary(ds.skipped))
    (tmp_path / "bad.csv").write_text("filename_x,diag_y\n1,2\n")
    with pytest.raises(DatasetError, match="needs a 'path' and a 'label' column"):
        open_dataset(tmp_path / "bad.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetError, match="cannot be read as a CSV"):
        open_dataset(tmp_path / "binary.csv")


def test_zip_source_is_extracted_safely(tmp_path: Path) -> None:
    png = write_png(tmp_path / "p.png").read_bytes()
    entries = {f"set/{c}/{c}{i}.png": png for c in ("a", "b") for i in range(4)}
    entries |= {"../evil.png": png, "/abs/evil.png": png, "__MACOSX/set/a/._a0.png": b"junk"}
    data = zip_bytes(entries, symlinks=("set/a/link.png",))
    ds = open_dataset(data)
    assert ds.table["label"].value_counts().to_dict() == {"a": 4, "b": 4}
    reasons = skipped_summary(ds.skipped)
    assert reasons["path with '..' in zip (not extracted)"] == 1
    assert reasons["absolute path in zip (not extracted)"] == 1
    assert reasons["symbolic link in zip (not extracted)"] == 1
    assert not (tmp_path.parent / "evil.png").exists()
    # The page stores uploads by content and opens them by path: same dataset.
    again = open_dataset(store_upload(data, "upload.zip"))
    assert sorted(again.table["path"]) == sorted(ds.table["path"])
    with pytest.raises(DatasetError, match="not a .zip"):
        store_upload(data, "upload.tar")


def test_zip_bomb_and_caps(tmp_path: Path) -> None:
    bomb = zip_bytes({"a/zeros.png": b"\0" * (80 * 1024 * 1024)})
    assert len(bomb) < 1_000_000
    with pytest.raises(DatasetError, match="zip bomb"):
        extract_zip(bomb, tmp_path)
    with pytest.raises(DatasetError, match="file cap"):
        extract_zip(zip_bytes({f"f{i}.png": b"x" for i in range(20)}), tmp_path, max_files=10)
    with pytest.raises(DatasetError, match="cap"):
        extract_zip(zip_bytes({"big.png": os.urandom(4096)}), tmp_path, max_bytes=1000)
    with pytest.raises(DatasetError, match="not a readable zip"):
        extract_zip(b"PK\x03\x04 nonsense", tmp_path)
    assert not any(p.name.startswith("zip-") for p in tmp_path.iterdir())


def test_assign_split_is_stratified_and_seeded() -> None:
    table = pd.DataFrame({"path": [f"p{i}" for i in range(400)], "label": ["a"] * 300 + ["b"] * 100, "split": None})
    one, two = assign_split(table, seed=3), assign_split(table, seed=3)
    assert one["split"].tolist() == two["split"].tolist()
    assert one["split"].tolist() != assign_split(table, seed=4)["split"].tolist()
    counts = pd.crosstab(one["label"], one["split"])
    assert counts.loc["a", "train"] == 210 and counts.loc["b", "train"] == 70
    assert counts.loc["a", "val"] == 45 and counts.loc["b", "test"] == 15
    custom = pd.crosstab(assign_split(table, (0.8, 0.2, 0.0))["label"], assign_split(table, (0.8, 0.2, 0.0))["split"])
    assert list(custom.columns) == ["train", "val"] and custom.loc["b", "val"] == 20
    with pytest.raises(DatasetError, match="add up to 1"):
        assign_split(table, (0.5, 0.2, 0.2))
    with pytest.raises(DatasetError, match="Too few images"):
        assign_split(table.iloc[298:], seed=0)


def test_trim_and_class_weights() -> None:
    table = pd.DataFrame({"path": range(130), "label": ["a"] * 100 + ["b"] * 25 + ["c"] * 5})
    trimmed, dropped = trim(table, max_per_class=30, min_per_class=10, seed=1)
    assert dropped == ["c"] and trimmed["label"].value_counts().to_dict() == {"a": 30, "b": 25}
    assert trim(table, max_per_class=30, seed=1)[0]["path"].tolist() == trim(table, max_per_class=30, seed=1)[0]["path"].tolist()
    weights = class_weights(table["label"])
    assert weights == pytest.approx({"a": 130 / 300, "b": 130 / 75, "c": 130 / 15})
    assert imbalance_ratio(table) == 20.0 and imbalance_ratio(trimmed) == 30 / 25


@pytest.mark.parametrize("layout", ["folder", "csv"])
@pytest.mark.parametrize("snapshot_from", [1, 10**9], ids=["whole-scan snapshot", "per-file cache only"])
def test_scan_cache_reads_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, snapshot_from: int) -> None:
    monkeypatch.setattr(scan, "SNAPSHOT_MIN_FILES", snapshot_from)
    root = make_class_folders(tmp_path / "ds", {"a": 5, "b": 5})
    (tmp_path / "ds" / "labels.csv").write_text("path,label\n" + "".join(f"{c}/{c}_{i}.png,{c}\n" for c in "ab" for i in range(5)))
    source = root if layout == "folder" else root / "labels.csv"
    calls: list[str] = []
    real = scan.read_header
    monkeypatch.setattr(scan, "read_header", lambda p: calls.append(p) or real(p))
    open_dataset(source)
    assert len(calls) == 10
    calls.clear()
    open_dataset(source)
    assert calls == []  # warm: nothing re-read
    assert len(list((scan.cache_dir() / scan.SNAPSHOT_FOLDER).glob("*.parquet"))) == (1 if snapshot_from == 1 else 0)
    target = root / "a" / "a_0.png"
    write_png(target, size=(30, 20))
    os.utime(target, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    ds = open_dataset(source)
    assert calls == [str(target)]  # a changed file is never served from a snapshot
    assert ds.table.set_index("path").loc[str(target), "width"] == 30
    target.unlink()
    ds = open_dataset(source)
    assert len(ds.table) == 9 and calls == [str(target)]


def test_big_scans_use_worker_processes_even_from_an_unguarded_script(tmp_path: Path) -> None:
    """Worker processes must not re-run the caller's script (multiprocessing's spawn does, and
    crashes scripts without an `if __name__ == "__main__"` guard)."""
    root = make_class_folders(tmp_path / "ds", {"a": 6, "b": 6})
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from core import file_cache\n"
        "from core.dataset import open_dataset\n"
        "file_cache.PROCESS_MIN_FILES = 2\n"
        f"ds = open_dataset({str(root)!r})\n"
        "print('rows', len(ds.table), sorted(set(ds.table['width'])))\n"
    )
    env = {**os.environ, "MEDIMAGE_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rows 12 [" in out.stdout


def test_scan_progress_is_reported(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "ds", {"a": 70, "b": 70})
    seen: list[tuple[int, int]] = []
    open_dataset(root, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 140) and seen[-1] == (140, 140)


def test_demo_set_is_fast_deterministic_and_balanced(tmp_path: Path) -> None:
    start = time.perf_counter()
    first = generate(tmp_path / "one")
    assert time.perf_counter() - start < 10
    second = generate(tmp_path / "two", images_per_class=3)

    def digest(folder: Path, n: int) -> list[str]:
        return [hashlib.md5((folder / c / f"{c.lower()}_{i:04d}.png").read_bytes()).hexdigest() for c in CLASSES for i in range(n)]

    assert digest(first, 3) == digest(second, 3)
    ds = open_dataset(DEMO)
    assert ds.classes == list(CLASSES)
    assert ds.table["label"].value_counts().to_dict() == {c: IMAGES_PER_CLASS for c in CLASSES}
    assert (ds.table["width"] == 256).all() and (ds.table["channels"] == 1).all()
    assert skipped_summary(ds.skipped) == {}


@pytest.mark.slow
def test_demo_set_is_learnable_by_a_small_cnn() -> None:
    """A small CNN must reach >= 90% validation accuracy quickly, so the demo can show training."""
    import keras
    import tensorflow as tf

    from core.image_reader import read_image

    keras.utils.set_random_seed(0)
    ds = open_dataset(DEMO)

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        part = ds.table[ds.table["split"] == split]
        x = np.stack([tf.image.resize(read_image(p).pixels, (96, 96)).numpy() for p in part["path"]]) / 255.0
        return x.astype("float32"), (part["label"] == "PNEUMONIA").to_numpy("float32")

    (xt, yt), (xv, yv) = arrays("train"), arrays("val")
    model = keras.Sequential([
        keras.Input((96, 96, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(keras.optimizers.Adam(2e-3), "binary_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(xt, yt, validation_data=(xv, yv), epochs=25, batch_size=16, verbose=0)
    assert time.perf_counter() - start < 120
    assert max(history.history["val_accuracy"]) >= 0.90


@pytest.mark.skipif(not CHEST_XRAY.is_dir(), reason="../shared/data/chest_xray/train is not present")
def test_real_chest_xray_scan() -> None:
    ds = open_dataset(CHEST_XRAY)
    assert ds.table["label"].value_counts().to_dict() == {"PNEUMONIA": 3875, "NORMAL": 1341}
    assert size_stats(ds.table)["width"] == {"mean": 224.0, "median": 224.0, "min": 224.0, "max": 224.0}
    assert (ds.table["height"] == 224).all() and skipped_summary(ds.skipped) == {}


def test_csv_delimiter_is_sniffed(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    rows = "".join(f"{c}/{c}_{i}.png;{c}\n" for c in ("a", "b") for i in range(3))
    (tmp_path / "labels.csv").write_text("path;label\n" + rows)
    assert open_dataset(str(tmp_path / "labels.csv")).classes == ["a", "b"]
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="is empty"):
        open_dataset(str(tmp_path / "empty.csv"))
