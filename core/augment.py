"""Training-time augmentation as Keras preprocessing layers: the one definition the training
pipeline and the Dataset page's preview both use, so what the user previews is what the model sees.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation; 0 (or flip 'none') switches it off.

    rotation: fraction of a full turn (0.05 = up to +/-18 degrees); translation, zoom, shear: fraction
    of the image size; contrast, brightness: fraction of the value range; gamma: log-range of the
    exposure curve; noise: standard deviation / 255. Gamma and noise mimic other scanners' exposure
    and detector noise, which is what differs between hospitals. Defaults are mild, as
    chest X-rays have a canonical orientation: no vertical flips, small rotations.
    """

    flip: str = "horizontal"
    rotation: float = 0.03
    translation: float = 0.05
    zoom: float = 0.10
    shear: float = 0.0
    contrast: float = 0.10
    brightness: float = 0.10
    gamma: float = 0.0  # exposure curve: gamma drawn from [exp(-g), exp(+g)] per image
    noise: float = 0.0  # Gaussian noise, standard deviation as a fraction of 255

    def __post_init__(self) -> None:
        if self.flip not in FLIP_MODES:
            raise ValueError(f"flip must be one of {', '.join(FLIP_MODES)}; got '{self.flip}'.")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "flip" and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{f.name} must be between 0 and 1; got {value}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@functools.cache
def _random_affine_class():
    """Defined lazily so importing this module does not import Keras (the Dataset page stays light)."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="medimage")
    class RandomAffine(keras.layers.Layer):
        """Flips, rotation, translation, zoom and shear drawn per image and applied as ONE affine resampling.

        Keras' RandomRotation, RandomTranslation, RandomZoom and RandomShear each resample the image;
        chained they cost four interpolations (and four blurs). Composing the matrices first is about
        3x cheaper on a CPU and sharper; a flip folded into the matrix costs nothing, where RandomFlip
        added 40% to the augmentation of a batch (bench/pipeline_bench.py). The ranges mean what they
        mean for those layers; flip is one of FLIP_MODES, each direction mirrored with probability 1/2.
        """

        def __init__(self, rotation=0.0, translation=0.0, zoom=0.0, shear=0.0, flip="none", seed=None, **kwargs):
            super().__init__(**kwargs)
            self.rotation, self.translation, self.zoom, self.shear, self.seed = rotation, translation, zoom, shear, seed
            self.flip = flip
            self.seed_generator = keras.random.SeedGenerator(seed)

        def _sign(self, n, on):
            """-1 (mirror) or +1 per image when this direction flips, else +1."""
            if not on:
                return ops.ones((n,))
            return ops.where(keras.random.uniform((n,), seed=self.seed_generator) < 0.5, -1.0, 1.0)

        def _uniform(self, n, limit):
            return keras.random.uniform((n,), -limit, limit, seed=self.seed_generator)

        def call(self, images, training=True):
            if not training:
                return images
            shape = ops.shape(images)
            n, h, w = shape[0], ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
            angle = self._uniform(n, self.rotation) * 2.0 * np.pi
            scale = 1.0 + self._uniform(n, self.zoom)
            shear = self._uniform(n, self.shear)
            tx, ty = self._uniform(n, self.translation) * w, self._uniform(n, self.translation) * h
            sx, sy = self._sign(n, "horizontal" in self.flip), self._sign(n, "vertical" in self.flip)
            cos, sin = ops.cos(angle), ops.sin(angle)
            # output pixel -> input pixel: scale * R(angle) @ Shear @ Flip(sx, sy) about the centre, then shifted
            a00, a01 = scale * cos * sx, scale * (cos * shear - sin) * sy
            a10, a11 = scale * sin * sx, scale * (sin * shear + cos) * sy
            cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
            zeros = ops.zeros_like(angle)
            transform = ops.stack(
                [a00, a01, cx - a00 * cx - a01 * cy + tx, a10, a11, cy - a10 * cx - a11 * cy + ty, zeros, zeros], axis=1
            )
            return ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "rotation": self.rotation, "translation": self.translation,
                    "zoom": self.zoom, "shear": self.shear, "flip": self.flip, "seed": self.seed}

    return RandomAffine


@functools.cache
def _random_exposure_class():
    import keras

    @keras.saving.register_keras_serializable(package="medimage")
    class RandomExposure(keras.layers.Layer):
        """Another scanner's look: 255 * (x / 255) ** g per image (log g uniform in [-gamma, gamma];
        mid-tones darker or lighter, black and white fixed), plus Gaussian detector noise.
        Keras' GaussianNoise only takes stddev <= 1, which on 0-255 images is no noise at all."""

        def __init__(self, gamma=0.0, noise=0.0, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.gamma, self.noise, self.seed = gamma, noise, seed
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, images, training=True):
            if not training:
                return images
            ops = keras.ops
            n = ops.shape(images)[0]
            g = ops.exp(keras.random.uniform((n, 1, 1, 1), -self.gamma, self.gamma, seed=self.seed_generator))
            out = 255.0 * ops.power(ops.clip(images / 255.0, 0.0, 1.0), g)
            if self.noise:
                out = out + keras.random.normal(ops.shape(images), stddev=self.noise * 255.0, seed=self.seed_generator)
            return ops.clip(out, 0.0, 255.0)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "gamma": self.gamma, "noise": self.noise, "seed": self.seed}

    return RandomExposure


def build_augmentation(config: AugmentConfig, seed: int | None = None):
    """A keras.Sequential of the enabled layers (identity when none is), for images valued 0-255.

    Always float32: the pipeline runs after a job sets a mixed global policy, and its images must not
    be rounded to 16 bits (nor resampled in emulated float16 on a CPU) before the model sees them."""
    import keras

    f32 = {"seed": seed, "dtype": "float32"}
    layers = []
    if config.rotation or config.translation or config.zoom or config.shear:  # the flip rides in the same resampling
        layers.append(_random_affine_class()(config.rotation, config.translation, config.zoom, config.shear, config.flip, **f32))
    elif config.flip != "none":
        layers.append(keras.layers.RandomFlip(config.flip, **f32))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), **f32))
    if config.brightness:
        layers.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), **f32))
    if config.gamma or config.noise:
        layers.append(_random_exposure_class()(config.gamma, config.noise, **f32))
    return keras.Sequential(layers or [keras.layers.Identity(dtype="float32")], name="augmentation")


BLENDS = ("mixup", "cutmix")


def blend_batches(kind: str, strength: float, class_weight: dict[int, float] | None = None, seed: int | None = None):
    """A tf.data map for a binary head's training batches: (images, class indices) -> (images, targets, sample weights).

    Each image is blended with another of its batch by Keras' layer, and its 0/1 target with the same weight:
    - "mixup" (Zhang et al., 2018): the whole images are blended, the weight drawn from Beta(strength, strength)
      (0.2: most blends stay near one image);
    - "cutmix" (Yun et al., 2019): a box of the other image is pasted in, the target weighted by the box's area;
      Keras draws the weight from Beta(a, a) with a uniform in (0, strength] (1.0: the layer's default), and weighs by
      the box's exact area while its pixels round at the edges (under a row and a column: 1% at 224 px).
    The class weight rides along as a second target column, so a blend weighs what its mix of the classes does (Keras'
    class_weight would round a blended target to one class). Training accuracy on blends is not comparable to
    validation accuracy, which sees whole images."""
    import keras
    import tensorflow as tf

    if kind not in BLENDS:
        raise ValueError(f"Unknown blend '{kind}'. Choose one of: {', '.join(BLENDS)}.")
    if kind == "mixup":
        layer = keras.layers.MixUp(alpha=strength, seed=seed, dtype="float32")
    else:
        layer = keras.layers.CutMix(factor=strength, seed=seed, dtype="float32")
    weights = tf.constant([(class_weight or {}).get(i, 1.0) for i in (0, 1)], tf.float32)

    def blend(images, labels):
        columns = tf.stack([tf.cast(labels, tf.float32), tf.gather(weights, labels)], axis=1)
        out = layer({"images": images, "labels": columns}, training=True)
        return out["images"], out["labels"][:, :1], out["labels"][:, 1]

    return blend


def blend_partners(table, label: str, n: int = 6) -> tuple[str, list[str]]:
    """The other class of a two-class table and up to n of its image paths, to preview blends of a `label` image with.

    Mixup's and CutMix's target is one probability, so any other class count is refused with the reason."""
    from core.errors import MedImageError

    classes = sorted(table["label"].unique(), key=str)
    if len(classes) != 2:
        raise MedImageError(f"Mixup and CutMix are for two classes (their target is one probability); this dataset has {len(classes)}.")
    other = classes[1] if classes[0] == label else classes[0]
    return other, table.loc[table["label"] == other, "path"].head(n).tolist()


def blend_preview(image: np.ndarray, others: list[np.ndarray], kind: str, strength: float, seed: int = 0,
                  size: int = 192) -> list[tuple[np.ndarray, float]]:
    """What mixup or CutMix makes of one uint8 image (H, W, C) in training, by the training's own map (blend_batches).

    Every image is first made what the pipeline makes it (core.pipeline.prepare_pixels: size x size, the image's
    channels). One batch holds len(others) copies of the image and the others (another class); each copy is blended
    with a random member, as in training, so some copies meet a copy of themselves and stay as they are. Returns each
    copy as (uint8 image, share of the other class in its target)."""
    import tensorflow as tf

    from core.pipeline import PipelineConfig, prepare_pixels

    config = PipelineConfig(image_size=size, channels=image.shape[-1])
    prepared = [prepare_pixels(pixels, config) for pixels in [image] * len(others) + list(others)]
    labels = np.array([0] * len(others) + [1] * len(others), np.int32)
    blended, targets, _ = blend_batches(kind, strength, seed=seed)(tf.constant(np.stack(prepared)), tf.constant(labels))
    return [(np.clip(np.asarray(blended[i]), 0, 255).round().astype(np.uint8), float(targets[i, 0])) for i in range(len(others))]


def augment_preview(pixels: np.ndarray, config: AugmentConfig, n: int = 9, seed: int = 0) -> list[np.ndarray]:
    """n augmented versions of one uint8 image (H, W, C), reproducible for a given seed."""
    batch = np.repeat(pixels[None].astype("float32"), n, axis=0)
    out = build_augmentation(config, seed=seed)(batch, training=True)
    return [np.clip(np.asarray(x), 0, 255).round().astype(np.uint8) for x in out]
