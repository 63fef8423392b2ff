"""Fast image facts for many files: header reads only, in parallel, cached per file.

Re-opening a dataset costs one `stat` per file; a changed file is re-read automatically. A whole
scan of 2,000+ files is also kept as one snapshot, so an unchanged archive re-opens from one file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from core.atomic import write_bytes
from core.errors import ImageReadError
from core.file_cache import SNAPSHOT_FOLDER, FileCache, Progress
from core.image_reader import read_header
from core.paths import cache_dir

FACT_COLUMNS = ["width", "height", "channels", "mode", "format", "frames", "orientation", "bytes"]
SNAPSHOT_MIN_FILES = 2_000  # below this the per-file cache alone is fast enough
_SNAPSHOTS_KEPT = 16
_FACTS = FileCache(
    "facts_v3",
    (("width", "INTEGER"), ("height", "INTEGER"), ("channels", "INTEGER"), ("mode", "TEXT"), ("format", "TEXT"),
     ("frames", "INTEGER"), ("orientation", "INTEGER"), ("error", "TEXT")),
)


def _read_one(path: str) -> tuple[int, int, int, str, str, int, int, str | None]:
    try:
        h = read_header(path)
        return h.width, h.height, h.channels, h.mode, h.format, h.frames, h.orientation, None
    except ImageReadError as exc:
        return 0, 0, 0, "", "", 0, 1, str(exc)


def _absolute(path: str | os.PathLike) -> str:
    """os.path.abspath, skipped for paths that are plainly absolute and normal already (listings'
    paths are): at 100k files abspath alone cost 0.2 s of a 1 s warm open."""
    if isinstance(path, str) and path.startswith("/") and "/." not in path and "//" not in path and os.sep == "/":
        return path
    return os.path.abspath(path)


def scan_files(
    paths: Sequence[str | os.PathLike], progress: Progress | None = None, known: Mapping[str, tuple[int, int]] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Facts for each path: (facts table with FACT_COLUMNS, failures table path/reason).

    Paths are made absolute. Only files that are new or changed since the last scan are read.
    known: (size, mtime_ns) by absolute path, from a listing that has just read them.
    """
    abs_paths = [_absolute(p) for p in paths]
    snapshot = _snapshot_path(abs_paths, known or {})
    if snapshot is not None and snapshot.is_file():
        try:
            return _read_snapshot(snapshot)
        except (OSError, ValueError, KeyError):
            pass  # damaged or from another version: scan again (per-file results are still cached)
    results, sizes, failures = _FACTS.compute(abs_paths, _read_one, progress, known)
    rows = []
    for p in abs_paths:
        facts = results.get(p)
        if facts is None:
            continue
        *values, error = facts
        if error:
            failures.append((p, error))
        else:
            rows.append((p, *values, sizes[p]))
    facts_table = pd.DataFrame(rows, columns=["path", *FACT_COLUMNS])
    failures_table = pd.DataFrame(failures, columns=["path", "reason"])
    if snapshot is not None:
        _write_snapshot(snapshot, facts_table, failures_table)
    return facts_table, failures_table


def _snapshot_path(abs_paths: list[str], known: Mapping[str, tuple[int, int]]) -> Path | None:
    """Where a whole scan is kept, named by the digest of every path, size and mtime; None when the
    listing did not stat every file. Re-opening an unchanged 100k-image dataset then reads one file
    instead of 100k cache rows (bench/scale_bench.py). None below SNAPSHOT_MIN_FILES: no digest to build."""
    if len(abs_paths) < SNAPSHOT_MIN_FILES:
        return None
    try:
        lines = "\n".join(f"{p}\t{known[p][0]}\t{known[p][1]}" for p in abs_paths)
    except KeyError:
        return None
    digest = hashlib.blake2b(lines.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
    return cache_dir() / SNAPSHOT_FOLDER / f"{_FACTS.table}-{digest}.parquet"


def _read_snapshot(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = pd.read_parquet(path)
    os.utime(path)  # recently used: kept by the pruning below
    failed = table["reason"] != ""
    return table.loc[~failed, ["path", *FACT_COLUMNS]].reset_index(drop=True), table.loc[failed, ["path", "reason"]].reset_index(drop=True)


def _write_snapshot(path: Path, facts: pd.DataFrame, failures: pd.DataFrame) -> None:
    both = pd.concat([facts.assign(reason=""), failures], ignore_index=True)
    for column in FACT_COLUMNS:  # failures have no facts: zeros and empty strings keep the types
        both[column] = both[column].fillna(0 if pd.api.types.is_numeric_dtype(facts[column]) else "")
    write_bytes(path, both.to_parquet(index=False))
    kept = sorted(path.parent.glob("*.parquet"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[_SNAPSHOTS_KEPT:]:
        old.unlink(missing_ok=True)
