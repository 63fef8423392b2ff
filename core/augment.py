"""Training-time augmentation as Keras preprocessing layers: the one definition the training
pipeline and the Dataset page's preview both use, so what the user previews is what the model sees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation; 0 (or flip 'none') switches it off.

    rotation: fraction of a full turn (0.05 = up to +/-18 degrees); translation, zoom, shear: fraction
    of the image size; contrast, brightness: fraction of the value range. Defaults are mild, as
    chest X-rays have a canonical orientation: no vertical flips, small rotations.
    """

    flip: str = "horizontal"
    rotation: float = 0.03
    translation: float = 0.05
    zoom: float = 0.10
    shear: float = 0.0
    contrast: float = 0.10
    brightness: float = 0.10

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


def build_augmentation(config: AugmentConfig, seed: int | None = None):
    """A keras.Sequential of the enabled layers (identity when none is), for images valued 0-255."""
    import keras

    layers = []
    if config.flip != "none":
        layers.append(keras.layers.RandomFlip(config.flip, seed=seed))
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="constant", seed=seed))
    if config.translation:
        layers.append(keras.layers.RandomTranslation(config.translation, config.translation, fill_mode="constant", seed=seed))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="constant", seed=seed))
    if config.shear:
        layers.append(keras.layers.RandomShear(config.shear, config.shear, fill_mode="constant", seed=seed))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed))
    if config.brightness:
        layers.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), seed=seed))
    return keras.Sequential(layers or [keras.layers.Identity()], name="augmentation")


def augment_preview(pixels: np.ndarray, config: AugmentConfig, n: int = 9, seed: int = 0) -> list[np.ndarray]:
    """n augmented versions of one uint8 image (H, W, C), reproducible for a given seed."""
    batch = np.repeat(pixels[None].astype("float32"), n, axis=0)
    out = build_augmentation(config, seed=seed)(batch, training=True)
    return [np.clip(np.asarray(x), 0, 255).round().astype(np.uint8) for x in out]
