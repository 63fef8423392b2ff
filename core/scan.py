"""Fast image facts for many files: header reads in parallel, cached on disk.

The cache (SQLite, one row per file keyed by path, size and mtime) makes re-opening a dataset
cost one `stat` per file; a changed file is re-read automatically. Files that fail are cached
with their reason, so a broken file does not slow every later scan either.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pandas as pd

from core.errors import ImageReadError
from core.image_reader import read_header
from core.paths import cache_dir

FACT_COLUMNS = ["width", "height", "channels", "format", "frames", "bytes"]
Progress = Callable[[int, int], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,
    width INTEGER, height INTEGER, channels INTEGER, format TEXT, frames INTEGER, error TEXT
)
"""
_CACHE_VERSION = "1"


def _connect() -> sqlite3.Connection:
    con = sqlite3.connect(cache_dir() / f"scan-v{_CACHE_VERSION}.sqlite", timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(_SCHEMA)
    return con


def _read_one(path: str) -> tuple[int, int, int, str, int, str | None]:
    try:
        h = read_header(path)
        return h.width, h.height, h.channels, h.format, h.frames, None
    except ImageReadError as exc:
        return 0, 0, 0, "", 0, str(exc)


def _cached(con: sqlite3.Connection, paths: Sequence[str]) -> dict[str, tuple]:
    """All cache rows under the paths' common folder, in one indexed range query."""
    if not paths:
        return {}
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    rows = con.execute(
        "SELECT path, size, mtime_ns, width, height, channels, format, frames, error FROM facts "
        "WHERE path >= ? AND path < ?",
        (root, root + "\U0010ffff"),
    )
    return {r[0]: r[1:] for r in rows}


def scan_files(
    paths: Sequence[str | os.PathLike], progress: Progress | None = None, workers: int = 8
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Facts for each path: (facts table with FACT_COLUMNS, failures table path/reason).

    Paths are made absolute. Only files that are new or changed since the last scan are read.
    """
    abs_paths = [os.path.abspath(p) for p in paths]
    stats: dict[str, tuple[int, int]] = {}
    failures: list[tuple[str, str]] = []
    for p in abs_paths:
        try:
            st = os.stat(p)
            stats[p] = (st.st_size, st.st_mtime_ns)
        except OSError as exc:
            failures.append((p, f"cannot be opened ({exc.strerror or exc})"))

    with closing(_connect()) as con:
        cached = _cached(con, list(stats))
        results: dict[str, tuple] = {}
        todo = []
        for p, (size, mtime) in stats.items():
            row = cached.get(p)
            if row is not None and row[0] == size and row[1] == mtime:
                results[p] = row[2:]
            else:
                todo.append(p)
        total, done = len(stats), len(results)
        if progress:
            progress(done, total)
        if todo:
            fresh = []
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for i, (p, facts) in enumerate(zip(todo, pool.map(_read_one, todo, chunksize=32), strict=True), 1):
                    results[p] = facts
                    fresh.append((p, *stats[p], *facts))
                    if progress and (i % 64 == 0 or i == len(todo)):
                        progress(done + i, total)
            with con:
                con.executemany("INSERT OR REPLACE INTO facts VALUES (?,?,?,?,?,?,?,?,?)", fresh)

    rows = []
    for p in abs_paths:
        facts = results.get(p)
        if facts is None:
            continue
        width, height, channels, fmt, frames, error = facts
        if error:
            failures.append((p, error))
        else:
            rows.append((p, width, height, channels, fmt, frames, stats[p][0]))
    table = pd.DataFrame(rows, columns=["path", *FACT_COLUMNS])
    return table, pd.DataFrame(failures, columns=["path", "reason"])


def clear_cache() -> None:
    """Forget every cached fact (the benchmark's cold run uses this)."""
    path = cache_dir() / f"scan-v{_CACHE_VERSION}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
