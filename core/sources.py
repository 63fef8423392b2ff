"""Turn a dataset source (folder layouts, CSV) into rows of path, label, split, plus skipped files.

Layouts understood:
- class folders: ROOT/<label>/**/image
- split folders (the Kaggle layout): ROOT/<train|val|valid|validation|test>/<label>/**/image
- a single wrapper folder around either of those (as zips often have) is stepped into
- CSV: columns path,label[,split]; paths relative to the CSV's folder and never outside it
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.errors import DatasetError
from core.image_reader import is_image_name

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
_IGNORED_DIRS = {"__macosx", ".ds_store", "@eadir"}
_PATH_COLUMNS = ("path", "filepath", "file", "filename", "image", "image_path")
_LABEL_COLUMNS = ("label", "class", "target", "diagnosis", "level")


@dataclass
class Listing:
    """Rows found in a source, before any image is opened."""

    rows: list[tuple[str, str, str | None]] = field(default_factory=list)  # path, label, split
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)  # path: (size, mtime_ns) where the listing read them
    skipped: list[tuple[str, str]] = field(default_factory=list)  # path, reason
    has_split: bool = False
    root: Path | None = None


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _IGNORED_DIRS


def _visible_dirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p.name))
    except OSError as exc:
        raise DatasetError(f"The folder {folder} cannot be listed ({exc.strerror}).") from exc


def _files_under(folder: Path, skipped: list[tuple[str, str]]) -> Iterator[tuple[str, str, os.stat_result]]:
    """(path, its top folder below `folder` ('' if none), its stat) for image files, recursively.

    Hidden, __MACOSX, symlinked and non-image entries go to `skipped`. Plain os.scandir and
    strings: pathlib costs more than the whole cached scan on a 5,000-image folder.
    """
    stack = [(str(folder), "")]
    while stack:
        current, top = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((current, f"folder cannot be listed ({exc.strerror})"))
            continue
        subdirs = []
        for entry in entries:
            if entry.is_symlink():
                skipped.append((entry.path, "symbolic link (not followed)"))
            elif entry.is_dir():
                if _hidden(entry.name):
                    skipped.append((entry.path, "hidden or system folder"))
                else:
                    subdirs.append((entry.path, top or entry.name))
            elif _hidden(entry.name):
                skipped.append((entry.path, "hidden or system file"))
            elif not is_image_name(entry.name):
                skipped.append((entry.path, f"not an image type ({os.path.splitext(entry.name)[1].lower()})"))
            else:
                try:
                    yield entry.path, top, entry.stat()
                except OSError as exc:
                    skipped.append((entry.path, f"cannot be opened ({exc.strerror or exc})"))
        stack.extend(reversed(subdirs))


def _step_into_wrapper(root: Path) -> Path:
    """Zips and downloads often wrap the dataset in one folder (chest_xray/chest_xray/...)."""
    while True:
        dirs = _visible_dirs(root)
        has_files = any(p.is_file() and not _hidden(p.name) for p in root.iterdir())
        if len(dirs) != 1 or has_files or dirs[0].name.lower() in SPLIT_ALIASES or not _visible_dirs(dirs[0]):
            return root
        root = dirs[0]


def _class_rows(folder: Path, split: str | None, listing: Listing) -> None:
    for path, label, st in _files_under(folder, listing.skipped):
        if label:
            listing.rows.append((path, label, split))
            listing.stats[path] = (st.st_size, st.st_mtime_ns)
        else:
            listing.skipped.append((path, "not inside a class folder"))


def list_folder(root: str | os.PathLike) -> Listing:
    """Rows for a folder of class folders or of train/val/test folders."""
    root = Path(os.path.abspath(Path(root).expanduser()))
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder. Give a folder of class folders, a CSV or a zip.")
    root = _step_into_wrapper(root)
    listing = Listing(root=root)
    split_dirs = [d for d in _visible_dirs(root) if d.name.lower() in SPLIT_ALIASES]
    if split_dirs:
        listing.has_split = True
        for d in _visible_dirs(root):
            if d not in split_dirs:
                listing.skipped.append((str(d), "folder beside the train/val/test folders (ignored)"))
        for p in root.iterdir():
            if p.is_file():
                listing.skipped.append((str(p), "not inside a split folder"))
        for d in split_dirs:
            _class_rows(d, SPLIT_ALIASES[d.name.lower()], listing)
    else:
        _class_rows(root, None, listing)
    return listing


def _pick_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def _read_table(csv_path: Path) -> pd.DataFrame:
    """The CSV as strings; the delimiter is sniffed from its start, so a spreadsheet's semicolon or
    tab export reads too (pandas' own sniffing needs its Python engine: 10x slower on 100k rows)."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            head = fh.read(64 * 1024)
        try:
            sep = csv.Sniffer().sniff(head.splitlines()[0] if head else "", delimiters=",;\t|").delimiter
        except csv.Error:
            sep = ","
        return pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True, sep=sep)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path.name} cannot be read as a CSV ({exc}).") from exc


class _Resolver:
    """realpath for many files: each folder is resolved once, only symlinked files on their own."""

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {}

    def __call__(self, path: str) -> tuple[str, os.stat_result | None]:
        """(the real path, its stat if it is an existing regular file, else None)."""
        folder, _, name = path.rpartition(os.sep)
        real_dir = self._dirs.get(folder)
        if real_dir is None:
            real_dir = self._dirs[folder] = os.path.realpath(folder or os.sep)
        full = f"{real_dir.rstrip(os.sep)}{os.sep}{name}"
        try:
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                full = os.path.realpath(full)
                st = os.stat(full)
        except OSError:
            return full, None
        return full, st if stat.S_ISREG(st.st_mode) else None


def list_csv(csv_path: str | os.PathLike) -> Listing:
    """Rows from a CSV of path,label[,split]; paths must stay inside the CSV's folder."""
    csv_path = Path(csv_path).expanduser()
    if csv_path.is_file() and csv_path.stat().st_size == 0:
        raise DatasetError(f"{csv_path.name} is empty. Give a CSV with 'path' and 'label' columns.")
    frame = _read_table(csv_path)
    path_col = _pick_column(list(frame.columns), _PATH_COLUMNS)
    label_col = _pick_column(list(frame.columns), _LABEL_COLUMNS)
    if path_col is None or label_col is None:
        raise DatasetError(
            f"{csv_path.name} needs a 'path' and a 'label' column (optional 'split'); it has: "
            f"{', '.join(map(str, frame.columns)) or 'no columns'}."
        )
    split_col = _pick_column(list(frame.columns), ("split", "subset", "fold_split"))
    base = str(csv_path.parent.resolve())
    inside = base.rstrip(os.sep) + os.sep
    listing = Listing(has_split=split_col is not None, root=Path(base))
    seen: dict[str, str] = {}
    resolve = _Resolver()
    splits = frame[split_col].str.strip().tolist() if split_col is not None else [None] * len(frame)
    columns = (frame[path_col].str.strip().tolist(), frame[label_col].str.strip().tolist(), splits)
    for raw, label, split_raw in zip(*columns, strict=True):
        if not raw:
            listing.skipped.append(("(empty path)", "row without a path"))
            continue
        full, st = resolve(os.path.normpath(os.path.join(base, raw)))
        if not full.startswith(inside):
            listing.skipped.append((raw, "outside the CSV's folder (not read, for safety)"))
        elif not label:
            listing.skipped.append((raw, "row without a label"))
        elif full in seen:
            reason = "duplicate row" if seen[full] == label else f"listed again with another label ({label})"
            listing.skipped.append((raw, reason))
        elif st is None:
            listing.skipped.append((raw, "file not found"))
        else:
            split = None
            if split_raw is not None:
                split = SPLIT_ALIASES.get(split_raw.lower())
                if split is None:
                    listing.skipped.append((raw, f"unknown split '{split_raw}' (use train, val or test)"))
                    continue
            seen[full] = label
            listing.rows.append((full, label, split))
            listing.stats[full] = (st.st_size, st.st_mtime_ns)
    return listing
