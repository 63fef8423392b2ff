"""Duplicate finding speed: cached reduced-size hashing vs hashing full decodes (the naive way).

Usage: python bench/duplicates_bench.py [SOURCE] [--fullsize N]   (default ../shared/data/chest_xray/train)
Prints cold and warm hashing times, the naive baseline (full-size PIL decode + pHash per image,
no cache) in the same run and the ratio, then the pair counts by Hamming distance. The shared
images are 224 px; --fullsize N also runs the comparison on N of them upscaled to 2048 px JPEGs,
the size of real radiographs, where decoding dominates.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "train"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=str(DEFAULT))
    parser.add_argument("--fullsize", type=int, default=0, help="also compare on N images upscaled to 2048 px")
    args = parser.parse_args()
    if args.source != "demo" and not Path(args.source).exists():
        print(f"skip: {args.source} not found")
        return 0
    os.environ["MEDIMAGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="dup-bench-")
    from core.dataset import open_dataset

    table = open_dataset(args.source).table
    compare(table)
    if args.fullsize:
        print(f"\n{args.fullsize} images upscaled to 2048x2048 JPEG (q92):")
        compare(open_dataset(_upscaled(table, args.fullsize)).table)
    return 0


def _upscaled(table, n: int) -> str:
    import cv2

    folder = Path(tempfile.mkdtemp(prefix="dup-bench-full-"))
    for path, label in table.sample(n, random_state=0)[["path", "label"]].itertuples(index=False):
        (folder / label).mkdir(exist_ok=True)
        big = cv2.resize(cv2.imread(path, cv2.IMREAD_GRAYSCALE), (2048, 2048), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / label / Path(path).name), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return str(folder)


def compare(table) -> None:
    from core import duplicates

    start = time.perf_counter()
    hashed = duplicates.image_hashes(table)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    duplicates.image_hashes(table)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    pairs = duplicates.find_duplicates(hashed, max_distance=30)
    compare = time.perf_counter() - start

    paths = table["path"].tolist()
    start = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            imagehash.phash(im.convert("L"), hash_size=16)
    naive = time.perf_counter() - start

    n = len(table)
    print(f"images: {n:,}")
    print(f"{'naive: full decode + pHash, no cache':40s} {naive:7.2f} s")
    print(f"{'image_hashes cold (reduced decode)':40s} {cold:7.2f} s   {naive / cold:6.1f}x faster")
    print(f"{'image_hashes warm (cache)':40s} {warm:7.2f} s   {naive / warm:6.1f}x faster")
    print(f"{'all-pairs comparison (XOR + popcount)':40s} {compare:7.2f} s   ({n * (n - 1) // 2:,} pairs)")
    counts = np.bincount(pairs["distance"], minlength=31)
    print("pairs by distance (bits): " + ", ".join(f"{d}: {c}" for d, c in enumerate(counts)))
    print(f"exact (same bytes): {(pairs['kind'] == 'exact').sum()}, cross-split at <= {duplicates.DEFAULT_MAX_DISTANCE}: "
          f"{int(pairs.loc[pairs['distance'] <= duplicates.DEFAULT_MAX_DISTANCE, 'cross_split'].sum())}")


if __name__ == "__main__":
    sys.exit(main())
