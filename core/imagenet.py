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

from core import weights as weight_files
from core.models import WeightsUnavailable

CLASS_INDEX = Path(__file__).with_name("data") / "imagenet_class_index.json"


@dataclass(frozen=True)
class Classifier:
    constructor: str
    module: str
    size: int
    weights_file: str  # the with-top file Keras downloads into ~/.keras/models
    alpha: float | None = None  # MobileNet widths


CLASSIFIERS = {
    "VGG16": Classifier("VGG16", "vgg16", 224, "vgg16_weights_tf_dim_ordering_tf_kernels.h5"),
    "ResNet50": Classifier("ResNet50", "resnet", 224, "resnet50_weights_tf_dim_ordering_tf_kernels.h5"),
    "InceptionV3": Classifier("InceptionV3", "inception_v3", 299, "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"),
    **{f"MobileNetV2-{a}": Classifier("MobileNetV2", "mobilenet_v2", 224, weight_files.mobilenet_v2_file(a, 224, top=True), a)
       for a in weight_files.MOBILENET_V2_ALPHAS},
    **{f"MobileNet-{a}": Classifier("MobileNet", "mobilenet", 224, weight_files.mobilenet_file(a, 224, top=True), a)
       for a in weight_files.MOBILENET_ALPHAS},
}
ALIASES = {"MobileNetV2": "MobileNetV2-1.0", "MobileNet": "MobileNet-1.0"}


def resolve(name: str) -> str:
    """The classifier's key for a name as a user types it: 'mobilenet-0.25', 'vgg16', 'MobileNetV2'."""
    lowered = {k.lower(): k for k in CLASSIFIERS} | {k.lower(): v for k, v in ALIASES.items()}
    key = name.strip().lower().replace("_", "-")
    if key in lowered:
        return lowered[key]
    if "-" in key:  # mobilenet-0.50 -> mobilenet-0.5
        base, _, alpha = key.rpartition("-")
        try:
            return lowered[f"{base}-{float(alpha)}"]
        except (ValueError, KeyError):
            pass
    raise ValueError(f"Unknown classifier '{name}'. Choose one of: {', '.join(CLASSIFIERS)}.")


@functools.cache
def class_names() -> list[tuple[str, str]]:
    """(WordNet id, name) for the 1,000 ImageNet classes, in the models' output order."""
    index = json.loads(CLASS_INDEX.read_text())
    return [tuple(index[str(i)]) for i in range(len(index))]


def weights_hint(name: str) -> str:
    spec = CLASSIFIERS[resolve(name)]
    return f"ImageNet weights for {name} could not be downloaded. {weight_files.where_to_put(spec.weights_file)}"


def weights_source(name: str, weights: str | Path | None = None) -> weight_files.WeightsInfo | None:
    """The weights file a classifier would load (the given one, or the official name in a weights folder),
    described with its size, hash and verification; None when it would have to be downloaded."""
    spec = CLASSIFIERS[resolve(name)]
    path = Path(weights).expanduser() if weights else weight_files.find_weights(spec.weights_file)
    return weight_files.describe(path, spec.weights_file) if path is not None and path.is_file() else None


def load_classifier(name: str, weights: str | Path | None = None) -> keras.Model:
    """The full ImageNet classifier: weights from a local file when given, else the official file in a weights
    folder (MEDIMAGE_WEIGHTS_DIR, ~/.keras/models), else Keras' download."""
    name = resolve(name)
    spec = CLASSIFIERS[name]
    constructor = getattr(keras.applications, spec.constructor)
    kwargs = {"alpha": spec.alpha} if spec.alpha is not None else {}
    path = Path(weights).expanduser() if weights else weight_files.find_weights(spec.weights_file)
    if weights and not path.is_file():
        raise WeightsUnavailable(f"The weights file {path} does not exist. {weights_hint(name)}")
    if path is not None:
        model = constructor(weights=None, classes=1000, **kwargs)
        try:
            model.load_weights(str(path))
        except Exception as exc:  # noqa: BLE001 - h5 loaders raise many types for a wrong file
            raise WeightsUnavailable(f"{path.name} does not fit {name} with its top ({exc}). Use '{spec.weights_file}'.") from exc
        return model
    try:
        return constructor(weights="imagenet", **kwargs)
    except Exception as exc:  # noqa: BLE001 - offline downloads fail with URL, socket and HTTP errors alike
        raise WeightsUnavailable(weights_hint(name)) from exc


def prepare(name: str, pixels: np.ndarray) -> np.ndarray:
    """A uint8 image (H, W, 1|3) as the classifier's input batch: its own size and preprocess_input."""
    spec = CLASSIFIERS[resolve(name)]
    rgb = pixels if pixels.shape[-1] == 3 else np.repeat(pixels, 3, axis=-1)
    x = tf.image.resize(tf.convert_to_tensor(rgb, tf.float32), (spec.size, spec.size), antialias=True)
    return getattr(keras.applications, spec.module).preprocess_input(np.array(x)[None])  # it scales in place: a writable copy


def top_k(model: keras.Model, name: str, pixels: np.ndarray, k: int = 5) -> pd.DataFrame:
    """The k most probable ImageNet classes for a uint8 image (H, W, 1|3), with the model's own
    size and preprocess_input."""
    probabilities = np.asarray(model.predict_on_batch(prepare(name, pixels)))[0]
    order = np.argsort(probabilities)[::-1][:k]
    names = class_names()
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "index": order.astype(int),
                         "wordnet_id": [names[i][0] for i in order], "class": [names[i][1] for i in order],
                         "probability": probabilities[order].astype(float)})


def explain(model: keras.Model, name: str, pixels: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM of one ImageNet class on the classifier's last feature map, at the classifier's input size."""
    from core.gradcam import GradCam

    return GradCam(model).explain(prepare(name, pixels), class_index).heatmaps[0]
