"""The one image reader: real DICOM test files from pydicom and generated edge cases."""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from core import dicom
from core.errors import ImageReadError
from core.image_reader import read_header, read_image
from core.window import apply_window

TEST_FILES = {os.path.basename(f): f for f in pydicom.data.get_testdata_files()}


def _check(image) -> None:
    assert image.pixels.dtype == np.uint8
    assert image.pixels.ndim == 3 and image.pixels.shape[2] in (1, 3)
    assert image.meta["width"] == image.pixels.shape[1] and image.meta["height"] == image.pixels.shape[0]


@pytest.mark.parametrize("path", pydicom.data.get_testdata_files(), ids=os.path.basename)
def test_every_pydicom_test_file_reads_or_raises_the_one_error(path: str) -> None:
    try:
        image = read_image(path)
    except ImageReadError as exc:
        assert str(exc)  # a message a person can read
        return
    _check(image)


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
        "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
        "JPEG2000.dcm", "JPGExtended.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm",
        "SC_rgb_rle_2frame.dcm", "rtdose.dcm", "liver_expb_1frame.dcm", "image_dfl.dcm",
        "GDCMJ2K_TextGBR.dcm", "693_J2KI.dcm",
    ],
)
def test_decodable_transfer_syntaxes_read(name: str) -> None:
    _check(read_image(TEST_FILES[name]))


def test_ybr_jpeg_is_converted_to_rgb() -> None:
    reference = read_image(TEST_FILES["SC_rgb_dcmtk_+eb+cr.dcm"]).pixels  # uncompressed RGB
    ybr = read_image(TEST_FILES["SC_rgb_dcmtk_+eb+cy+n1.dcm"])
    assert ybr.meta["photometric"] == "YBR_FULL"
    assert np.abs(ybr.pixels.astype(int) - reference.astype(int)).mean() < 4
    assert reference[5, 50].tolist() == [255, 0, 0]


@pytest.mark.parametrize("name", ["rtstruct.dcm", "rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm"])
def test_dicom_without_pixels_says_so(name: str) -> None:
    with pytest.raises(ImageReadError, match="no pixel data"):
        read_image(TEST_FILES[name])


def test_truncated_dicom_raises_clear_error() -> None:
    with pytest.raises(ImageReadError, match="truncated or damaged"):
        read_image(TEST_FILES["MR_truncated.dcm"])


def test_multiframe_defaults_to_middle_and_reports_count() -> None:
    image = read_image(TEST_FILES["rtdose.dcm"])
    frames = image.meta["frames"]
    assert frames > 1 and image.meta["frame"] == frames // 2
    first, last = read_image(TEST_FILES["rtdose.dcm"], frame=0), read_image(TEST_FILES["rtdose.dcm"], frame=frames - 1)
    assert first.meta["frame"] == 0 and last.meta["frame"] == frames - 1
    assert not np.array_equal(first.values, last.values)
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(TEST_FILES["rtdose.dcm"], frame=frames)
    assert read_header(TEST_FILES["rtdose.dcm"]).frames == frames


def test_missing_decoder_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unavailable:
        is_available = False

    monkeypatch.setattr(dicom, "get_decoder", lambda ts: Unavailable())
    with pytest.raises(ImageReadError, match="pylibjpeg-openjpeg"):
        read_image(TEST_FILES["JPEG2000.dcm"])
    with pytest.raises(ImageReadError, match="pylibjpeg-libjpeg"):
        read_image(TEST_FILES["MR_small_jpeg_ls_lossless.dcm"])


def _dicom(values: np.ndarray, photometric: str = "MONOCHROME2", preamble: bool = True, **extra) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE", "PID-424242", "19700101"
    ds.AccessionNumber, ds.InstitutionName = "ACC-777", "Secret General Hospital"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.Rows, ds.Columns = values.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.14, 0.14]
    if values.ndim == 3:
        ds.NumberOfFrames = values.shape[0]
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = values.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    if preamble:
        ds.save_as(buf, enforce_file_format=True)
    else:
        ds.save_as(buf, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def test_monochrome1_is_inverted_with_the_dicom_window() -> None:
    ramp = np.arange(0, 4000, 250, dtype=np.uint16).reshape(4, 4)
    image = read_image(_dicom(ramp, "MONOCHROME1", WindowCenter=2000, WindowWidth=4000))
    assert image.meta["window"]["source"] == "DICOM window" and image.meta["window"]["inverted"]
    expected = apply_window(ramp.astype(np.float32), 2000, 4000, invert=True)
    assert np.array_equal(image.pixels[..., 0], expected)
    assert image.pixels[0, 0, 0] > 250 and image.pixels[3, 3, 0] < 20  # low values bright in MONOCHROME1


def test_modality_lut_and_percentile_window() -> None:
    raw = np.arange(16, dtype=np.uint16).reshape(4, 4) * 100
    image = read_image(_dicom(raw, RescaleSlope=2, RescaleIntercept=-1024))
    assert np.allclose(image.values, raw * 2.0 - 1024)
    assert image.meta["window"]["source"].startswith("percentile")
    assert image.pixels.min() == 0 and image.pixels.max() == 255


def test_no_patient_data_in_metadata() -> None:
    image = read_image(_dicom(np.zeros((4, 4), np.uint16)))
    text = json.dumps(image.meta, default=str)
    for secret in ("DOE", "JANE", "PID-424242", "19700101", "ACC-777", "Secret General"):
        assert secret not in text
    assert image.meta["modality"] == "DX" and image.meta["body_part"] == "CHEST" and image.meta["view"] == "PA"
    assert image.meta["pixel_spacing_mm"] == [0.14, 0.14] and image.meta["bits_stored"] == 12


def test_dicom_without_preamble_or_extension(tmp_path: Path) -> None:
    data = _dicom(np.full((4, 5), 7, np.uint16), preamble=False)
    assert data[128:132] != b"DICM"
    path = tmp_path / "IM0001"
    path.write_bytes(data)
    assert read_image(path).meta["format"] == "DICOM"
    assert read_header(path).width == 5


def test_multiframe_synthetic_dicom_picks_the_middle() -> None:
    frames = np.stack([np.full((3, 3), k * 100, np.uint16) for k in range(5)])
    image = read_image(_dicom(frames))
    assert image.meta["frames"] == 5 and image.meta["frame"] == 2
    assert np.all(image.values == 200)


def test_dicom_pixel_limit_checked_before_decode() -> None:
    with pytest.raises(ImageReadError, match="MP limit"):
        read_image(TEST_FILES["CT_small.dcm"], max_pixels=1000)


# ---- generated raster cases ----------------------------------------------------------------

def _png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_empty_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(empty)
    with pytest.raises(ImageReadError, match="empty"):
        read_image(b"")


def test_text_named_png_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(path)
    with pytest.raises(ImageReadError, match="not an image"):
        read_header(path)


def test_png_named_jpg_reads_by_content(tmp_path: Path) -> None:
    path = tmp_path / "mislabelled.jpg"
    path.write_bytes(_png_bytes(np.full((5, 6), 9, np.uint8)))
    image = read_image(path)
    assert image.meta["format"] == "PNG" and image.pixels.shape == (5, 6, 1)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(fmt: str) -> None:
    rng = np.random.default_rng(0)
    data = _save(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), fmt)
    with pytest.raises(ImageReadError, match="truncated or damaged|damaged"):
        read_image(data[: len(data) // 2])


def test_16bit_png_keeps_values_and_windows_pixels() -> None:
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    image = read_image(_png_bytes(arr))
    assert image.values is not None and image.values.max() == 63000
    assert image.meta["bits"] == 16 and image.pixels.shape == (8, 8, 1)
    assert image.pixels[0, 0, 0] == 0 and image.pixels[7, 7, 0] == 255


def test_rgba_and_gray_alpha_drop_alpha() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    assert read_image(_png_bytes(rgba)).pixels.shape == (4, 4, 3)
    la = Image.fromarray(np.full((4, 4), 90, np.uint8)).convert("LA")
    image = read_image(_save(la, "PNG"))
    assert image.pixels.shape == (4, 4, 1) and image.pixels[0, 0, 0] == 90


def test_palette_png() -> None:
    im = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    pixels = read_image(_save(im, "PNG")).pixels
    assert pixels.shape == (1, 2, 3) and pixels[0, 0].tolist() == [255, 0, 0]


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    image = read_image(_save(cmyk, "JPEG", quality=95))
    assert image.meta["mode"] == "CMYK" and image.pixels.shape == (8, 8, 3)
    r, g, b = image.pixels[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60


def test_one_pixel_image() -> None:
    assert read_image(_png_bytes(np.array([[7]], np.uint8))).pixels.shape == (1, 1, 1)


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")


def test_huge_header_is_refused_without_decoding() -> None:
    start = time.perf_counter()
    with pytest.raises(ImageReadError, match="limit|too large"):
        read_image(_png_claiming(40000, 40000))
    assert time.perf_counter() - start < 1.0
    assert read_header(_png_claiming(40000, 40000)).width == 40000  # headers alone are fine


def test_pixel_limit_is_configurable() -> None:
    data = _png_bytes(np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageReadError, match="limit"):
        read_image(data, max_pixels=5_000)
    assert read_image(data, max_pixels=10_000).pixels.shape == (100, 100, 1)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "WEBP", "GIF"])
def test_other_formats(fmt: str) -> None:
    im = Image.fromarray(np.tile(np.arange(0, 240, 15, dtype=np.uint8), (8, 1)))
    image = read_image(_save(im.convert("RGB"), fmt))
    assert image.meta["format"] == fmt and image.pixels.shape[:2] == (8, 16)


def test_multiframe_tiff_and_animated_gif() -> None:
    frames = [Image.fromarray(np.full((6, 6), v, np.uint8)) for v in (10, 120, 240)]
    for fmt in ("TIFF", "GIF"):
        data = _save(frames[0], fmt, save_all=True, append_images=frames[1:])
        first, third = read_image(data), read_image(data, frame=2)
        assert first.meta["frames"] == 3 and first.meta["frame"] == 0
        assert abs(int(third.pixels.mean()) - 240) <= 2 and abs(int(first.pixels.mean()) - 10) <= 2
        with pytest.raises(ImageReadError, match="does not exist"):
            read_image(data, frame=3)


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    data = _save(Image.fromarray(arr), "JPEG", exif=exif, quality=95)
    image = read_image(data)
    assert image.pixels.shape[:2] == (20, 10)
    assert image.pixels[:10].mean() > 200 and image.pixels[10:].mean() < 50  # white half now on top
    header = read_header(data)
    assert (header.width, header.height) == (10, 20)


def test_missing_path_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


def test_max_side_makes_thumbnails_for_every_kind() -> None:
    big = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    jpeg = read_image(_save(Image.fromarray(big).convert("RGB"), "JPEG"), max_side=100)
    assert jpeg.pixels.shape == (75, 100, 3) and jpeg.values is None
    assert abs(int(jpeg.pixels[:, -5:].mean()) - 250) < 8  # the gradient survives
    png16 = read_image(_png_bytes(big.astype(np.uint16) * 200), max_side=40)
    assert png16.pixels.shape == (30, 40, 1) and png16.values is None
    dcm = read_image(TEST_FILES["CT_small.dcm"], max_side=32)
    assert dcm.pixels.shape == (32, 32, 1) and dcm.meta["width"] == 32
    small = read_image(_png_bytes(np.zeros((5, 5), np.uint8)), max_side=100)
    assert small.pixels.shape == (5, 5, 1)  # never enlarged
