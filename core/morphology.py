"""Thresholding and morphology for the preprocessing lab, with scikit-image.

Operations work on a binary mask or on the grayscale image itself, with a disk or square
structuring element of a given radius (default disk 3).
"""

from __future__ import annotations

import numpy as np
from skimage import filters, morphology

OPERATIONS = {
    "erosion": morphology.erosion,
    "dilation": morphology.dilation,
    "opening": morphology.opening,
    "closing": morphology.closing,
}
CHANNELS = ("gray", "R", "G", "B")


def channel(pixels: np.ndarray, name: str = "gray") -> np.ndarray:
    """One channel of uint8 pixels (H, W, C) as (H, W); gray uses ITU-R 601 luma weights."""
    if pixels.shape[-1] == 1:
        return pixels[..., 0]
    if name == "gray":
        return np.round(pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    if name not in CHANNELS:
        raise ValueError(f"Unknown channel '{name}'. Choose one of: {', '.join(CHANNELS)}.")
    return pixels[..., "RGB".index(name)]


def threshold(image: np.ndarray, value: float | None = None) -> tuple[np.ndarray, float]:
    """Mask of pixels above `value`; with value None, Otsu's threshold. Returns (mask, threshold used)."""
    used = float(filters.threshold_otsu(image)) if value is None else float(value)
    return image > used, used


def footprint(shape: str = "disk", radius: int = 3) -> np.ndarray:
    if radius < 0:
        raise ValueError("The structuring element radius must be 0 or more.")
    if shape == "disk":
        return morphology.disk(radius)
    if shape == "square":
        return morphology.footprint_rectangle((2 * radius + 1, 2 * radius + 1))
    raise ValueError(f"Unknown structuring element '{shape}'. Choose disk or square.")


def apply(image: np.ndarray, operation: str, shape: str = "disk", radius: int = 3) -> np.ndarray:
    """Apply erosion/dilation/opening/closing to a mask (bool) or a grayscale image (same dtype out)."""
    if operation not in OPERATIONS:
        raise ValueError(f"Unknown operation '{operation}'. Choose one of: {', '.join(OPERATIONS)}.")
    return OPERATIONS[operation](image, footprint(shape, radius))
