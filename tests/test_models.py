"""The model zoo: every model builds with weights=None, gives the right output, and loads in safe mode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from core.catalog import BACKBONES, MODEL_NAMES
from core.errors import MedImageError
from core.models import ModelConfig, WeightsUnavailable, backbone_of, border_pixels, build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_model_builds_and_predicts(name: str) -> None:
    channels = 1 if name in ("smallnet", "mlp") else 3
    head = "multiclass" if name in ("vgg16", "resnet18") else "binary"
    n_classes = 3 if head == "multiclass" else 2
    config = ModelConfig(name=name, image_size=96, channels=channels, n_classes=n_classes, head=head, weights="none")
    model = build_model(config)
    out = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 96, 96, channels)).astype("float32"), verbose=0)
    assert out.shape == (2, n_classes if head == "multiclass" else 1)
    if head == "multiclass":
        np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-4)
    else:
        assert ((0 <= out) & (out <= 1)).all()


def test_ordinal_head_and_grayscale_backbone() -> None:
    model = build_model(ModelConfig(name="mobilenetv2", image_size=96, channels=1, n_classes=5, head="ordinal"))
    assert model.output_shape == (None, 1) and model.get_layer("prediction").activation.__name__ == "linear"
    assert model.get_layer("gray_to_rgb") is not None


def test_freeze_modes() -> None:
    frozen = build_model(ModelConfig(name="mobilenetv2", image_size=96, channels=3, freeze="feature_extraction"))
    tuned = build_model(ModelConfig(name="mobilenetv2", image_size=96, channels=3, freeze="fine_tune", fine_tune_layers=10))
    full = build_model(ModelConfig(name="mobilenetv2", image_size=96, channels=3, freeze="full"))
    counts = [len(m.trainable_weights) for m in (frozen, tuned, full)]
    assert counts[0] < counts[1] < counts[2]


def test_lp_ft_trains_the_head_first_then_every_layer_batchnorm_included() -> None:
    """fine_tune_layers 0: feature extraction holds BatchNorm at its (ImageNet) statistics, then the second phase trains
    every layer and BatchNorm learns (before, 0 froze every layer: a second phase that trained only the head)."""
    from core.models import set_backbone_trainable

    config = ModelConfig(name="mobilenetv2", alpha=0.35, image_size=64, channels=3, freeze="feature_extraction", fine_tune_layers=0)
    model = build_model(config)
    base = backbone_of(model)
    norm = next(layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization))
    x, y = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype("float32"), np.array([0, 1] * 4, "float32")

    def fit_once() -> np.ndarray:
        before = np.asarray(norm.moving_mean).copy()
        model.compile("adam", "binary_crossentropy")
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        return np.abs(np.asarray(norm.moving_mean) - before).max()

    assert all(not w.path.startswith(base.name) for w in model.trainable_weights)
    assert fit_once() == 0.0  # feature extraction: the statistics stay
    set_backbone_trainable(model, replace(config, freeze="fine_tune"))  # what the job's second phase does
    assert len(model.trainable_weights) == len(build_model(replace(config, freeze="full")).trainable_weights)
    assert fit_once() > 0.0  # every layer trains, and BatchNorm learns
    # the last-N-layers mode keeps BatchNorm at its statistics once unfrozen
    model = build_model(replace(config, fine_tune_layers=10))
    set_backbone_trainable(model, replace(config, freeze="fine_tune", fine_tune_layers=10))
    norm = next(layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization))
    assert fit_once() == 0.0


def test_saved_model_loads_in_safe_mode(tmp_path: Path) -> None:
    model = build_model(ModelConfig(name="mobilenetv2", image_size=64, channels=1))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.full((1, 64, 64, 1), 128, "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)


def test_a_border_crop_is_inside_the_model_and_the_borders_change_nothing(tmp_path: Path) -> None:
    """The crop is a layer, so a saved or exported model takes the whole image and cuts it the same way."""
    backbone = ModelConfig(name="mobilenetv2", image_size=96, channels=1, freeze="full", crop=0.1)
    assert backbone_of(build_model(backbone)).input_shape[1:3] == (76, 76)  # the centre only, at full resolution
    config = ModelConfig(name="xraynet", image_size=96, channels=1, dense=(), crop=0.1)
    model = build_model(config)
    assert border_pixels(config) == 10 and model.input_shape == (None, 96, 96, 1)
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 1)).astype("float32")
    scribbled = x.copy()
    scribbled[:, :10], scribbled[:, -10:], scribbled[:, :, :10], scribbled[:, :, -10:] = 0, 255, 17, 200
    np.testing.assert_allclose(model.predict(scribbled, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    inside = x.copy()
    inside[:, 40:56, 40:56] = 255
    assert not np.allclose(model.predict(inside, verbose=0), model.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(scribbled, verbose=0), model.predict(x, verbose=0), rtol=1e-5)
    assert ModelConfig.from_dict(config.to_dict()) == config and ModelConfig.from_dict({"name": "xraynet"}).crop == 0.0
    with pytest.raises(MedImageError, match="border crop must be between 0 and 0.3"):
        build_model(ModelConfig(crop=0.5))
    with pytest.raises(MedImageError, match=r"InceptionV3 cannot take 38x38 images \(the border crop leaves 38 of 96 px\).*at least 75"):
        build_model(ModelConfig(name="inceptionv3", image_size=96, channels=3, crop=0.3))
    with pytest.raises(MedImageError, match=r"xraynet cannot take 12x12 images \(the border crop leaves 12 of 32 px\)"):
        build_model(ModelConfig(name="xraynet", image_size=32, crop=0.3))


def test_local_weights_file_and_offline_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    first = base.layers[1].get_weights()[0]
    path = tmp_path / "mobilenet_notop.weights.h5"
    base.save_weights(path)
    model = build_model(ModelConfig(name="mobilenetv2", image_size=96, channels=3, weights=str(path)))
    np.testing.assert_allclose(model.get_layer("mobilenetv2_1.00_96").layers[1].get_weights()[0], first)
    with pytest.raises(WeightsUnavailable, match=BACKBONES["mobilenetv2"].file_for(1.0, 96)):
        build_model(ModelConfig(name="mobilenetv2", image_size=96, channels=3, weights=str(tmp_path / "missing.h5")))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: Name or service not known")  # what Keras raises without a network

    monkeypatch.setattr(keras.applications, "VGG16", offline)
    with pytest.raises(WeightsUnavailable, match=r"vgg16_weights_tf_dim_ordering_tf_kernels_notop\.h5.*\.keras/models.*'none'"):
        build_model(ModelConfig(name="vgg16", image_size=64, channels=3, weights="imagenet"))


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(MedImageError, match="Unknown model"):
        build_model(ModelConfig(name="alexnet"))
    with pytest.raises(MedImageError, match="binary head needs exactly 2"):
        build_model(ModelConfig(n_classes=3, head="binary"))
    assert ModelConfig.from_dict(ModelConfig(dense=(64, 32)).to_dict()) == ModelConfig(dense=(64, 32))


def test_precision_policy_follows_the_hardware() -> None:
    from core.device_info import cpu_bf16, precision_policy

    zen4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
    sapphire = "flags\t\t: fpu avx512f amx_bf16 amx_tile\n"
    skylake = "flags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
    assert cpu_bf16(zen4) and cpu_bf16(sapphire) and not cpu_bf16(skylake) and not cpu_bf16("")
    assert precision_policy([], True) == "mixed_bfloat16"
    assert precision_policy([], False) == "float32"
    # on a bfloat16 CPU, networks of depthwise convolutions stay float32 (bfloat16 slows them there); the rest gain
    assert precision_policy([], True, "resnet50") == precision_policy([], True, "xraynet") == "mixed_bfloat16"
    for depthwise in ("mobilenet", "mobilenetv2", "efficientnetb0", "efficientnetb3"):
        assert precision_policy([], True, depthwise) == "float32", depthwise
    v100, k80 = {"name": "V100", "compute_capability": (7, 0)}, {"name": "K80", "compute_capability": (3, 7)}
    assert precision_policy([v100], True) == "mixed_float16"  # a GPU decides, whatever the CPU
    assert precision_policy([v100], True, "mobilenetv2") == "mixed_float16"  # tensor cores run depthwise layers in float16
    assert precision_policy([k80], True) == "float32"


def test_the_image_size_help_names_the_backbones_not_trained_at_224() -> None:
    from core.catalog import native_sizes_sentence

    sentence = native_sizes_sentence()
    assert "InceptionV3 299" in sentence and "EfficientNetB3 300" in sentence
    assert "VGG16" not in sentence and "MobileNetV2" not in sentence  # both at 224, the sentence's rule
