"""Intensity windowing: how high-bit-depth values (DICOM, 16-bit PNG) become 8-bit pixels.

One place for it, so the reader's default view and the Predict page's center/width sliders agree.
"""

from __future__ import annotations

import numpy as np

ROBUST_PERCENTILES = (0.5, 99.5)


def apply_window(values: np.ndarray, center: float, width: float, invert: bool = False) -> np.ndarray:
    """Map values to uint8 with the DICOM linear VOI function (PS3.3 C.11.2.1.2.1).

    `invert` is for MONOCHROME1, where low values are bright.
    """
    width = max(float(width), 1.0)
    lo = float(center) - 0.5 - (width - 1.0) / 2.0
    scaled = (np.asarray(values, dtype=np.float32) - lo) / (width - 1.0) if width > 1.0 else (
        np.asarray(values, dtype=np.float32) > center - 0.5
    ).astype(np.float32)
    out = np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def robust_window(values: np.ndarray) -> tuple[float, float]:
    """A (center, width) that spans the 0.5-99.5 percentiles: ignores burned-in labels and dead pixels."""
    finite = np.asarray(values, dtype=np.float32)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, ROBUST_PERCENTILES)
    if hi <= lo:  # flat image: fall back to the full range so it shows as mid-grey, not noise
        lo, hi = float(finite.min()), float(finite.max())
    width = max(float(hi - lo) + 1.0, 1.0)
    return float(lo + hi) / 2.0 + 0.5, width


# (center, width) presets for CT in Hounsfield units; X-rays (CR/DX) use the file's window or the robust one
PRESETS: dict[str, tuple[float, float]] = {
    "Lung (CT)": (-600.0, 1500.0),
    "Mediastinum (CT)": (50.0, 350.0),
    "Bone (CT)": (400.0, 1800.0),
    "Soft tissue (CT)": (40.0, 400.0),
    "Brain (CT)": (40.0, 80.0),
}
