"""Fast image facts for many files: header reads only, in parallel, cached per file.

Re-opening a dataset costs one `stat` per file; a changed file is re-read automatically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from core.errors import ImageReadError
from core.file_cache import FileCache, Progress
from core.image_reader import read_header

FACT_COLUMNS = ["width", "height", "channels", "mode", "format", "frames", "orientation", "bytes"]
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


def scan_files(
    paths: Sequence[str | os.PathLike], progress: Progress | None = None, workers: int = 8
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Facts for each path: (facts table with FACT_COLUMNS, failures table path/reason).

    Paths are made absolute. Only files that are new or changed since the last scan are read.
    """
    abs_paths = [os.path.abspath(p) for p in paths]
    results, sizes, failures = _FACTS.compute(abs_paths, _read_one, progress, workers)
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
    return pd.DataFrame(rows, columns=["path", *FACT_COLUMNS]), pd.DataFrame(failures, columns=["path", "reason"])
