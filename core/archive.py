"""A generated hospital-size archive: many small phantoms, PNG and DICOM mixed, as class folders and a CSV.

Real archives (NIH ChestX-ray14: 112,120 images) cannot be downloaded here, and scale problems only
show at scale: this writes as many images as asked, deterministically, in parallel processes, so
benchmarks and tests can open, hash, page through and train on 100k images offline. A share of the
images are planted near-duplicates (the same phantom re-exposed and re-encoded), so a duplicate
search has known pairs to find.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from core.atomic import write_text
from core.demo_data import CLASSES, make_phantom

CSV_NAME = "labels.csv"
IMAGES_DIR = "images"
_CHUNK = 2_000  # images per worker task


@dataclass(frozen=True)
class ArchiveSpec:
    images: int = 100_000
    size: int = 64
    dicom_share: float = 0.25  # every 4th image a DICOM file
    duplicate_share: float = 0.01  # planted near-duplicates, each of an earlier image
    seed: int = 0

    def label(self, i: int) -> str:
        return CLASSES[i % len(CLASSES)]

    def is_dicom(self, i: int) -> bool:
        return self.dicom_share > 0 and i % round(1 / self.dicom_share) == 1

    def twin_of(self, i: int) -> int | None:
        """The earlier image that image i re-encodes, or None for an original."""
        step = round(1 / self.duplicate_share) if self.duplicate_share > 0 else 0
        return i - step // 2 if step and i % step == step - 1 else None

    def name(self, i: int) -> str:
        return f"{self.label(i)}/img_{i:06d}.{'dcm' if self.is_dicom(i) else 'png'}"


def _pixels(spec: ArchiveSpec, i: int) -> np.ndarray:
    twin = spec.twin_of(i)
    source = i if twin is None else twin
    rng = np.random.default_rng([spec.seed, source])
    img = make_phantom(rng, pneumonia=spec.label(source) == "PNEUMONIA", size=spec.size)
    if twin is not None:  # the same study re-exposed a little: a near duplicate, not a byte copy
        noise = np.random.default_rng([spec.seed, i, 1]).normal(0, 1.5, img.shape)
        img = np.clip(img.astype(np.float32) * 1.03 + 2 + noise, 0, 255).astype(np.uint8)
    return img


def _write_dicom(path: Path, pixels: np.ndarray, label: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyDescription = "DX", f"synthetic {label.lower()}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _write_chunk(spec: ArchiveSpec, folder: str, start: int, stop: int) -> None:
    root = Path(folder)
    for i in range(start, stop):
        pixels, path = _pixels(spec, i), root / spec.name(i)
        if spec.is_dicom(i):
            _write_dicom(path, pixels, spec.label(i))
        else:
            cv2.imwrite(str(path), pixels)


def planted_pairs(spec: ArchiveSpec) -> set[tuple[str, str]]:
    """(original, near-duplicate) relative paths the generator planted."""
    return {(spec.name(twin), spec.name(i)) for i in range(spec.images) if (twin := spec.twin_of(i)) is not None}


def generate_archive(folder: Path, spec: ArchiveSpec = ArchiveSpec(), workers: int | None = None) -> Path:
    """Write `spec.images` images under folder/images/<CLASS>/ and folder/labels.csv (path,label).

    The images folder appears whole or not at all (written beside it, then renamed).
    """
    folder.mkdir(parents=True, exist_ok=True)
    images = folder / IMAGES_DIR
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{IMAGES_DIR}-"))
    try:
        for label in CLASSES:
            (tmp / label).mkdir()
        chunks = [(start, min(start + _CHUNK, spec.images)) for start in range(0, spec.images, _CHUNK)]
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for future in [pool.submit(_write_chunk, spec, str(tmp), a, b) for a, b in chunks]:
                future.result()
        if images.exists():
            shutil.rmtree(images)
        os.replace(tmp, images)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rows = [[f"{IMAGES_DIR}/{spec.name(i)}", spec.label(i)] for i in range(spec.images)]
    write_text(folder / CSV_NAME, _csv_text(rows))
    return folder


def _csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows(rows)
    return out.getvalue()
