"""The one image reader: every format the tool accepts, from a path or from uploaded bytes.

`read_image` returns display/model-ready uint8 pixels (H, W, C with C = 1 or 3) plus metadata;
`read_header` returns size facts without decoding pixels (for fast dataset scans and the pixel
limit). Anything that cannot be read raises `ImageReadError` with a message a person can act on.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core import dicom
from core.errors import ImageReadError
from core.window import apply_window, robust_window

DEFAULT_MAX_PIXELS = 50_000_000
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm", ".dicom", ".dic"}
)
_HIGH_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_GRAY_MODES = {"1", "L", "LA", "La"} | _HIGH_BIT_MODES

Source = str | os.PathLike | bytes
# Our own limit (max_pixels, checked from the header before any decode) replaces Pillow's global
# bomb check, which would refuse even to read the header of a large image during a scan.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageHeader:
    """What a header says, without decoding pixels."""

    width: int
    height: int
    channels: int
    format: str
    frames: int = 1
    mode: str = ""
    orientation: int = 1  # EXIF orientation (1 = as stored); read_image applies it


@dataclass(frozen=True)
class ImageData:
    """A decoded image.

    pixels: uint8 (H, W, C), C = 1 (grayscale) or 3 (RGB); alpha is dropped, CMYK/YCbCr/palette
        converted, EXIF orientation applied, high-bit-depth data windowed.
    values: float32 (H, W) original intensities for high-bit-depth grayscale (DICOM after the
        modality LUT, 16-bit PNG/TIFF) so a viewer can re-window them; None otherwise.
    meta: format, width, height, channels, frames, frame and, for DICOM, non-identifying fields.
    """

    pixels: np.ndarray
    values: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _open_stream(source: Source) -> tuple[BinaryIO, str]:
    """A seekable stream and a display name; the empty-file check lives here for both kinds."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageReadError("The uploaded file is empty (0 bytes). Upload the image again.")
        return io.BytesIO(data), "upload"
    path = Path(source)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ImageReadError(f"{path.name} is a folder, not an image file.")
        if size == 0:
            raise ImageReadError(f"{path.name} is empty (0 bytes). Copy or export the image again.")
        return open(path, "rb"), path.name
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path} does not exist. Check the path.") from exc
    except PermissionError as exc:
        raise ImageReadError(f"{path.name} cannot be opened: permission denied.") from exc


def _is_dicom(fp: BinaryIO, name: str) -> bool:
    head = fp.read(132)
    fp.seek(0)
    return dicom.looks_like_dicom(head, name)


def _pil_open(fp: BinaryIO, name: str) -> Image.Image | None:
    """Open lazily with Pillow; None when Pillow does not recognise the bytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)
    except UnidentifiedImageError:
        return None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{name} looks like an image but its header is damaged ({exc}).") from exc


def _not_an_image(name: str) -> ImageReadError:
    return ImageReadError(
        f"{name} is not an image this tool can read. Supported: JPEG, PNG, BMP, TIFF, WebP, GIF "
        "and DICOM. If it is an image, re-save it in one of those formats."
    )


def _pil_channels(mode: str) -> int:
    return 1 if mode in _GRAY_MODES or mode.startswith("I;") else 3


def _check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            f"{name} is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the "
            f"{max_pixels / 1e6:.0f} MP limit. Downsample it first or raise the limit."
        )


def _orientation(im: Image.Image) -> int:
    """EXIF orientation from the header; PNG keeps EXIF after the pixels, so it is only read if seen."""
    if im.format not in ("JPEG", "MPO", "TIFF", "WEBP") and "exif" not in im.info:
        return 1
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block just means "no rotation"
        return 1


def _open_raster(fp: BinaryIO, name: str) -> Image.Image | None:
    """A lazily opened Pillow image, or None when the stream is DICOM; ImageReadError if neither."""
    im = None if _is_dicom(fp, name) else _pil_open(fp, name)
    if im is None and not (_is_dicom(fp, name) or dicom.sniff_dicom(fp)):
        raise _not_an_image(name)
    return im


def read_header(source: Source) -> ImageHeader:
    """Width, height, channels, format and frame count from the header alone."""
    fp, name = _open_stream(source)
    with fp:
        im = _open_raster(fp, name)
        if im is None:
            h = dicom.header(fp)
            return ImageHeader(h.width, h.height, h.channels, "DICOM", h.frames, h.photometric)
        with im:
            width, height = im.size
            orientation = _orientation(im)
            # EXIF orientation 5-8 swaps the axes; the scan must report what read_image returns.
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            return ImageHeader(
                width, height, _pil_channels(im.mode), im.format or "?", getattr(im, "n_frames", 1), im.mode, orientation
            )


def _pil_to_pixels(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise any Pillow mode to uint8 (H, W, 1|3), plus raw values for high-bit grayscale."""
    mode = im.mode
    if mode in _HIGH_BIT_MODES or mode.startswith("I;"):
        values = np.asarray(im, dtype=np.float32)
        if values.ndim == 3:
            values = values[..., 0]
        center, width = robust_window(values)
        return apply_window(values, center, width)[..., None], values
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(im.convert("L"), dtype=np.uint8)[..., None], None
    if mode == "P" and im.palette is not None and im.palette.mode in ("L", "LA"):
        return np.asarray(im.convert("L"), dtype=np.uint8)[..., None], None
    return np.asarray(im.convert("RGB"), dtype=np.uint8), None


def _shrink(pixels: np.ndarray, max_side: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], pixels.shape[2])


def read_image(
    source: Source, frame: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> ImageData:
    """Read any supported image from a path or bytes.

    frame: which frame of a multi-frame file (DICOM default: the middle one; GIF/TIFF: the first).
    max_pixels: refuse images larger than this, checked from the header before any decode.
    max_side: for thumbnails and hashing: shrink so the longer side is at most this, decoding JPEGs
        at a reduced scale (several times faster on full-size radiographs); `values` is then None.
    """
    fp, name = _open_stream(source)
    with fp:
        im = _open_raster(fp, name)
        if im is None:
            pixels, values, meta = dicom.decode(fp, frame, max_pixels)
            if max_side:
                pixels, values = _shrink(pixels, max_side), None
                meta |= {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])}
            return ImageData(pixels, values, {"format": "DICOM", **meta})
        with im:
            width, height = im.size
            _check_pixels(name, width, height, max_pixels)
            frames = getattr(im, "n_frames", 1)
            index = 0 if frame is None else frame
            if not 0 <= index < frames:
                raise ImageReadError(f"Frame {index} does not exist: {name} has {frames} frame(s).")
            fmt, mode = im.format or "?", im.mode
            try:
                if index:
                    im.seek(index)
                if max_side and im.format == "JPEG":
                    im.draft(im.mode, (max_side, max_side))  # DCT scaling: decode at 1/2, 1/4 or 1/8
                im.load()
                oriented = ImageOps.exif_transpose(im) or im
                pixels, values = _pil_to_pixels(oriented)
                if max_side:
                    pixels, values = _shrink(pixels, max_side), None
            except ImageReadError:
                raise
            except Exception as exc:  # noqa: BLE001 - Pillow decoders raise many types for bad data
                raise ImageReadError(
                    f"{name} could not be decoded ({exc}); the file is probably truncated or damaged."
                ) from exc
    meta = {
        "format": fmt,
        "mode": mode,
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "channels": int(pixels.shape[2]),
        "frames": frames,
        "frame": index,
        "bits": 16 if values is not None else 8,
    }
    return ImageData(pixels, values, meta)


def is_image_name(name: str) -> bool:
    """True for an extension the reader accepts, or none at all (DICOM files often have none)."""
    base = name.rpartition("/")[2]
    stem, dot, ext = base.rpartition(".")
    return not dot or not stem.strip(".") or f".{ext.lower()}" in IMAGE_EXTENSIONS


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W), (H, W, 1) or (H, W, 3) as PNG bytes, for downloads."""
    array = np.asarray(pixels, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()
