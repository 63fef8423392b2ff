"""Grad-CAM and Grad-CAM++: where in the image the model looked for a class.

One base class does the plumbing (a model that returns the target layer's activations and the
class logits, one compiled forward + backward pass giving both the prediction and the map); each
method overrides only how channel weights come from gradients. Explained quantity: the class's
logit (for a sigmoid model, the log-odds of class 1, negated for class 0), not the probability,
whose gradient vanishes when the model is sure. The seeds' library always explained P(pneumonia),
even for a NORMAL prediction; here the class is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import keras
import numpy as np
import tensorflow as tf

COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS}


def spatial_layers(model: keras.Model) -> list[str]:
    """Top-level layers whose output is a feature map (batch, H > 1, W > 1, channels), last first.
    A nested backbone counts as one layer: its output is its last feature map."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name in ("augmentation", "crop", "preprocess", "intensity", "gray_to_rgb"):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            continue
        if shape is not None and len(shape) == 4 and (shape[1] or 2) > 1 and (shape[2] or 2) > 1:
            names.append(layer.name)
    return names[::-1]


def _outer_output(model: keras.Model, name: str):
    """The layer's output tensor in this model's graph. For a nested backbone `layer.output` is its
    own internal tensor, not connected to the outer inputs; the node of its call here is."""
    layer = model.get_layer(name)
    for node in getattr(layer, "_inbound_nodes", [])[::-1]:
        tensors = node.output_tensors
        try:
            keras.Model(model.inputs, tensors[0])
            return tensors[0]
        except ValueError:
            continue
    return layer.output


def _logit_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The final Dense layer when it is one (our models name it 'prediction'): its pre-activation
    output is the logit, computed exactly rather than inverted from a saturated probability."""
    last = model.layers[-1]
    return last if isinstance(last, keras.layers.Dense) else None


@dataclass(frozen=True)
class Explanation:
    probabilities: np.ndarray  # (n, outputs): the model's own output
    heatmaps: np.ndarray  # (n, H, W) in [0, 1], at the input's size
    layer: str
    class_index: int


class GradCam:
    """Grad-CAM (Selvaraju et al. 2017): channel weights = spatial mean of the gradients."""

    method = "Grad-CAM"

    def __init__(self, model: keras.Model, layer: str | None = None) -> None:
        choices = spatial_layers(model)
        if not choices:
            raise ValueError("This model has no layer with a spatial output (e.g. an MLP), so Grad-CAM cannot map it.")
        self.layer = layer or choices[0]
        if self.layer not in choices:
            raise ValueError(f"Layer '{self.layer}' has no spatial output; choose one of: {', '.join(choices)}.")
        dense = _logit_layer(model)
        outputs = [_outer_output(model, self.layer), model.output]
        if dense is not None:
            outputs.append(dense.input)
        self.dense = dense
        crop = next((layer for layer in model.layers if layer.name == "crop"), None)
        # a border crop inside the model: the maps cover the central region, and the cut borders get no heat
        self.cropping = tuple(tuple(side) for side in crop.cropping) if crop is not None else ((0, 0), (0, 0))
        self.crops = any(any(side) for side in self.cropping)
        self.model = keras.Model(model.inputs, outputs)
        self._step = tf.function(self._forward_backward, reduce_retracing=True)

    def _logits(self, outputs) -> tf.Tensor:
        if self.dense is not None:
            kernel, bias = self.dense.kernel, self.dense.bias
            return tf.matmul(tf.cast(outputs[2], kernel.dtype), kernel) + (bias if bias is not None else 0.0)
        p = tf.clip_by_value(tf.cast(outputs[1], tf.float32), 1e-7, 1 - 1e-7)
        return tf.math.log(p) - tf.math.log1p(-p) if p.shape[-1] == 1 else tf.math.log(p)

    def _forward_backward(self, images: tf.Tensor, class_index: tf.Tensor):
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=False)
            features = outputs[0]
            logits = tf.cast(self._logits(outputs), tf.float32)
            if logits.shape[-1] == 1:  # sigmoid (or regression): class 1 = +logit, class 0 = -logit
                target = logits[:, 0] * tf.where(class_index == 0, -1.0, 1.0)
            else:
                target = tf.gather(logits, class_index, axis=1)
        grads = tape.gradient(target, features)
        return outputs[1], tf.cast(features, tf.float32), tf.cast(grads, tf.float32)

    def weights(self, features: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(grads, axis=(1, 2))

    def explain(self, images: np.ndarray, class_index: int = 1) -> Explanation:
        """Probabilities and heat maps for a batch of images (n, S, S, C) valued 0-255, in one pass."""
        images = tf.convert_to_tensor(np.asarray(images, np.float32))
        probabilities, features, grads = self._step(images, tf.constant(class_index, tf.int32))
        w = self.weights(features, grads)
        cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", features, w))
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        cam = tf.where(peak > 0, cam / tf.maximum(peak, 1e-12), cam)
        (top, bottom), (left, right) = self.cropping
        height, width = images.shape[1:3]
        heat = tf.image.resize(cam[..., None], (height - top - bottom, width - left - right), method="bilinear")[..., 0]
        heat = tf.pad(heat, [[0, 0], [top, bottom], [left, right]])
        return Explanation(np.asarray(probabilities, float), np.clip(np.asarray(heat), 0, 1), self.layer, class_index)


class GradCamPlusPlus(GradCam):
    """Grad-CAM++ (Chattopadhay et al. 2018): pixel-weighted gradients, better for several regions."""

    method = "Grad-CAM++"

    def weights(self, features: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
        g2, g3 = grads**2, grads**3
        denominator = 2.0 * g2 + tf.reduce_sum(features, axis=(1, 2), keepdims=True) * g3
        alpha = g2 / tf.where(denominator != 0, denominator, tf.ones_like(denominator))
        return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))


METHODS = {"Grad-CAM": GradCam, "Grad-CAM++": GradCamPlusPlus}


def colorize(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A [0, 1] heat map as an RGB uint8 image."""
    bgr = cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), COLORMAPS[colormap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """The heat map blended over the image (uint8, gray or RGB, any size: the map is resized to it)."""
    rgb = image if image.ndim == 3 and image.shape[-1] == 3 else np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=-1)
    heat = cv2.resize(np.asarray(heatmap, np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(rgb.astype(np.uint8), 1.0 - alpha, colorize(heat, colormap), alpha, 0)
