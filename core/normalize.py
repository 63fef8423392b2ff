"""Intensity normalisations for the preprocessing lab (and later the training pipeline).

Each method takes uint8 pixels (H, W, C) and returns float32 of the same shape. The formulas are
the textbook ones with their parentheses where they belong: min-max is (x - min) / (max - min),
not x - min / (max - min).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

_EPS = 1e-7


def scale_255(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0


def min_max(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return (x - x.min()) / max(float(x.max() - x.min()), _EPS)


def percentile_5_95(x: np.ndarray) -> np.ndarray:
    """Robust min-max: the 5th and 95th percentiles map to 0 and 1, the tails are clipped."""
    x = x.astype(np.float32)
    lo, hi = np.percentile(x, (5, 95))
    return np.clip((x - lo) / max(float(hi - lo), _EPS), 0.0, 1.0)


def z_score(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return (x - x.mean()) / max(float(x.std()), _EPS)


def imagenet_caffe(x: np.ndarray) -> np.ndarray:
    """Keras' 'caffe' mode (VGG16, ResNet50): RGB -> BGR, minus the ImageNet channel means, no scaling."""
    from keras.applications import imagenet_utils

    rgb = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
    return imagenet_utils.preprocess_input(rgb.astype(np.float32), mode="caffe")


def mean_subtraction(x: np.ndarray) -> np.ndarray:
    """Per-image mean subtraction (per channel), centring each image on zero."""
    x = x.astype(np.float32)
    return x - x.mean(axis=(0, 1), keepdims=True)


def _per_channel(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([fn(np.ascontiguousarray(x[..., c])) for c in range(x.shape[-1])], axis=-1)


def histogram_equalisation(x: np.ndarray) -> np.ndarray:
    return _per_channel(x.astype(np.uint8), cv2.equalizeHist).astype(np.float32) / 255.0


def clahe(x: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive equalisation: local contrast without blowing up noise (radiographs)."""
    op = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    return _per_channel(x.astype(np.uint8), op.apply).astype(np.float32) / 255.0


METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "/255": scale_255,
    "min-max": min_max,
    "percentile 5-95": percentile_5_95,
    "z-score": z_score,
    "ImageNet mean (caffe, BGR)": imagenet_caffe,
    "per-image mean subtraction": mean_subtraction,
    "histogram equalisation": histogram_equalisation,
    "CLAHE": clahe,
}


def normalize(x: np.ndarray, method: str) -> np.ndarray:
    """Apply a named method from METHODS to uint8 pixels (H, W, C)."""
    if method not in METHODS:
        raise ValueError(f"Unknown normalisation '{method}'. Choose one of: {', '.join(METHODS)}.")
    return METHODS[method](x)


def to_display(x: np.ndarray) -> np.ndarray:
    """Any float image to uint8 for showing (min-max per image; BGR output shown as stored)."""
    return (min_max(x) * 255.0 + 0.5).astype(np.uint8)
