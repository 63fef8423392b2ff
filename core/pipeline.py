"""The one input pipeline: a dataset table -> batches of (images 0-255 float32, integer labels).

Plain 8-bit JPEG/PNG/BMP/GIF decode in TensorFlow (parallel, no GIL); everything else (DICOM, TIFF,
WebP, 16-bit, palette, CMYK, EXIF-rotated) goes through the project's one image reader, so the model
sees exactly what the Predict page shows. Resized images are cached as uint8; augmentation
(`core.augment`, Keras preprocessing layers) runs on batches of the training split only. Models
normalise inside their own graph, so every pipeline feeds raw 0-255 values.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import tensorflow as tf

from core.augment import AugmentConfig, build_augmentation
from core.image_reader import read_image

_TF_FORMATS = {"JPEG", "PNG", "BMP", "GIF"}
_TF_MODES = {"L", "RGB"}


@dataclass(frozen=True)
class PipelineConfig:
    image_size: int = 128
    channels: int = 1  # 1 grayscale (X-rays, scratch models) or 3 (ImageNet backbones)
    batch_size: int = 16  # more steps per epoch: the demo set (210 training images) learns in 2-5 epochs, not 5-8
    cache: bool = True
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# A training job keeps its decoded images in memory only while they take at most this share of the
# memory available when it starts; the model, TensorFlow and the rest of the machine need the remainder.
MEMORY_SHARE = 0.5


def available_memory() -> int:
    """Bytes of memory available to new allocations now (Linux MemAvailable; else free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class CachePlan:
    """Whether a job's images are decoded once and kept in memory, or streamed from disk every epoch."""

    in_memory: bool
    images: int
    decoded_bytes: int
    available_bytes: int

    def message(self) -> str:
        size = f"{self.images:,} images decoded take {self.decoded_bytes / 2**30:.2f} GiB"
        room = f"{self.available_bytes / 2**30:.1f} GiB of memory is available"
        if self.in_memory:
            return f"input: kept in memory after the first epoch ({size}; {room})"
        return (f"input: streamed from disk every epoch, no in-memory cache ({size}, more than {MEMORY_SHARE:.0%} of the "
                f"{room.replace(' is available', ' available')})")


def cache_plan(images: int, config: PipelineConfig, available: int | None = None) -> CachePlan:
    """Decide from the decoded size (uint8, image_size^2 x channels each) and the free memory."""
    decoded = images * config.image_size * config.image_size * config.channels
    available = available_memory() if available is None else available
    return CachePlan(config.cache and decoded <= MEMORY_SHARE * available, images, decoded, available)


def tf_decodable(table: pd.DataFrame) -> np.ndarray:
    """Rows TensorFlow can decode to the same pixels as `read_image` (8-bit, no EXIF rotation)."""
    orientation = table["orientation"] if "orientation" in table else 1
    return (table["format"].isin(_TF_FORMATS) & table["mode"].isin(_TF_MODES) & (orientation == 1)).to_numpy()


def _to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    have = image.shape[-1]
    if have == channels or have is None:
        return image
    return tf.image.rgb_to_grayscale(image) if channels == 1 else tf.image.grayscale_to_rgb(image)


def _resize(image: tf.Tensor, config: PipelineConfig) -> tf.Tensor:
    image = _to_channels(image, config.channels)
    size = config.image_size

    def resized() -> tf.Tensor:
        out = tf.image.resize(image, (size, size), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    same = tf.logical_and(tf.shape(image)[0] == size, tf.shape(image)[1] == size)
    return tf.cond(same, lambda: tf.ensure_shape(tf.cast(image, tf.uint8), [size, size, config.channels]), resized)


def _read_with_reader(path: tf.Tensor) -> np.ndarray:
    pixels = read_image(path.numpy().decode()).pixels
    return pixels if pixels.shape[-1] == 3 else np.repeat(pixels, 3, axis=-1)


def prepare_pixels(pixels: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """One reader-decoded image (uint8 H, W, 1|3) -> float32 (S, S, C) exactly as the pipeline's reader
    path makes it, so single images (Predict) and batches (training, Evaluate) get the same input."""
    rgb = pixels if pixels.shape[-1] == 3 else np.repeat(pixels, 3, axis=-1)
    return np.asarray(_resize(tf.convert_to_tensor(rgb, tf.uint8), config), np.float32)


def _decode(path: tf.Tensor, fast: tf.Tensor, config: PipelineConfig) -> tf.Tensor:
    def with_tf() -> tf.Tensor:
        # decoding straight to the target channels lets libjpeg skip the colour conversion
        image = tf.io.decode_image(tf.io.read_file(path), channels=config.channels, expand_animations=False)
        return _resize(image, config)

    def with_reader() -> tf.Tensor:
        image = tf.py_function(_read_with_reader, [path], tf.uint8)
        image.set_shape([None, None, 3])
        return _resize(image, config)

    return tf.cond(fast, with_tf, with_reader)


def make_dataset(
    table: pd.DataFrame,
    classes: list[str],
    config: PipelineConfig,
    augment: AugmentConfig | None = None,
    shuffle: bool = False,
) -> tf.data.Dataset:
    """Batches of (uint8->float32 images (B, S, S, C), int32 class indices) for the table's rows."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = set(table["label"]) - set(index)
    if unknown:
        raise ValueError(f"Labels not among the model's classes: {sorted(unknown)}.")
    labels = table["label"].map(index).to_numpy(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((table["path"].to_numpy(str), tf_decodable(table), labels))
    ds = ds.map(lambda p, f, y: (_decode(p, f, config), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if config.cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(min(len(table), 10_000), seed=config.seed, reshuffle_each_iteration=True)
    layers = build_augmentation(augment, seed=config.seed) if augment is not None else None

    def to_float(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.cast(x, tf.float32)  # one stage with the augmentation: no extra float copy of every batch
        return (layers(x, training=True) if layers is not None else x), y

    ds = ds.batch(config.batch_size).map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    # A private pool sized to the cores: with TensorFlow's shared pool the input threads fought the
    # training ops for 2 cores and a SmallNet epoch took 21 s instead of 13 s (bench/pipeline_bench.py).
    options = tf.data.Options()
    options.threading.private_threadpool_size = os.cpu_count() or 1
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
