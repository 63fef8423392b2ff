"""DICOM decoding with pydicom: pixel data to display-ready pixels plus non-identifying metadata.

Only an allow-list of technical fields ever leaves this module; patient name, ID, birth date,
accession number and the like are never copied, so no page, log or run folder can show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array

from core.errors import ImageReadError
from core.window import apply_window, robust_window

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Which pip package decodes which compression, for the "install X" message.
_DECODER_PACKAGES = {
    "JPEG 2000": "pylibjpeg-openjpeg",
    "High-Throughput JPEG 2000": "pylibjpeg-openjpeg",
    "JPEG-LS": "pylibjpeg-libjpeg",
    "JPEG": "pylibjpeg-libjpeg",
    "RLE": "pylibjpeg-rle",
    "Deflated": "(built into pydicom; the file may be damaged)",
}


# Modalities that are not a projection X-ray (CR, DX), which people upload to an X-ray classifier by mistake (DICOM
# PS3.3 C.7.3.1.1.1). "OT" (other) and codes not listed say nothing either way: a screenshot of an X-ray is often OT.
_NOT_RADIOGRAPHS = {
    "CT": "computed tomography", "MR": "magnetic resonance", "US": "ultrasound", "NM": "nuclear medicine",
    "PT": "positron emission tomography", "MG": "mammography", "XA": "X-ray angiography", "RF": "fluoroscopy",
    "IO": "intra-oral X-ray", "PX": "panoramic dental X-ray", "SM": "slide microscopy", "OP": "ophthalmic photography",
    "XC": "external camera photography", "ES": "endoscopy", "RTDOSE": "radiotherapy dose", "SEG": "segmentation",
}


def modality_caution(meta: dict[str, Any]) -> str:
    """A warning for a DICOM image whose Modality says it is not a projection X-ray (a CT slice, an MR, an ultrasound):
    a classifier trained on radiographs still returns confident probabilities for it, which mean nothing. "" for
    anything else, also a file that states no modality (many exports leave it out)."""
    code = str(meta.get("modality") or "").strip().upper()
    if code not in _NOT_RADIOGRAPHS:
        return ""
    return (f"This DICOM file says it is {_NOT_RADIOGRAPHS[code]} ({code}), not a projection X-ray (CR or DX). A model "
            "trained on X-rays still gives an answer for it, and that answer means nothing unless the model was trained "
            "on such images.")


@dataclass(frozen=True)
class DicomHeader:
    width: int
    height: int
    channels: int
    frames: int
    photometric: str


def looks_like_dicom(head: bytes, name: str = "") -> bool:
    """True for the 'DICM' marker after the 128-byte preamble or a DICOM file extension."""
    return head[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom", ".dic"))


def sniff_dicom(fp: BinaryIO) -> bool:
    """Recognise a DICOM file that has neither preamble nor extension, from its first elements."""
    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp, force=True, specific_tags=["SOPClassUID", "Rows", "Modality"])
    except Exception:  # noqa: BLE001 - any parse failure simply means "not DICOM"
        return False
    finally:
        fp.seek(0)
    return any(k in ds for k in ("SOPClassUID", "Rows", "Modality"))


def _open(fp: BinaryIO, stop_before_pixels: bool) -> Dataset:
    fp.seek(0)
    try:
        return pydicom.dcmread(fp, force=True, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ImageReadError(
            f"This DICOM file could not be parsed ({type(exc).__name__}); it is probably truncated "
            "or damaged. Export it again from the PACS or viewer."
        ) from exc


def _what_it_is(ds: Dataset) -> str:
    sop = ds.get("SOPClassUID")
    name = getattr(sop, "name", "") if sop else ""
    modality = ds.get("Modality", "")
    return name or (f"modality {modality}" if modality else "a DICOM object")


def _no_pixels(ds: Dataset) -> ImageReadError:
    what = _what_it_is(ds)
    if "Image" in what:
        hint = "it is a header-only copy; export the image again with its pixel data."
    else:
        hint = "structure sets, plans, reports, waveforms and DICOMDIR indexes have no image; choose an image file."
    return ImageReadError(f"This DICOM file ({what}) holds no pixel data: {hint}")


def _frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def header(fp: BinaryIO) -> DicomHeader:
    """Size, channels and frames from the header alone (no pixel decode)."""
    ds = _open(fp, stop_before_pixels=True)
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise _no_pixels(ds)
    return DicomHeader(
        width=int(cols),
        height=int(rows),
        channels=3 if int(ds.get("SamplesPerPixel", 1) or 1) >= 3 or ds.get("PhotometricInterpretation") == "PALETTE COLOR" else 1,
        frames=_frames(ds),
        photometric=str(ds.get("PhotometricInterpretation", "")),
    )


def safe_metadata(ds: Dataset, frames: int) -> dict[str, Any]:
    """The technical, non-identifying fields a person needs to judge the image."""
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return {
        "modality": str(ds.get("Modality", "")) or None,
        "body_part": str(ds.get("BodyPartExamined", "")) or None,
        "view": str(ds.get("ViewPosition", "")) or None,
        "photometric": str(ds.get("PhotometricInterpretation", "")) or None,
        "bits_allocated": int(ds.BitsAllocated) if "BitsAllocated" in ds else None,
        "bits_stored": int(ds.BitsStored) if "BitsStored" in ds else None,
        "pixel_spacing_mm": [float(v) for v in spacing] if spacing else None,
        "frames": frames,
        "transfer_syntax": getattr(ts, "name", None),
        "sop_class": _what_it_is(ds),
    }


def _check_decoder(ds: Dataset) -> None:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or not ts.is_compressed:
        return
    try:
        available = get_decoder(ts).is_available
    except NotImplementedError:
        available = False
    if not available:
        package = next((p for key, p in _DECODER_PACKAGES.items() if key in ts.name), "a pylibjpeg plugin")
        raise ImageReadError(
            f"This DICOM is compressed as '{ts.name}' and no installed decoder reads it. "
            f"Install {package} (pip install {package.split()[0]}) or export it uncompressed."
        )


def _first(value: Any) -> float:
    return float(value[0]) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else float(value)


def _to_uint8_color(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    top = float(2 ** min(max(bits, 8), 16) - 1)
    return np.clip(arr.astype(np.float32) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)


def decode(fp: BinaryIO, frame: int | None, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Decode one frame: (uint8 pixels HxWxC, modality values HxW or None, metadata)."""
    ds = _open(fp, stop_before_pixels=False)
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise _no_pixels(ds)
    frames = _frames(ds)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * cols == 0:
        raise ImageReadError("This DICOM file has pixel data but no Rows/Columns; it is damaged.")
    if rows * cols > max_pixels:
        raise ImageReadError(
            f"This DICOM frame is {cols}x{rows} ({rows * cols / 1e6:.0f} megapixels), over the "
            f"{max_pixels / 1e6:.0f} MP limit. Downsample it first or raise the limit."
        )
    index = frames // 2 if frame is None else frame
    if not 0 <= index < frames:
        raise ImageReadError(f"Frame {index} does not exist: this DICOM has {frames} frame(s) (0 to {frames - 1}).")
    _check_decoder(ds)
    try:
        arr = pixel_array(ds, index=index if frames > 1 else None)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; all mean "cannot decode"
        raise ImageReadError(
            f"The pixel data of this DICOM could not be decoded ({type(exc).__name__}); the file is "
            "probably truncated or damaged. Export it again."
        ) from exc
    meta = safe_metadata(ds, frames) | {"frame": index, "width": cols, "height": rows}
    photometric = meta["photometric"] or "MONOCHROME2"
    bits = int(ds.get("BitsStored", 8) or 8)

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        meta |= {"channels": 3, "window": None}
        return _to_uint8_color(rgb, 16 if rgb.dtype != np.uint8 else 8), None, meta
    if arr.ndim == 3:  # RGB (YBR is converted to RGB by pydicom)
        meta |= {"channels": 3, "window": None}
        return _to_uint8_color(arr[..., :3], bits), None, meta

    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    invert = photometric == "MONOCHROME1"
    if "VOILUTSequence" in ds:
        lut_out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float32)
        lo, hi = float(lut_out.min()), float(lut_out.max())
        center, width, source = (lo + hi) / 2 + 0.5, hi - lo + 1, "VOI LUT"
        pixels = apply_window(lut_out, center, width, invert)
    else:
        if "WindowCenter" in ds and "WindowWidth" in ds:
            center, width, source = _first(ds.WindowCenter), _first(ds.WindowWidth), "DICOM window"
        else:
            (center, width), source = robust_window(values), "percentile 0.5-99.5"
        pixels = apply_window(values, center, width, invert)
    meta |= {"channels": 1, "window": {"center": center, "width": width, "source": source, "inverted": invert}}
    return pixels[..., None], values, meta
