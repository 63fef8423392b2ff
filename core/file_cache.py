"""Per-file results cached on disk, keyed by path, size and mtime.

Scanning headers and hashing images are both "compute something per file, remember it until the
file changes". This does that once: one `stat` per file decides what is fresh, only new or changed
files are computed (in parallel threads), failures are cached with their reason so a broken file
does not slow every later run, and each kind of result has its own SQLite table.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from joblib import Parallel, delayed

from core.paths import cache_dir

Progress = Callable[[int, int], None]
_DB_NAME = "files-v1.sqlite"
SNAPSHOT_FOLDER = "scans"  # whole-scan results (core.scan) beside the per-file database
# Header parsing and pHashing are mostly Python (pydicom, Pillow's parsers) and hold the GIL, so
# threads only help with slow disks; from this many files on, worker processes use every core
# (100k files: 14.2 s cold with 8 threads, 7 s with processes; README, Benchmarks). Below it their start-up costs more than they save.
PROCESS_MIN_FILES = 3_000
_THREADS = 8  # overlap file-system latency (network shares) for small jobs


def _parallel_map(fn: Callable[[str], tuple], items: list[str]) -> Iterator[tuple]:
    """fn over items, results in order: worker processes for big jobs, threads for small ones."""
    cores = os.cpu_count() or 1
    if len(items) >= PROCESS_MIN_FILES and cores > 1:
        # joblib's loky workers are fresh interpreters (safe beside the dashboard's threads and
        # TensorFlow, unlike fork) that, unlike multiprocessing's spawn, never re-run the caller's
        # script, and are kept for the next call.
        batch = max(64, len(items) // (cores * 16))
        yield from Parallel(n_jobs=cores, backend="loky", batch_size=batch, return_as="generator")(delayed(fn)(p) for p in items)
        return
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        yield from pool.map(fn, items)


@dataclass(frozen=True)
class FileCache:
    """A cached per-file function. `columns` are (name, SQL type); the function returns one value each.

    The function must be a module-level one (picklable): big jobs run it in worker processes.
    """

    table: str
    columns: tuple[tuple[str, str], ...]

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(cache_dir() / _DB_NAME, timeout=30)
        cols = ", ".join(f"{name} {kind}" for name, kind in self.columns)
        # Switching a new database to WAL needs it alone and fails at once ("database is locked")
        # instead of waiting: the workers of a multi-worker job all open their dataset together.
        attempts = 0
        while True:
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, {cols})")
                return con
            except sqlite3.OperationalError as exc:
                attempts += 1
                if "locked" not in str(exc) or attempts >= 100:
                    con.close()
                    raise
                time.sleep(0.05)

    def _cached(self, con: sqlite3.Connection, paths: Sequence[str]) -> dict[str, tuple]:
        """All rows under the paths' common folder, in one indexed range query."""
        if not paths:
            return {}
        # the common prefix of the smallest and largest path is every path's (commonpath is 0.26 s at 100k)
        lo, hi = min(paths), max(paths)
        prefix = os.path.commonprefix([lo, hi])
        root = prefix if lo == hi or prefix.endswith(os.sep) else os.path.dirname(prefix)
        names = ", ".join(name for name, _ in self.columns)
        rows = con.execute(
            f"SELECT path, size, mtime_ns, {names} FROM {self.table} WHERE path >= ? AND path < ?",
            (root, root + "\U0010ffff"),
        )
        return {r[0]: r[1:] for r in rows}

    def compute(
        self,
        paths: Sequence[str],
        fn: Callable[[str], tuple],
        progress: Progress | None = None,
        known: Mapping[str, tuple[int, int]] | None = None,
    ) -> tuple[dict[str, tuple], dict[str, int], list[tuple[str, str]]]:
        """(results by absolute path, file sizes, files that cannot be stat'ed with the reason).

        known: (size, mtime_ns) the caller has just read for some paths (a listing's), not stat'ed again.
        """
        known = known or {}
        stats: dict[str, tuple[int, int]] = {}
        missing: list[tuple[str, str]] = []
        for p in paths:
            if (size_mtime := known.get(p)) is not None:
                stats[p] = size_mtime
                continue
            try:
                st = os.stat(p)
                stats[p] = (st.st_size, st.st_mtime_ns)
            except OSError as exc:
                missing.append((p, f"cannot be opened ({exc.strerror or exc})"))
        with closing(self._connect()) as con:
            cached = self._cached(con, list(stats))
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
                for i, (p, values) in enumerate(zip(todo, _parallel_map(fn, todo), strict=True), 1):
                    results[p] = values
                    fresh.append((p, *stats[p], *values))
                    if progress and (i % 64 == 0 or i == len(todo)):
                        progress(done + i, total)
                marks = ",".join("?" * (3 + len(self.columns)))
                with con:
                    con.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES ({marks})", fresh)
        return results, {p: s[0] for p, s in stats.items()}, missing


def clear_all() -> None:
    """Forget every cached result, whole-scan snapshots included (benchmarks' cold runs use this)."""
    path = cache_dir() / _DB_NAME
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    shutil.rmtree(cache_dir() / SNAPSHOT_FOLDER, ignore_errors=True)
