"""Normalisation and morphology on known arrays."""

from __future__ import annotations

import numpy as np
import pytest

from core import morphology
from core.normalize import METHODS, normalize, to_display

X = np.array([[0, 50], [100, 250]], np.uint8)[..., None]


def test_scaling_formulas_on_known_values() -> None:
    assert np.allclose(normalize(X, "/255")[..., 0], [[0, 50 / 255], [100 / 255, 250 / 255]])
    assert np.allclose(normalize(X, "min-max")[..., 0], [[0, 0.2], [0.4, 1.0]])  # (x - min) / (max - min)
    mean, std = X.mean(), X.std()
    assert np.allclose(normalize(X, "z-score")[..., 0], (X[..., 0] - mean) / std)
    assert np.allclose(normalize(X, "per-image mean subtraction")[..., 0], X[..., 0] - 100.0)


def test_percentile_window_clips_tails() -> None:
    ramp = np.arange(101, dtype=np.uint8).reshape(1, 101, 1)
    out = normalize(ramp, "percentile 5-95")[0, :, 0]
    assert out[5] == pytest.approx(0) and out[95] == pytest.approx(1) and out[50] == pytest.approx(0.5)
    assert out.min() == 0 and out.max() == 1


def test_imagenet_caffe_is_bgr_minus_means() -> None:
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    out = normalize(rgb, "ImageNet mean (caffe, BGR)")[0, 0]
    assert np.allclose(out, [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-3)
    gray = normalize(np.full((1, 1, 1), 100, np.uint8), "ImageNet mean (caffe, BGR)")
    assert gray.shape == (1, 1, 3)


def test_equalisation_spreads_a_narrow_histogram() -> None:
    narrow = (np.arange(64 * 64).reshape(64, 64, 1) % 20 + 100).astype(np.uint8)
    for method in ("histogram equalisation", "CLAHE"):
        out = normalize(narrow, method)
        assert out.shape == narrow.shape and out.dtype == np.float32
        assert out.max() - out.min() > (narrow.max() - narrow.min()) / 255.0 * 2


def test_every_method_keeps_shape_and_unknown_is_refused() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    for method in METHODS:
        out = normalize(rgb, method)
        assert out.shape == rgb.shape and to_display(out).dtype == np.uint8
    with pytest.raises(ValueError, match="Unknown normalisation"):
        normalize(rgb, "magic")


def test_threshold_and_otsu() -> None:
    img = np.zeros((10, 10), np.uint8)
    img[:, 5:] = 200
    mask, used = morphology.threshold(img, 100)
    assert used == 100 and mask.sum() == 50
    otsu_mask, otsu = morphology.threshold(img)
    assert 0 <= otsu < 200 and np.array_equal(otsu_mask, mask)


def test_channels() -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 150, 200
    assert morphology.channel(rgb, "G")[0, 0] == 150
    assert morphology.channel(rgb, "gray")[0, 0] == round(0.299 * 100 + 0.587 * 150 + 0.114 * 200)
    assert morphology.channel(rgb[..., :1], "R").shape == (2, 2)


def test_morphology_on_a_known_mask() -> None:
    mask = np.zeros((15, 15), bool)
    mask[4:11, 4:11] = True  # 7x7 square
    mask[1, 1] = True  # speck
    eroded = morphology.apply(mask, "erosion", "square", 1)
    assert eroded.sum() == 25 and not eroded[1, 1]
    assert morphology.apply(mask, "dilation", "square", 1).sum() == 81 + 9
    opened = morphology.apply(mask, "opening", "square", 1)
    assert opened.sum() == 49 and not opened[1, 1]  # the speck is gone, the square survives
    holed = mask.copy()
    holed[7, 7] = False
    assert morphology.apply(holed, "closing", "disk", 1)[7, 7]
    assert morphology.footprint("disk", 3).shape == (7, 7) and morphology.footprint("disk", 3).sum() == 29


def test_grayscale_morphology_and_bad_arguments() -> None:
    img = np.zeros((9, 9), np.uint8)
    img[4, 4] = 255
    assert morphology.apply(img, "dilation", "square", 1)[3:6, 3:6].min() == 255
    assert morphology.apply(img, "erosion", "disk", 1).max() == 0
    with pytest.raises(ValueError, match="Unknown operation"):
        morphology.apply(img, "melt")
    with pytest.raises(ValueError, match="disk or square"):
        morphology.footprint("star", 2)
