"""Open any dataset source as the one dataset table everything downstream uses.

A `Dataset` holds `table` (one row per readable image: path, label, split, width, height,
channels, format, frames, bytes) and `skipped` (path, reason) for everything left out.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from core import kaggle_source
from core.atomic import write_bytes
from core.demo_data import demo_folder
from core.errors import DatasetError
from core.file_cache import Progress
from core.paths import data_dir
from core.safe_zip import extract_zip
from core.scan import FACT_COLUMNS, scan_files
from core.sources import Listing, list_csv, list_folder
from core.splits import DEFAULT_FRACTIONS, assign_split, trim

SPLITS = ("train", "val", "test")
TABLE_COLUMNS = ["path", "label", "split", *FACT_COLUMNS]
DEMO = "demo"
KAGGLE_PREFIX = "kaggle:"  # "kaggle:owner/dataset" opens a Kaggle dataset through kagglehub


@dataclass
class Dataset:
    table: pd.DataFrame
    skipped: pd.DataFrame
    source: str
    root: str
    split_from_source: bool

    @property
    def classes(self) -> list[str]:
        return sort_labels(self.table["label"].unique())

    def counts(self) -> pd.DataFrame:
        return class_counts(self.table)


def sort_labels(labels) -> list[str]:
    """Numeric labels (ordinal grades 0..4) in number order, others alphabetically."""
    labels = [str(x) for x in labels]
    return sorted(labels, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s.lower()))


def class_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split, with a total column and row: the overview's first table."""
    counts = pd.crosstab(table["label"], table["split"]).reindex(columns=[s for s in SPLITS if s in set(table["split"])])
    counts = counts.reindex(sort_labels(counts.index))
    counts["total"] = counts.sum(axis=1)
    counts.loc["total"] = counts.sum(axis=0)
    counts.index.name, counts.columns.name = "label", None
    return counts.astype(int)


def imbalance_ratio(table: pd.DataFrame) -> float:
    """Images in the largest class divided by images in the smallest (1.0 = balanced)."""
    counts = table["label"].value_counts()
    return float(counts.max() / max(counts.min(), 1)) if len(counts) else 1.0


def size_stats(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Mean/median/min/max of width, height, aspect ratio (width / height) and file size in KB."""
    frame = table[["width", "height"]].astype(float).assign(aspect=table["width"] / table["height"])
    if "bytes" in table:
        frame["file_kb"] = table["bytes"] / 1024
    return {c: {k: round(float(getattr(frame[c], k)()), 3) for k in ("mean", "median", "min", "max")} for c in frame}


def skipped_summary(skipped: pd.DataFrame) -> dict[str, int]:
    """How many files were left out, by reason (reasons with file names stripped)."""
    return skipped["reason"].value_counts().to_dict() if len(skipped) else {}


def store_upload(data: bytes, name: str) -> Path:
    """Keep an uploaded zip under the data folder (named by content) so it can be re-opened by path."""
    if not name.lower().endswith(".zip"):
        raise DatasetError(f"{name} is not a .zip file. Upload a zip of class folders.")
    path = data_dir() / "uploads" / f"upload-{hashlib.sha256(data).hexdigest()[:16]}.zip"
    if not path.exists():
        write_bytes(path, data)
    return path


def _zip_listing(source: str | os.PathLike | bytes) -> Listing:
    extraction = extract_zip(source, data_dir() / "uploads")
    listing = list_folder(extraction.folder)
    listing.skipped.extend(extraction.skipped)
    return listing


def _listing(source: str | os.PathLike | bytes) -> tuple[Listing, str]:
    if isinstance(source, (bytes, bytearray)):
        return _zip_listing(source), "uploaded zip"
    if str(source) == DEMO:
        return list_folder(demo_folder()), DEMO
    if str(source).startswith(KAGGLE_PREFIX):
        return list_folder(kaggle_source.download(str(source)[len(KAGGLE_PREFIX):])), str(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"{path} does not exist. Give a folder, a CSV file, a zip file or 'demo'.")
    if path.is_file() and path.suffix.lower() == ".zip":
        return _zip_listing(path), str(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return list_csv(path), str(path)
    if path.is_dir():
        return list_folder(path), str(path)
    raise DatasetError(f"{path.name} is neither a folder, a CSV nor a zip file.")


def _nothing_found(listing: Listing) -> DatasetError:
    reasons = pd.Series([r for _, r in listing.skipped]).value_counts()
    found = "; ".join(f"{n} {reason}" for reason, n in reasons.items()) or "no files at all"
    return DatasetError(
        f"No readable images in {listing.root}. Found: {found}. Expected class folders of images "
        "(ROOT/<class>/<image>), train/val/test folders of class folders, or a CSV of path,label."
    )


def open_dataset(
    source: str | os.PathLike | bytes,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    progress: Progress | None = None,
) -> Dataset:
    """Scan a source (folder, CSV, zip path or bytes, 'demo' or 'kaggle:owner/dataset') into a Dataset.

    Sources without their own train/val/test split get a stratified seeded one (`fractions`).
    """
    listing, name = _listing(source)
    if not listing.rows:
        raise _nothing_found(listing)
    rows = pd.DataFrame(listing.rows, columns=["path", "label", "split"])
    facts, failures = scan_files(rows["path"].tolist(), progress=progress, known=listing.stats)
    table = rows.merge(facts, on="path", how="inner")[TABLE_COLUMNS]
    skipped = pd.DataFrame(listing.skipped + list(failures.itertuples(index=False, name=None)), columns=["path", "reason"])
    if table.empty:
        raise _nothing_found(Listing(skipped=list(skipped.itertuples(index=False, name=None)), root=listing.root))
    classes = sort_labels(table["label"].unique())
    if len(classes) < 2:
        raise DatasetError(
            f"Only one class ('{classes[0]}', {len(table)} images) was found in {listing.root}. "
            "A classifier needs at least two class folders (e.g. NORMAL and PNEUMONIA)."
        )
    if not listing.has_split:
        table = assign_split(table, fractions, seed)
    return Dataset(table.reset_index(drop=True), skipped, name, str(listing.root), listing.has_split)


def prepare(
    dataset: Dataset,
    max_per_class: int | None = None,
    min_per_class: int | None = None,
    resplit: bool = False,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> tuple[Dataset, list[str]]:
    """Trim, then (re-)split: the dataset the Train page will use, and the classes trimming dropped.

    The source's own split is kept unless resplit is asked for; a source without one was split
    when opened and is re-split only with the given fractions and seed.
    """
    table, dropped = trim(dataset.table, max_per_class, min_per_class, seed)
    if table["label"].nunique() < 2:
        raise DatasetError("Trimming would leave fewer than two classes. Lower the minimum per class.")
    keep_source_split = dataset.split_from_source and not resplit
    if not keep_source_split:
        table = assign_split(table, fractions, seed)
    return replace(dataset, table=table.reset_index(drop=True), split_from_source=keep_source_split), dropped


def sample_rows(table: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Up to per_class rows of each class, seeded (the sample grid; a new seed is a new shuffle)."""
    parts = [g.sample(n=min(len(g), per_class), random_state=seed) for _, g in table.groupby("label", sort=False)]
    order = {label: i for i, label in enumerate(sort_labels(table["label"].unique()))}
    return pd.concat(parts).sort_values("label", key=lambda s: s.map(order), kind="stable")
