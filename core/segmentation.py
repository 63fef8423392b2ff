"""HRNet semantic segmentation of street scenes from TF Hub (seed 003, section 09).

The model (HRNetV2-W48 trained on CamVid) takes RGB / 255 with a batch dimension and returns
(1, H, W, 33) class probabilities; channel 0 is background and is dropped, the other 32 are the
CamVid classes below. The seed's overlay swapped the photo's red and blue (an OpenCV BGR/RGB mix-up);
here everything stays RGB.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tensorflow as tf

from core.errors import MedImageError

DEFAULT_HANDLE = "https://tfhub.dev/google/HRNet/camvid-hrnetv2-w48/1"
CAMVID = [
    ((64, 128, 64), "Animal"), ((192, 0, 128), "Archway"), ((0, 128, 192), "Bicyclist"), ((0, 128, 64), "Bridge"),
    ((128, 0, 0), "Building"), ((64, 0, 128), "Car"), ((64, 0, 192), "Cart/Luggage/Pram"), ((192, 128, 64), "Child"),
    ((192, 192, 128), "Column/Pole"), ((64, 64, 128), "Fence"), ((128, 0, 192), "LaneMkgs Driv"), ((192, 0, 64), "LaneMkgs NonDriv"),
    ((128, 128, 64), "Misc Text"), ((192, 0, 192), "Motorcycle/Scooter"), ((128, 64, 64), "Other Moving"), ((64, 192, 128), "Parking Block"),
    ((64, 64, 0), "Pedestrian"), ((128, 64, 128), "Road"), ((128, 128, 192), "Road Shoulder"), ((0, 0, 192), "Sidewalk"),
    ((192, 128, 128), "Sign Symbol"), ((128, 128, 128), "Sky"), ((64, 128, 192), "SUV/Pickup/Truck"), ((0, 0, 64), "Traffic Cone"),
    ((0, 64, 64), "Traffic Light"), ((192, 64, 128), "Train"), ((128, 128, 0), "Tree"), ((192, 128, 192), "Truck/Bus"),
    ((64, 0, 64), "Tunnel"), ((192, 192, 0), "Vegetation Misc"), ((0, 0, 0), "Void"), ((64, 192, 0), "Wall"),
]
PALETTE = np.array([c for c, _ in CAMVID], np.uint8)
NAMES = [n for _, n in CAMVID]


class SegmenterUnavailable(MedImageError):
    """The TF Hub model could not be downloaded and no local SavedModel folder was given."""


def load_segmenter(handle: str = DEFAULT_HANDLE):
    """A local SavedModel folder, or a TF Hub handle (downloaded and cached by tensorflow_hub)."""
    import tensorflow_hub as hub

    local = Path(handle).expanduser()
    if local.exists():
        if not (local / "saved_model.pb").exists():
            raise SegmenterUnavailable(f"{local} is not a SavedModel folder (it has no saved_model.pb).")
        return hub.load(str(local))
    try:
        return hub.load(handle)
    except Exception as exc:  # noqa: BLE001 - offline, hub raises URL, HTTP and OS errors alike
        raise SegmenterUnavailable(
            f"The segmentation model {handle} could not be downloaded. On a machine with internet, download "
            f"{handle}?tf-hub-format=compressed, extract it into a folder, and give that folder's path here."
        ) from exc


def run_inference(model, pixels: np.ndarray, max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the RGB image the model saw, its (H, W, 32) class probabilities without background).

    max_side downscales large photos first: HRNet-W48 at full HD takes tens of seconds on a CPU.
    """
    rgb = pixels if pixels.shape[-1] == 3 else np.repeat(pixels, 3, axis=-1)
    if max_side and max(rgb.shape[:2]) > max_side:
        scale = max_side / max(rgb.shape[:2])
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    batch = tf.convert_to_tensor(rgb[None].astype(np.float32) / 255.0)
    out = np.asarray(model.predict(batch))
    if out.ndim != 4 or out.shape[-1] != len(CAMVID) + 1:
        raise MedImageError(f"The model returned shape {out.shape}; a CamVid HRNet returns (1, H, W, {len(CAMVID) + 1}).")
    return rgb, out[0, :, :, 1:]


def class_map(probabilities: np.ndarray) -> np.ndarray:
    return np.argmax(probabilities, axis=-1)


def colour_mask(classes: np.ndarray) -> np.ndarray:
    return PALETTE[classes]


def blend(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The coloured mask over the photo, both RGB."""
    return cv2.addWeighted(rgb, 1.0 - alpha, mask, alpha, 0)


def class_shares(classes: np.ndarray) -> pd.DataFrame:
    """Pixels and share of the image per class present, largest first."""
    counts = np.bincount(classes.ravel(), minlength=len(CAMVID))
    present = np.flatnonzero(counts)
    table = pd.DataFrame({"class": [NAMES[i] for i in present], "pixels": counts[present],
                          "share": counts[present] / counts.sum(), "colour": ["rgb" + str(tuple(int(v) for v in PALETTE[i])) for i in present]})
    return table.sort_values("pixels", ascending=False, ignore_index=True)
