"""Named dataset definitions: the table a user settled on (after trim and split), saved so the Train
and Evaluate pages (and the CLI) use exactly those images in exactly those splits.

Each definition is `<data dir>/datasets/<name>.csv` (the table) plus `<name>.json` (where it came
from, the settings, counts), both written atomically.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.atomic import write_json, write_text
from core.dataset import TABLE_COLUMNS, Dataset, class_counts, open_dataset
from core.errors import DatasetError
from core.file_cache import Progress
from core.paths import data_dir

SAVED_PREFIX = "saved:"  # a page source naming a saved definition
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def _folder() -> Path:
    folder = data_dir() / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name) or name.endswith("."):
        raise DatasetError(
            f"'{name}' cannot be a dataset name: use up to 64 letters, digits, spaces, '-', '_' or '.', "
            "starting with a letter or digit."
        )
    return name


def save_definition(name: str, dataset: Dataset, settings: dict[str, Any] | None = None) -> Path:
    """Save (or overwrite) a named definition; returns the path of its table."""
    name = _check_name(name)
    folder = _folder()
    write_text(folder / f"{name}.csv", dataset.table[TABLE_COLUMNS].to_csv(index=False))
    counts = class_counts(dataset.table)
    write_json(folder / f"{name}.json", {
        "name": name,
        "source": dataset.source,
        "root": dataset.root,
        "split_from_source": dataset.split_from_source,
        "settings": settings or {},
        "classes": dataset.classes,
        "images": int(len(dataset.table)),
        "counts": {label: row.to_dict() for label, row in counts.iterrows()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    return folder / f"{name}.csv"


def list_definitions() -> list[dict[str, Any]]:
    """Saved definitions, newest first; a damaged one is listed with its error instead of hiding it."""
    found = []
    for meta_path in _folder().glob("*.json"):
        try:
            meta = json.loads(meta_path.read_text())
            meta["error"] = None if (meta_path.with_suffix(".csv")).is_file() else "its table file is missing"
        except (OSError, ValueError) as exc:
            meta = {"name": meta_path.stem, "created": "", "error": f"unreadable ({exc})"}
        found.append(meta)
    return sorted(found, key=lambda m: str(m.get("created", "")), reverse=True)


def load_definition(name: str) -> Dataset:
    """The saved dataset, exactly as saved (no rescan, no re-split)."""
    name = _check_name(name)
    folder = _folder()
    try:
        meta = json.loads((folder / f"{name}.json").read_text())
        table = pd.read_csv(folder / f"{name}.csv", dtype={"label": str, "split": str})
    except FileNotFoundError as exc:
        raise DatasetError(f"There is no saved dataset named '{name}'. Save one on the Dataset page.") from exc
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DatasetError(f"The saved dataset '{name}' is damaged ({exc}). Save it again from the Dataset page.") from exc
    missing = set(TABLE_COLUMNS) - set(table.columns)
    if missing:
        raise DatasetError(f"The saved dataset '{name}' lacks columns {sorted(missing)}. Save it again.")
    skipped = pd.DataFrame(columns=["path", "reason"])
    return Dataset(table, skipped, meta.get("source", name), meta.get("root", ""), bool(meta.get("split_from_source")))



def open_source(source: str, progress: Progress | None = None) -> Dataset:
    """Any source the pages offer: 'saved:<name>' for a saved definition, else what open_dataset takes."""
    if source.startswith(SAVED_PREFIX):
        return load_definition(source[len(SAVED_PREFIX):])
    return open_dataset(source, progress=progress)
