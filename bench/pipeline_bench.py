"""Input pipeline and training speed: core.pipeline vs the seeds' ImageDataGenerator, in one run.

Usage: python bench/pipeline_bench.py [SOURCE] [--size 224] [--limit N] [--skip-fit]
(default SOURCE ../shared/data/chest_xray/train). Same images, size, batch and augmentation
(rotation, shifts, zoom, horizontal flip, brightness) for both:
1. one pass over the training images: images/s and the ratio (goal >= 5x), for the first epoch
   (decode + augment) and for later ones (decoded images cached, augmentation as every epoch);
2. one SmallNet epoch: ImageDataGenerator.flow_from_directory feeding model.fit in float32 (the seeds)
   vs ours (tf.data + augmentation layers) in float32 and in the precision a job picks on this machine
   (bfloat16 on a CPU with native bfloat16, float16 on a GPU; goal >= 2x).
Peak memory (max RSS) is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "train"


def _subset_folder(table, limit: int) -> str:
    """flow_from_directory needs a folder: copy a stratified subset when --limit is given."""
    folder = Path(tempfile.mkdtemp(prefix="pipe-bench-"))
    sample = table.groupby("label").sample(frac=limit / len(table), random_state=0)
    for path, label in sample[["path", "label"]].itertuples(index=False):
        (folder / label).mkdir(exist_ok=True)
        shutil.copy(path, folder / label / Path(path).name)
    return str(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=str(DEFAULT))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="use a stratified subset of N images")
    parser.add_argument("--skip-fit", action="store_true")
    args = parser.parse_args()
    if not Path(args.source).is_dir():
        print(f"skip: {args.source} not found")
        return 0
    os.environ.setdefault("MEDIMAGE_CACHE_DIR", tempfile.mkdtemp(prefix="pipe-bench-cache-"))

    import keras
    from tf_keras.preprocessing.image import ImageDataGenerator

    from core.augment import AugmentConfig
    from core.dataset import open_dataset
    from core.models import ModelConfig, build_model
    from core.pipeline import PipelineConfig, make_dataset
    from core.train import TrainConfig, _compile

    folder = args.source
    table = open_dataset(folder).table
    if args.limit:
        folder = _subset_folder(table, args.limit)
        table = open_dataset(folder).table
    table = table.assign(split="train")
    classes = sorted(table["label"].unique())
    n, steps = len(table), -(-len(table) // args.batch)
    augment = AugmentConfig(flip="horizontal", rotation=0.03, translation=0.05, zoom=0.1, brightness=0.1, contrast=0.0)
    config = PipelineConfig(image_size=args.size, channels=1, batch_size=args.batch, cache=False)
    generator = ImageDataGenerator(
        rotation_range=augment.rotation * 360, width_shift_range=augment.translation, height_shift_range=augment.translation,
        zoom_range=augment.zoom, horizontal_flip=True, brightness_range=(1 - augment.brightness, 1 + augment.brightness),
    )

    def legacy():
        return generator.flow_from_directory(folder, target_size=(args.size, args.size), color_mode="grayscale",
                                             batch_size=args.batch, class_mode="binary", seed=0)

    print(f"images: {n:,} at {args.size}px, batch {args.batch}, {os.cpu_count()} cores")
    for path in table["path"]:  # both read from the page cache: whoever went first would pay the disk
        Path(path).read_bytes()

    def passes(data, count: int) -> list[float]:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            for _ in data:
                pass
            times.append(time.perf_counter() - start)
        return times

    def legacy_pass() -> float:
        it = legacy()
        start = time.perf_counter()
        for _ in range(steps):
            next(it)
        return time.perf_counter() - start

    # best of several passes each: this 2-core machine's timings vary by up to 2x from one pass to the next
    naive = min(legacy_pass() for _ in range(2))
    ours = min(passes(make_dataset(table, classes, config, augment, shuffle=True), 3))
    # training's own setting: decoded images cached in memory after the first epoch, augmentation every epoch
    cached = min(passes(make_dataset(table, classes, replace(config, cache=True), augment, shuffle=True), 4)[1:])
    print(f"{'input pass, ImageDataGenerator (naive)':48s} {naive:7.1f} s  {n / naive:7.0f} img/s")
    print(f"{'input pass, core.pipeline, decode + augment':48s} {ours:7.1f} s  {n / ours:7.0f} img/s  {naive / ours:5.1f}x")
    print(f"{'input pass, core.pipeline, epoch 2+ (cached)':48s} {cached:7.1f} s  {n / cached:7.0f} img/s  {naive / cached:5.1f}x")

    if not args.skip_fit:
        from core.train import precision_for

        model_config = ModelConfig(name="smallnet", image_size=args.size, channels=1)
        train_config = TrainConfig(model=model_config)

        def epoch(data, policy: str = "float32", **kw) -> float:
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(0)
            model = build_model(model_config)
            _compile(model, train_config, steps)
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0, **kw)
            return time.perf_counter() - start

        it = legacy()
        naive_fit = epoch((batch for batch in it), steps_per_epoch=steps)  # the seeds: float32
        ours_fp32 = epoch(make_dataset(table, classes, config, augment, shuffle=True))
        policy = precision_for("auto", "smallnet")  # what a SmallNet job on this machine uses
        ours_fit = epoch(make_dataset(table, classes, config, augment, shuffle=True), policy)
        print(f"{'SmallNet epoch, ImageDataGenerator + fit':48s} {naive_fit:7.1f} s")
        print(f"{'SmallNet epoch, core.pipeline + fit, float32':48s} {ours_fp32:7.1f} s  {naive_fit / ours_fp32:5.1f}x")
        print(f"{'SmallNet epoch, core.pipeline + fit, ' + policy:48s} {ours_fit:7.1f} s  {naive_fit / ours_fit:5.1f}x"
              f"  (the job's precision here: {policy})")
    print(f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.limit:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
