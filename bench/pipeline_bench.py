"""Input pipeline and training speed: core.pipeline vs the seeds' ImageDataGenerator, in one run.

Usage: python bench/pipeline_bench.py [SOURCE] [--size 224] [--limit N] [--skip-fit]
(default SOURCE ../shared/data/chest_xray/train). Same images, size, batch and augmentation
(rotation, shifts, zoom, horizontal flip, brightness) for both:
1. one pass over the training images: images/s and the ratio (goal >= 5x);
2. one SmallNet epoch: ours (tf.data + augmentation layers) vs ImageDataGenerator.flow_from_directory
   feeding model.fit (goal >= 2x).
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

    print(f"images: {n:,} at {args.size}px, batch {args.batch}, 2 cores")
    start = time.perf_counter()
    for _ in make_dataset(table, classes, config, augment, shuffle=True):
        pass
    ours = time.perf_counter() - start
    it = legacy()
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    naive = time.perf_counter() - start
    print(f"{'input pass, ImageDataGenerator (naive)':44s} {naive:7.1f} s  {n / naive:7.0f} img/s")
    print(f"{'input pass, core.pipeline':44s} {ours:7.1f} s  {n / ours:7.0f} img/s  {naive / ours:5.1f}x")

    if not args.skip_fit:
        model_config = ModelConfig(name="smallnet", image_size=args.size, channels=1)
        train_config = TrainConfig(model=model_config)

        def epoch(data, **kw) -> float:
            keras.utils.set_random_seed(0)
            model = build_model(model_config)
            _compile(model, train_config)
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0, **kw)
            return time.perf_counter() - start

        ours_fit = epoch(make_dataset(table, classes, config, augment, shuffle=True))
        it = legacy()
        naive_fit = epoch((batch for batch in it), steps_per_epoch=steps)
        print(f"{'SmallNet epoch, ImageDataGenerator + fit':44s} {naive_fit:7.1f} s")
        print(f"{'SmallNet epoch, core.pipeline + fit':44s} {ours_fit:7.1f} s  {naive_fit / ours_fit:5.1f}x")
    print(f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.limit:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
