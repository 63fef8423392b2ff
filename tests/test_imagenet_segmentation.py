"""ImageNet top-k (packaged class names, local weights, offline message) and HRNet segmentation
through a tiny SavedModel with HRNet's signature, loaded by the same function as the TF Hub model."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from core import imagenet, segmentation
from core.models import WeightsUnavailable


def test_class_names_are_packaged_in_keras_order() -> None:
    names = imagenet.class_names()
    assert len(names) == 1000 and names[0] == ("n01440764", "tench") and names[281] == ("n02123045", "tabby")


def test_local_weights_file_gives_top_k(tmp_path: Path) -> None:
    model = keras.applications.MobileNetV2(weights=None, classes=1000)
    path = tmp_path / "mobilenet_v2.weights.h5"
    model.save_weights(path)
    loaded = imagenet.load_classifier("MobileNetV2", path)
    top = imagenet.top_k(loaded, "MobileNetV2", np.full((300, 200, 1), 128, np.uint8), k=7)
    assert len(top) == 7 and top["probability"].is_monotonic_decreasing and top["probability"].sum() <= 1.0 + 1e-6
    assert set(top["class"]) <= {n for _, n in imagenet.class_names()}


def test_missing_weights_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        imagenet.load_classifier("VGG16", tmp_path / "nope.h5")

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure")

    monkeypatch.setattr(keras.applications, "InceptionV3", offline)
    with pytest.raises(WeightsUnavailable, match=r"inception_v3_weights_tf_dim_ordering_tf_kernels\.h5.*\.keras/models"):
        imagenet.load_classifier("InceptionV3")
    wrong = tmp_path / "wrong.weights.h5"
    keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3)).save_weights(wrong)
    with pytest.raises(WeightsUnavailable, match="does not fit"):
        imagenet.load_classifier("MobileNetV2", wrong)


class _TinyHRNet(tf.Module):
    """HRNet's interface: predict(RGB/255, batched) -> (B, H, W, 33) softmax. Red pixels -> class 'Car'
    (index 5 after background), everything else -> 'Sky' (21)."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def predict(self, images):
        red = tf.cast(images[..., 0:1] > 0.5, tf.float32) * tf.cast(images[..., 2:3] < 0.5, tf.float32)
        logits = tf.concat([tf.zeros_like(red)] * 33, axis=-1)
        car = tf.one_hot(1 + 5, 33) * 10.0
        sky = tf.one_hot(1 + 21, 33) * 10.0
        return tf.nn.softmax(logits + red * car + (1 - red) * sky)


@pytest.fixture(scope="module")
def saved_hrnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hrnet") / "camvid-hrnet"
    tf.saved_model.save(_TinyHRNet(), str(folder))
    return folder


def test_segmentation_from_a_local_savedmodel(saved_hrnet: Path) -> None:
    model = segmentation.load_segmenter(str(saved_hrnet))
    photo = np.zeros((80, 120, 3), np.uint8)
    photo[:, :40] = (255, 0, 0)  # red on the left third
    rgb, probs = segmentation.run_inference(model, photo, max_side=60)
    assert rgb.shape == (40, 60, 3) and probs.shape == (40, 60, 32)
    classes = segmentation.class_map(probs)
    assert (classes[:, :18] == 5).all() and (classes[:, 22:] == 21).all()
    mask = segmentation.colour_mask(classes)
    assert tuple(mask[0, 0]) == (64, 0, 128) and tuple(mask[0, -1]) == (128, 128, 128)
    blended = segmentation.blend(rgb, mask, 0.25)
    assert tuple(blended[0, 0]) == (207, 0, 32)  # 0.75 * red photo + 0.25 * Car (64, 0, 128): no BGR/RGB swap
    assert tuple(blended[0, -1]) == (32, 32, 32)  # 0.75 * black + 0.25 * Sky (128, 128, 128)
    shares = segmentation.class_shares(classes)
    assert shares["class"].tolist() == ["Sky", "Car"] and shares["share"].sum() == pytest.approx(1.0)


def test_segmenter_offline_and_bad_folders_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow_hub as hub

    with pytest.raises(segmentation.SegmenterUnavailable, match="no saved_model.pb"):
        segmentation.load_segmenter(str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(hub, "load", offline)
    with pytest.raises(segmentation.SegmenterUnavailable, match="tf-hub-format=compressed"):
        segmentation.load_segmenter(segmentation.DEFAULT_HANDLE)
