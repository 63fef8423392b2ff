"""Dataset scan speed: header-only cached scan vs decoding every image (the naive way).

Usage: python bench/scan_bench.py [SOURCE]   (default ../shared/data/chest_xray/train)
Prints cold and warm `open_dataset` times, a full-decode baseline (cv2.imread of every file) in the
same run, and the ratios. The cold run uses an empty scan cache in a temp folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "train"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=str(DEFAULT))
    parser.add_argument("--warm-repeats", type=int, default=3)
    args = parser.parse_args()
    if not Path(args.source).exists():
        print(f"skip: {args.source} not found")
        return 0
    os.environ["MEDIMAGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="scan-bench-")
    from core.dataset import open_dataset
    from core.file_cache import clear_all as clear_cache

    clear_cache()
    start = time.perf_counter()
    ds = open_dataset(args.source)
    cold = time.perf_counter() - start
    warm = min(_timed(lambda: open_dataset(args.source)) for _ in range(args.warm_repeats))

    start = time.perf_counter()
    for path in ds.table["path"]:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        _ = img.shape
    decode = time.perf_counter() - start

    n = len(ds.table)
    print(f"images: {n:,}  classes: {ds.table['label'].value_counts().to_dict()}")
    print(f"{'full decode (cv2.imread, naive)':34s} {decode:7.2f} s  ({n / decode:8.0f} img/s)")
    print(f"{'open_dataset cold (headers)':34s} {cold:7.2f} s  ({n / cold:8.0f} img/s)  {decode / cold:6.1f}x faster")
    print(f"{'open_dataset warm (cache)':34s} {warm:7.2f} s  ({n / warm:8.0f} img/s)  {decode / warm:6.1f}x faster")
    return 0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
