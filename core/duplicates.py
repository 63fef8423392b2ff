"""Exact and near duplicates, within and across splits: the leakage a random split hides.

Each image gets a SHA-256 of its bytes (exact copies) and a 256-bit perceptual hash (ImageHash's
pHash with hash_size 16: the same picture re-saved, resized or slightly re-exposed). The usual
64-bit pHash is too coarse for radiographs: every chest X-ray looks alike at 8x8 DCT terms, and on
the shared chest_xray set it puts 132 pairs of *different* images within 4 bits of each other
among just 1,500 images; at 256 bits re-encoded copies stay within 6 bits while no two different
images come within 20 (bench/duplicates_bench.py). Hashes are cached per file; pairs are found with
faiss' exact binary-code indexes, which scale to hospital archives (100k hashes in 1-5 s).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import faiss
import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from core.errors import ImageReadError
from core.file_cache import FileCache, Progress
from core.image_reader import read_image

HASH_SIZE = 16  # pHash of 16x16 DCT terms = 256 bits
HASH_BITS = HASH_SIZE * HASH_SIZE
DEFAULT_MAX_DISTANCE = 10  # of 256 bits; 0 = identical pHash
_MULTI_HASH_TABLES = 8
_HASH_SIDE = 4 * HASH_SIZE  # pHash resizes to 64x64 anyway: JPEGs can decode at a reduced scale
_HASHES = FileCache("hashes", (("sha256", "TEXT"), ("phash", "TEXT"), ("error", "TEXT")))
PAIR_COLUMNS = ["path_a", "path_b", "label_a", "label_b", "split_a", "split_b", "distance", "kind", "cross_split"]


def _hash_one(path: str) -> tuple[str, str, str | None]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        sha = hashlib.sha256(data).hexdigest()
        pixels = read_image(data, max_side=_HASH_SIDE).pixels
        gray = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).convert("L")
        return sha, str(imagehash.phash(gray, hash_size=HASH_SIZE)), None
    except (ImageReadError, OSError) as exc:
        return "", "", str(exc)


def image_hashes(table: pd.DataFrame, progress: Progress | None = None) -> pd.DataFrame:
    """The table's rows with `sha256` and `phash` (hex) columns; unreadable files are dropped."""
    results, _, _ = _HASHES.compute(table["path"].tolist(), _hash_one, progress)
    hashed = table.assign(
        sha256=[results.get(p, ("",))[0] for p in table["path"]],
        phash=[results.get(p, ("", ""))[1] for p in table["path"]],
    )
    return hashed[hashed["phash"] != ""].reset_index(drop=True)


def _codes(phashes: pd.Series) -> np.ndarray:
    """Hex pHashes as an (N, 32) uint8 array: faiss' layout for 256-bit binary codes."""
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in phashes), dtype=np.uint8)
    return raw.reshape(len(phashes), HASH_BITS // 8)


def _index(max_distance: int) -> faiss.IndexBinary:
    """The faster exact index for this radius, by measurement (bench/scale_bench.py, 100k hashes):
    multi-index hashing (8 tables of 32 bits) checks only hashes that agree within one bit on some
    32-bit part, which every pair within 15 bits does (pigeonhole): 1.3 s at radius 10. From 16 bits
    on it must probe 500+ buckets a table (162 s at radius 30), and the flat index, which compares
    all pairs with hardware popcount, wins at any radius: 4.8 s. All-pairs in numpy took 320 s."""
    if max_distance < 2 * _MULTI_HASH_TABLES:
        index = faiss.IndexBinaryMultiHash(HASH_BITS, _MULTI_HASH_TABLES, HASH_BITS // _MULTI_HASH_TABLES)
        index.nflip = int(max_distance) // _MULTI_HASH_TABLES
        return index
    return faiss.IndexBinaryFlat(HASH_BITS)


def _near_pairs(codes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i < j) whose codes differ in at most max_distance bits, with the distance."""
    if len(codes) < 2:
        return np.array([], int), np.array([], int), np.array([], int)
    index = _index(max_distance)
    index.add(codes)
    lims, distances, ids = index.range_search(codes, int(max_distance) + 1)  # faiss keeps distances < radius
    queries = np.repeat(np.arange(len(codes)), np.diff(lims).astype(np.int64))
    keep = ids > queries
    return queries[keep], ids[keep].astype(np.int64), distances[keep].astype(np.int64)


def find_duplicates(hashed: pd.DataFrame, max_distance: int = DEFAULT_MAX_DISTANCE) -> pd.DataFrame:
    """All pairs that are byte-identical ('exact') or within max_distance pHash bits ('near')."""
    if not 0 <= max_distance <= HASH_BITS:
        raise ValueError(f"The Hamming distance threshold must be between 0 and {HASH_BITS} bits.")
    i, j, dist = _near_pairs(_codes(hashed["phash"]), max_distance)
    sha = hashed["sha256"].to_numpy()
    kind = np.where(sha[i] == sha[j], "exact", "near")
    a, b = hashed.iloc[i].reset_index(drop=True), hashed.iloc[j].reset_index(drop=True)
    pairs = pd.DataFrame({
        "path_a": a["path"], "path_b": b["path"], "label_a": a["label"], "label_b": b["label"],
        "split_a": a["split"], "split_b": b["split"], "distance": dist.astype(int), "kind": kind,
    })
    pairs["cross_split"] = pairs["split_a"] != pairs["split_b"]
    return pairs.sort_values(["distance", "path_a"], ignore_index=True)[PAIR_COLUMNS]


@dataclass(frozen=True)
class LeakageSummary:
    exact_pairs: int
    near_pairs: int
    cross_split_pairs: int
    conflicting_labels: int  # pairs of (near) identical images with different labels
    test_with_train_twin: int  # test images that have a (near) twin in train
    val_with_train_twin: int


def _with_twin(pairs: pd.DataFrame, split: str, other: str) -> int:
    left = pairs.loc[(pairs["split_a"] == split) & (pairs["split_b"] == other), "path_a"]
    right = pairs.loc[(pairs["split_b"] == split) & (pairs["split_a"] == other), "path_b"]
    return int(pd.concat([left, right]).nunique())


def summarize(pairs: pd.DataFrame) -> LeakageSummary:
    return LeakageSummary(
        exact_pairs=int((pairs["kind"] == "exact").sum()),
        near_pairs=int((pairs["kind"] == "near").sum()),
        cross_split_pairs=int(pairs["cross_split"].sum()),
        conflicting_labels=int((pairs["label_a"] != pairs["label_b"]).sum()),
        test_with_train_twin=_with_twin(pairs, "test", "train"),
        val_with_train_twin=_with_twin(pairs, "val", "train"),
    )
