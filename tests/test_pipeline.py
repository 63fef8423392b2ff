"""The input pipeline: TF fast path and reader path agree with read_image; shapes, labels, augmentation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom.data
import pytest
from PIL import Image

from core.augment import AugmentConfig
from core.dataset import DEMO, open_dataset
from core.image_reader import read_image
from core.pipeline import PipelineConfig, make_dataset, tf_decodable
from core.scan import scan_files


def _table(paths: list[str], labels: list[str]) -> pd.DataFrame:
    facts, failures = scan_files(paths)
    assert failures.empty
    return facts.assign(label=labels, split="train")


def test_tf_path_and_reader_path_give_the_same_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    png, tif = tmp_path / "a.png", tmp_path / "a.tif"
    Image.fromarray(arr).save(png)
    Image.fromarray(arr).save(tif)
    table = _table([str(png), str(tif)], ["x", "y"])
    assert tf_decodable(table).tolist() == [True, False]
    images, labels = next(iter(make_dataset(table, ["x", "y"], PipelineConfig(image_size=40, channels=3, batch_size=2))))
    assert images.shape == (2, 40, 40, 3) and images.dtype.name == "float32" and labels.numpy().tolist() == [0, 1]
    np.testing.assert_allclose(images[0].numpy(), images[1].numpy())
    np.testing.assert_allclose(images[0].numpy(), arr.astype(np.float32))


def test_exif_rotated_jpeg_and_dicom_go_through_the_reader(tmp_path: Path) -> None:
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    dcm = pydicom.data.get_testdata_file("CT_small.dcm")
    table = _table([str(path), dcm], ["a", "b"])
    assert tf_decodable(table).tolist() == [False, False]
    images, _ = next(iter(make_dataset(table, ["a", "b"], PipelineConfig(image_size=20, channels=1, batch_size=2))))
    rotated = images[0, ..., 0].numpy()
    assert rotated[:10].mean() > 200 and rotated[10:].mean() < 60  # white half on top, as read_image shows it
    expected = read_image(dcm).pixels.astype(np.float32)
    assert abs(images[1].numpy().mean() - expected.mean()) < 3


def test_demo_pipeline_batches_and_augments_only_when_asked() -> None:
    table = open_dataset(DEMO).table
    train = table[table["split"] == "train"].head(24)
    config = PipelineConfig(image_size=64, channels=1, batch_size=8, seed=1)
    plain = [b[0].numpy() for b in make_dataset(train, ["NORMAL", "PNEUMONIA"], config)]
    again = [b[0].numpy() for b in make_dataset(train, ["NORMAL", "PNEUMONIA"], config)]
    assert len(plain) == 3 and plain[0].shape == (8, 64, 64, 1)
    assert all(np.array_equal(a, b) for a, b in zip(plain, again, strict=True))
    augmented = [b[0].numpy() for b in make_dataset(train, ["NORMAL", "PNEUMONIA"], config, AugmentConfig(zoom=0.3))]
    assert not np.array_equal(augmented[0], plain[0])
    assert 0 <= augmented[0].min() and augmented[0].max() <= 255.5


def test_unknown_labels_are_refused() -> None:
    table = open_dataset(DEMO).table.head(3)
    with pytest.raises(ValueError, match="not among the model's classes"):
        make_dataset(table, ["PNEUMONIA"], PipelineConfig())


def test_16bit_png_uses_the_reader_window(tmp_path: Path) -> None:
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    path = tmp_path / "deep.png"
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    table = _table([str(path)], ["a"])
    assert not tf_decodable(table)[0]
    images, _ = next(iter(make_dataset(table, ["a"], PipelineConfig(image_size=8, channels=1, batch_size=1))))
    np.testing.assert_allclose(images[0].numpy(), read_image(path).pixels.astype(np.float32))
