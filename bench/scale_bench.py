"""Hospital-size datasets: open, duplicate search and training input on a generated 100k archive,
beside the same figures on the shared 5,216-image chest_xray set.

Usage: python bench/scale_bench.py [--images 100000] [--size 64] [--archive DIR] [--skip-naive]
Builds the archive (PNG and DICOM, class folders and labels.csv) in a temp folder unless --archive
names one built before, then prints:
- open_dataset cold (empty scan cache, files in the OS page cache), the very first open (files read
  from disk too), and warm, from the folder and from the CSV, with the growth of this process' peak
  memory (the scan streams: workers read headers, nothing decoded is kept);
- hashing time, then the near-duplicate search at radius 10 and 30 with faiss' binary indexes,
  pairs found and planted pairs recovered, against the all-pairs numpy comparison it replaced
  (measured on 20,000 hashes and scaled by n^2: the full 100k run takes ~5 minutes);
- the training input streaming from disk (no cache) in img/s, against reading images one by one
  in Python (the naive way), and the cache decision a job would log.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
CHEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "train"


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def all_pairs(codes: np.ndarray, max_distance: int, chunk: int = 256) -> int:
    """The comparison faiss replaced: every pair, XOR + popcount, in numpy chunks; returns the pair count."""
    words = codes.view(np.uint64)
    found = 0
    for start in range(0, len(words), chunk):
        dist = np.bitwise_count(words[start : start + chunk, None, :] ^ words[None, :, :]).sum(axis=-1)
        i, j = np.nonzero(dist <= max_distance)
        found += int((j > i + start).sum())
    return found


def open_times(source: Path, label: str) -> None:
    from core.dataset import open_dataset
    from core.file_cache import clear_all

    clear_all()
    before = _peak_mb()
    first, ds = _timed(lambda: open_dataset(source))
    grew = _peak_mb() - before
    clear_all()
    cold = _timed(lambda: open_dataset(source))[0]
    warm = min(_timed(lambda: open_dataset(source))[0] for _ in range(3))
    print(f"  {label:30s} {len(ds.table):>7,} images  cold {cold:6.2f} s (first ever {first:5.2f} s)  warm {warm:5.2f} s  "
          f"peak memory +{grew:.0f} MB")


def duplicates(table, planted: set[tuple[str, str]] | None, naive: bool, root: Path | None = None) -> None:
    from core import duplicates as dup

    took, hashed = _timed(lambda: dup.image_hashes(table))
    print(f"  hashing {len(hashed):,} images (cold, worker processes): {took:.1f} s ({len(hashed) / took:,.0f} img/s)")
    codes = dup._codes(hashed["phash"])
    for radius in (10, 30):
        took, pairs = _timed(lambda radius=radius: dup.find_duplicates(hashed, radius))
        line = f"  radius {radius:2d}/256: faiss {took:6.2f} s, {len(pairs):,} pairs"
        if planted is not None and root is not None:
            got = {(os.path.relpath(a, root), os.path.relpath(b, root)) for a, b in zip(pairs["path_a"], pairs["path_b"], strict=True)}
            got |= {(b, a) for a, b in got}
            line += f", planted near-duplicates found {len(planted & got):,}/{len(planted):,}"
        if naive:
            sample = min(len(codes), 20_000)
            took_naive, _ = _timed(lambda radius=radius, sample=sample: all_pairs(codes[:sample], radius))
            scaled = took_naive * (len(codes) / sample) ** 2
            kind = "measured" if sample == len(codes) else f"{sample:,} measured, scaled by n^2"
            line += f"; all-pairs numpy {scaled:7.1f} s ({kind}) -> {scaled / took:5.0f}x"
        print(line)


def pipeline(table, naive: bool, batches: int = 150) -> None:
    import cv2

    from core.image_reader import read_image
    from core.pipeline import PipelineConfig, cache_plan, make_dataset

    config = PipelineConfig(image_size=128, channels=1, batch_size=64, cache=False)
    rows = table.sample(frac=1.0, random_state=0)
    classes = sorted(table["label"].unique())
    data = make_dataset(rows, classes, config, shuffle=False)
    iterator = iter(data)
    next(iterator)  # start-up is not throughput
    batches = min(batches, len(rows) // config.batch_size - 1)
    took, _ = _timed(lambda: [next(iterator) for _ in range(batches)])
    streamed = batches * config.batch_size / took
    line = f"  tf.data streaming from disk (128 px, no cache): {streamed:,.0f} img/s"
    if naive:
        paths = rows["path"].head(1_000).tolist()

        def one_by_one():
            return [cv2.resize(read_image(p).pixels, (128, 128), interpolation=cv2.INTER_AREA) for p in paths]

        took_naive, _ = _timed(one_by_one)
        line += f"; one by one in Python {len(paths) / took_naive:,.0f} img/s -> {streamed / (len(paths) / took_naive):.1f}x"
    print(line)
    for size, channels in ((128, 1), (224, 3)):
        print(f"  a job at {size} px x {channels}: "
              + cache_plan(len(table), PipelineConfig(image_size=size, channels=channels)).message())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64, help="side of the generated images in px")
    parser.add_argument("--archive", default=None, help="an archive folder built before (skips generation)")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive baselines")
    args = parser.parse_args()
    os.environ["MEDIMAGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="scale-bench-")
    from core.archive import CSV_NAME, IMAGES_DIR, ArchiveSpec, generate_archive, planted_pairs
    from core.dataset import open_dataset

    spec = ArchiveSpec(images=args.images, size=args.size)
    if args.archive and (Path(args.archive) / CSV_NAME).exists():
        root = Path(args.archive)
        print(f"archive: {root} (built before)")
    else:
        root = Path(args.archive) if args.archive else Path(tempfile.mkdtemp(prefix="scale-archive-"))
        took, _ = _timed(lambda: generate_archive(root, spec))
        print(f"archive: {args.images:,} images of {args.size} px ({spec.dicom_share:.0%} DICOM) generated in {took:.0f} s at {root}")
    print(f"machine: {os.cpu_count()} cores")

    print("\nopen_dataset")
    if CHEST.is_dir():
        open_times(CHEST, "chest_xray/train (folders)")
    open_times(root / IMAGES_DIR, "archive (class folders)")
    open_times(root / CSV_NAME, "archive (labels.csv)")

    print("\nnear-duplicates (256-bit pHash)")
    if CHEST.is_dir():
        print(" chest_xray/train:")
        duplicates(open_dataset(CHEST).table, None, not args.skip_naive)
    print(" archive:")
    duplicates(open_dataset(root / IMAGES_DIR).table, planted_pairs(spec), not args.skip_naive, root / IMAGES_DIR)

    print("\ntraining input")
    if CHEST.is_dir():
        print(" chest_xray/train:")
        pipeline(open_dataset(CHEST).table, not args.skip_naive)
    print(" archive:")
    pipeline(open_dataset(root / IMAGES_DIR).table, not args.skip_naive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
