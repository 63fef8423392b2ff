"""Augmentation: seeded determinism, identity when off, each layer really changes the image."""

from __future__ import annotations

import numpy as np
import pytest

from core.augment import AugmentConfig, augment_preview, build_augmentation

OFF = AugmentConfig(flip="none", rotation=0, translation=0, zoom=0, shear=0, contrast=0, brightness=0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((48, 48, 1), np.uint8)
    img[8:30, 5:20] = 200  # an asymmetric block, so flips and shifts show
    return np.clip(img.astype(int) + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


def test_same_seed_same_grid_and_other_seed_differs(image: np.ndarray) -> None:
    config = AugmentConfig(flip="horizontal", rotation=0.1, translation=0.1, zoom=0.2, shear=0.1, contrast=0.3, brightness=0.2)
    first, again = augment_preview(image, config, seed=7), augment_preview(image, config, seed=7)
    assert len(first) == 9 and all(a.shape == image.shape and a.dtype == np.uint8 for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = augment_preview(image, config, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert len({a.tobytes() for a in first}) > 1  # the nine versions differ from each other


def test_everything_off_is_identity(image: np.ndarray) -> None:
    assert [type(layer).__name__ for layer in build_augmentation(OFF).layers] == ["Identity"]
    assert all(np.array_equal(a, image) for a in augment_preview(image, OFF, n=3))


@pytest.mark.parametrize("name", ["rotation", "translation", "zoom", "shear", "contrast", "brightness"])
def test_each_layer_changes_the_image(image: np.ndarray, name: str) -> None:
    config = AugmentConfig(**{**OFF.to_dict(), name: 0.3})
    assert len(build_augmentation(config).layers) == 1
    outputs = augment_preview(image, config, n=4, seed=1)
    assert any(not np.array_equal(a, image) for a in outputs)


def test_flip_is_a_mirror(image: np.ndarray) -> None:
    config = AugmentConfig(**{**OFF.to_dict(), "flip": "horizontal"})
    outputs = augment_preview(image, config, n=8, seed=3)
    assert all(np.array_equal(a, image) or np.array_equal(a, image[:, ::-1]) for a in outputs)
    assert any(np.array_equal(a, image[:, ::-1]) for a in outputs)


@pytest.mark.parametrize("flip", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_flip_folded_into_the_affine_resampling_is_a_mirror(image: np.ndarray, flip: str) -> None:
    """With a geometric augmentation on, the flip is part of the one affine resampling (no RandomFlip layer)."""
    from core.augment import _random_affine_class

    config = AugmentConfig(**{**OFF.to_dict(), "flip": flip, "rotation": 0.1})
    assert [type(layer).__name__ for layer in build_augmentation(config).layers] == ["RandomAffine"]
    layer = _random_affine_class()(flip=flip, seed=2)  # zero ranges: only the flips act, on exact pixel centres
    outputs = np.asarray(layer(np.repeat(image[None].astype("float32"), 16, axis=0), training=True)).round().astype(np.uint8)
    mirrors = {"horizontal": [image[:, ::-1]], "vertical": [image[::-1]],
               "horizontal_and_vertical": [image[:, ::-1], image[::-1], image[::-1, ::-1]]}[flip]
    assert all(any(np.array_equal(a, m) for m in [image, *mirrors]) for a in outputs)
    assert all(any(np.array_equal(a, m) for a in outputs) for m in mirrors)


def test_bad_config_is_refused_and_round_trips() -> None:
    with pytest.raises(ValueError, match="flip must be"):
        AugmentConfig(flip="diagonal")
    with pytest.raises(ValueError, match="zoom must be between"):
        AugmentConfig(zoom=2)
    config = AugmentConfig(zoom=0.2)
    assert AugmentConfig.from_dict({**config.to_dict(), "unknown": 1}) == config


def test_augmentation_stays_float32_under_a_mixed_policy(image: np.ndarray) -> None:
    """Jobs set a mixed global policy before building the pipeline; the augmented images must stay float32."""
    import keras

    config = AugmentConfig(gamma=0.2, noise=0.01)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        augmentation = build_augmentation(config, seed=0)
        out = augmentation(np.repeat(image[None].astype("float32"), 2, axis=0), training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert {layer.compute_dtype for layer in augmentation.layers} == {"float32"} and out.dtype.name == "float32"


@pytest.mark.parametrize(("kind", "strength"), [("mixup", 0.2), ("cutmix", 1.0)])
def test_blends_mix_image_target_and_class_weight_alike(kind: str, strength: float) -> None:
    """Class-0 images are black and class-1 images white, so a blend's mean pixel is its share of class 1 (mixup: the
    blend weight; CutMix: the pasted box's area, or the rest of the image): the target and the sample weight must be
    blended by that same share, in float32 under a mixed policy (as jobs set it)."""
    import keras
    import tensorflow as tf

    from core.augment import blend_batches

    labels = np.array([0, 1] * 32, np.int32)
    images = np.repeat(labels.astype("float32")[:, None, None, None] * 255.0, 64, axis=1).repeat(64, axis=2)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        batches = tf.data.Dataset.from_tensors((images, labels)).repeat(2).map(blend_batches(kind, strength, {0: 2.0, 1: 0.5}, seed=0))
        (x1, y1, w1), (x2, _, _) = [tuple(np.asarray(t) for t in batch) for batch in batches]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    share = x1.mean(axis=(1, 2, 3)) / 255.0
    assert x1.dtype == np.float32 and y1.shape == (64, 1) and w1.shape == (64,)
    # Keras weighs a CutMix target by its box's exact area, whose edges fall between pixels: under a row and a column off
    tolerance = 1e-5 if kind == "mixup" else 2 / 64
    np.testing.assert_allclose(y1[:, 0], share, atol=tolerance)
    np.testing.assert_allclose(w1, 2.0 * (1 - share) + 0.5 * share, atol=1.5 * tolerance)
    blended = (share > 0.01) & (share < 0.99)
    assert 0 < blended.sum() < 64  # some blends, most near one image (a box pasted over its own class changes nothing)
    if kind == "cutmix":  # a pasted box, not a blend: every pixel is one image's or the other's
        assert set(np.unique(x1)) <= {0.0, 255.0}
    assert not np.allclose(x1, x2)  # a new draw every batch


def test_an_unknown_blend_is_refused() -> None:
    from core.augment import blend_batches

    with pytest.raises(ValueError, match="mixup, cutmix"):
        blend_batches("mosaic", 1.0)


@pytest.mark.parametrize(("kind", "strength"), [("mixup", 0.2), ("cutmix", 1.0)])
def test_blend_preview_shows_the_image_as_training_blends_it(kind: str, strength: float) -> None:
    """A black grayscale image blended with white RGB images of another size: each preview is what the pipeline makes
    of the image (square, its channels), its white share is its target (CutMix: within a row and a column), and a seed
    gives the same previews again."""
    from core.augment import blend_preview

    image = np.zeros((40, 30, 1), np.uint8)
    others = [np.full((50, 60, 3), 255, np.uint8) for _ in range(6)]
    previews = blend_preview(image, others, kind, strength, seed=3, size=48)
    assert len(previews) == 6 and all(img.shape == (48, 48, 1) and img.dtype == np.uint8 for img, _ in previews)
    for img, share in previews:
        assert 0.0 <= share <= 1.0
        assert img.mean() / 255 == pytest.approx(share, abs=0.01 if kind == "mixup" else 2 / 48)
    again = blend_preview(image, others, kind, strength, seed=3, size=48)
    assert all(np.array_equal(a, b) and s == t for (a, s), (b, t) in zip(previews, again, strict=True))


def test_blend_partners_are_the_other_class_and_need_two_classes() -> None:
    import pandas as pd

    from core.augment import blend_partners
    from core.errors import MedImageError

    table = pd.DataFrame({"path": [f"{i}.png" for i in range(10)], "label": ["NORMAL"] * 3 + ["PNEUMONIA"] * 7})
    assert blend_partners(table, "NORMAL") == ("PNEUMONIA", ["3.png", "4.png", "5.png", "6.png", "7.png", "8.png"])
    assert blend_partners(table, "PNEUMONIA", n=2) == ("NORMAL", ["0.png", "1.png"])
    with pytest.raises(MedImageError, match="for two classes .* this dataset has 3"):
        blend_partners(pd.concat([table, pd.DataFrame({"path": ["x.png"], "label": ["COVID"]})]), "NORMAL")
