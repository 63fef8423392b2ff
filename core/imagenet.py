"""ImageNet top-k with the classic keras.applications classifiers (seed 003, section 07).

Class names come from a packaged list (core/data/imagenet_class_index.json, Keras' format), so
only the weights can be missing offline; then the message names the exact file and folder.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from core.models import WeightsUnavailable

CLASS_INDEX = Path(__file__).with_name("data") / "imagenet_class_index.json"
KERAS_MODELS = Path("~/.keras/models").expanduser()


@dataclass(frozen=True)
class Classifier:
    constructor: str
    module: str
    size: int
    weights_file: str  # the with-top file Keras downloads into ~/.keras/models


CLASSIFIERS = {
    "VGG16": Classifier("VGG16", "vgg16", 224, "vgg16_weights_tf_dim_ordering_tf_kernels.h5"),
    "ResNet50": Classifier("ResNet50", "resnet", 224, "resnet50_weights_tf_dim_ordering_tf_kernels.h5"),
    "InceptionV3": Classifier("InceptionV3", "inception_v3", 299, "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"),
    "MobileNetV2": Classifier("MobileNetV2", "mobilenet_v2", 224, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"),
}


@functools.cache
def class_names() -> list[tuple[str, str]]:
    """(WordNet id, name) for the 1,000 ImageNet classes, in the models' output order."""
    index = json.loads(CLASS_INDEX.read_text())
    return [tuple(index[str(i)]) for i in range(len(index))]


def weights_hint(name: str) -> str:
    spec = CLASSIFIERS[name]
    return (f"ImageNet weights for {name} could not be downloaded. Put '{spec.weights_file}' into {KERAS_MODELS} "
            "(Keras looks there before downloading) or choose it as a local weights file.")


def load_classifier(name: str, weights: str | Path | None = None) -> keras.Model:
    """The full ImageNet classifier: weights from a local file when given, else Keras' cache or a download."""
    if name not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier '{name}'. Choose one of: {', '.join(CLASSIFIERS)}.")
    spec = CLASSIFIERS[name]
    constructor = getattr(keras.applications, spec.constructor)
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"The weights file {path} does not exist. {weights_hint(name)}")
        model = constructor(weights=None, classes=1000)
        try:
            model.load_weights(str(path))
        except Exception as exc:  # noqa: BLE001 - h5 loaders raise many types for a wrong file
            raise WeightsUnavailable(f"{path.name} does not fit {name} with its top ({exc}). Use '{spec.weights_file}'.") from exc
        return model
    try:
        return constructor(weights="imagenet")
    except Exception as exc:  # noqa: BLE001 - offline downloads fail with URL, socket and HTTP errors alike
        raise WeightsUnavailable(weights_hint(name)) from exc


def top_k(model: keras.Model, name: str, pixels: np.ndarray, k: int = 5) -> pd.DataFrame:
    """The k most probable ImageNet classes for a uint8 image (H, W, 1|3), with the model's own
    size and preprocess_input."""
    spec = CLASSIFIERS[name]
    rgb = pixels if pixels.shape[-1] == 3 else np.repeat(pixels, 3, axis=-1)
    x = tf.image.resize(tf.convert_to_tensor(rgb, tf.float32), (spec.size, spec.size), antialias=True)
    x = getattr(keras.applications, spec.module).preprocess_input(np.array(x)[None])  # it scales in place: a writable copy
    probabilities = np.asarray(model.predict_on_batch(x))[0]
    order = np.argsort(probabilities)[::-1][:k]
    names = class_names()
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "wordnet_id": [names[i][0] for i in order],
                         "class": [names[i][1] for i in order], "probability": probabilities[order].astype(float)})
