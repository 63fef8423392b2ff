"""The model zoo: small networks trained from scratch and keras.applications backbones.

Every model takes raw 0-255 images and normalises inside its own graph (Rescaling, or the
backbone's own `preprocess_input` as a registered layer), so a saved model needs no preprocessing
code beside it and loads with Keras `safe_mode` (no Lambda layers anywhere).

Heads: "binary" (1 sigmoid unit), "multiclass" (softmax over the classes), "ordinal" (1 linear unit
regressing the class index, trained with MSE; classes by cut-points).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
from keras import layers

from core import weights as weight_files
from core.catalog import BACKBONES, FREEZE_MODES, HEADS, INTENSITY, MAX_CROP, MODEL_NAMES, SCRATCH
from core.errors import MedImageError


class WeightsUnavailable(MedImageError):
    """ImageNet weights could not be downloaded and no local copy was found."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "smallnet"
    image_size: int = 128
    channels: int = 1
    n_classes: int = 2
    head: str = "binary"
    weights: str = "none"  # "imagenet", "none", or a path to a weights file
    freeze: str = "feature_extraction"
    fine_tune_layers: int = 20  # 0: every layer, BatchNorm included (the head first, then the whole network: LP-FT)
    pooling: str = "auto"  # "gap", "flatten", or "auto": flatten for SmallNet (seed 001), GAP for the rest
    dense: tuple[int, ...] = field(default=(256,))
    dropout: float = 0.4
    l1: float = 0.0
    l2: float = 0.0
    batch_norm: bool = False
    intensity: str = "rescale"  # "rescale" (/255; a backbone's own preprocessing), "standardize" or "equalize" per image
    alpha: float = 1.0  # MobileNet / MobileNetV2 width multiplier
    crop: float = 0.0  # share of each border cut away inside the model (markers, collimation); 0 = the whole image

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        values = dict(values)
        if "dense" in values:
            values["dense"] = tuple(values["dense"])
        return cls(**values)


@keras.saving.register_keras_serializable(package="medimage")
class BackbonePreprocess(layers.Layer):
    """A backbone's own keras.applications `preprocess_input`, as a layer that saves and loads safely."""

    def __init__(self, module: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.module = module

    def call(self, inputs):
        return getattr(keras.applications, self.module).preprocess_input(inputs)

    def get_config(self) -> dict:
        return {**super().get_config(), "module": self.module}


@keras.saving.register_keras_serializable(package="medimage")
class IntensityNorm(layers.Layer):
    """Per-image intensity normalisation inside the model, so exposure differences between scanners
    matter less and a saved model carries it to the Predict page.

    "standardize": zero mean, unit standard deviation per image (tf.image.per_image_standardization).
    "equalize": histogram equalisation, each pixel -> the fraction of the image's pixels at or
    below it (the empirical CDF), values in (0, 1]; any monotone change of exposure gives the same output.
    """

    def __init__(self, mode: str = "standardize", **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in INTENSITY[1:]:
            raise ValueError(f"IntensityNorm mode must be 'standardize' or 'equalize'; got '{mode}'.")
        self.mode = mode

    def call(self, inputs):
        import tensorflow as tf

        x = tf.cast(inputs, "float32")
        if self.mode == "standardize":
            return tf.image.per_image_standardization(x)
        # rank = how many of the image's pixels are <= this one: sort, give each run of equal values the position where
        # it ends, and scatter those back to pixel order with a segment max (one value a segment). One sort: inverting
        # the order by a second argsort cost as much again, and tf.scatter_nd is ~6x a segment op on TF's CPU. Built
        # from TFLite's own ops (sort, cumsum, segment max, gather); tf.searchsorted, which gives the same ranks, made
        # every equalising model fail to convert to TFLite
        shape = tf.shape(x)
        batch = shape[0]
        flat = tf.reshape(x, [batch, -1])
        n = tf.shape(flat)[1]
        order = tf.argsort(flat, axis=1, stable=True)
        ordered = tf.gather(flat, order, batch_dims=1)
        starts = tf.concat([tf.ones([batch, 1], tf.int32), tf.cast(tf.not_equal(ordered[:, 1:], ordered[:, :-1]), tf.int32)], axis=1)
        run = tf.cumsum(starts, axis=1) - 1 + tf.range(batch)[:, None] * n  # each run of equal values: one id in the batch
        ends = tf.math.unsorted_segment_max(tf.tile(tf.range(1, n + 1)[None], [batch, 1]), run, batch * n)
        pixel = order + tf.range(batch)[:, None] * n  # where each sorted value came from
        ranks = tf.math.unsorted_segment_max(tf.gather(ends, run), pixel, batch * n)
        return tf.reshape(tf.cast(ranks, "float32") / tf.cast(n, "float32"), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


def _normalise(inputs, config: ModelConfig):
    if config.intensity == "rescale":
        return layers.Rescaling(1 / 255.0)(inputs)
    # float32 under mixed precision too: the ranks of bfloat16-rounded pixels would tie
    return IntensityNorm(config.intensity, name="intensity", dtype="float32")(inputs)


def _backbone_intensity(image, config: ModelConfig):
    """A backbone's input after per-image normalisation, back on the 0-255 scale its own preprocessing expects:
    equalised (0, 1] x 255, standardised +/-3 sd -> 0-255. On one channel (a grayscale pipeline) before the gray-to-RGB
    copy: ranking a 224 px image's pixels costs a third of ranking its three identical channels."""
    if config.intensity == "rescale":
        return image
    x = _normalise(image, config)
    scale, offset = (255.0, 0.0) if config.intensity == "equalize" else (127.5 / 3, 127.5)
    return layers.Rescaling(scale, offset, name="intensity_to_255", dtype="float32")(x)


def border_pixels(config: ModelConfig) -> int:
    """Pixels cut from each border by `config.crop`; the cut is inside the model, so training, Grad-CAM, adaptation
    and an exported file all see the same central region of the raw image."""
    if not 0.0 <= config.crop <= MAX_CROP:
        raise MedImageError(f"The border crop must be between 0 and {MAX_CROP} of each side; got {config.crop}.")
    return round(config.crop * config.image_size)


def _too_small(config: ModelConfig, what: str, why: str = ".") -> MedImageError:
    side = config.image_size - 2 * border_pixels(config)
    cut = f" (the border crop leaves {side} of {config.image_size} px)" if config.crop else ""
    return MedImageError(f"{what} cannot take {side}x{side} images{cut}{why} Use a larger image size or a smaller border crop.")


def n_outputs(config: ModelConfig) -> int:
    return config.n_classes if config.head == "multiclass" else 1


def _output(x, config: ModelConfig):
    activation = {"binary": "sigmoid", "multiclass": "softmax", "ordinal": None}[config.head]
    # float32 outputs keep the loss stable under mixed precision
    return layers.Dense(n_outputs(config), activation=activation, dtype="float32", name="prediction")(x)


def _pool(x, config: ModelConfig, auto: str):
    pooling = auto if config.pooling == "auto" else config.pooling
    return layers.GlobalAveragePooling2D(name="gap")(x) if pooling == "gap" else layers.Flatten(name="flatten")(x)


def _head(x, config: ModelConfig):
    x = _pool(x, config, "gap")
    if config.batch_norm:
        x = layers.BatchNormalization()(x)
    regularizer = keras.regularizers.L1L2(config.l1, config.l2) if (config.l1 or config.l2) else None
    for units in config.dense:
        x = layers.Dense(units, activation="relu", kernel_regularizer=regularizer)(x)
        if config.dropout:
            x = layers.Dropout(config.dropout)(x)
    return _output(x, config)


def _smallnet(inputs, config: ModelConfig):
    """Seed 001: Conv 32 -> 64 -> 64 (3x3, ReLU) each followed by 2x2 max-pooling, then Flatten (or GAP),
    Dense 64 ReLU, and the output layer.

    Flatten by default: it keeps where a finding is. With GAP the demo set's local opacities average
    away and validation accuracy stayed at 0.43-0.50 for 12 epochs; with Flatten it reached 0.98.
    """
    x = _normalise(inputs, config)
    for filters in (32, 64, 64):
        x = layers.Conv2D(filters, 3, activation="relu", padding="same")(x)
        x = layers.MaxPooling2D()(x)
    x = _pool(x, config, "flatten")
    x = layers.Dense(64, activation="relu")(x)
    return _output(x, config)


def _cifar_cnn(inputs, config: ModelConfig):
    """Seed 003: three blocks (32, 64, 64) of two 3x3 convs + max-pool, Dense 512, dropout 0.25 / 0.5."""
    x = _normalise(inputs, config)
    for filters in (32, 64, 64):
        x = layers.Conv2D(filters, 3, activation="relu", padding="same")(x)
        x = layers.Conv2D(filters, 3, activation="relu", padding="same")(x)
        x = layers.MaxPooling2D()(x)
        if config.dropout:
            x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    if config.dropout:
        x = layers.Dropout(0.5)(x)
    return _output(x, config)


def _mlp(inputs, config: ModelConfig):
    """Seed 003: Flatten -> Dense 512 -> Dense 256 (ReLU, dropout)."""
    x = layers.Flatten()(_normalise(inputs, config))
    for units in (512, 256):
        x = layers.Dense(units, activation="relu")(x)
        if config.dropout:
            x = layers.Dropout(config.dropout)(x)
    return _output(x, config)


def _resnet18(inputs, config: ModelConfig):
    """Seed 002: ResNet-18 (basic blocks 64-128-256-512, two each), GAP."""
    x = _normalise(inputs, config)
    x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for stage, filters in enumerate((64, 128, 256, 512)):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
            y = layers.ReLU()(layers.BatchNormalization()(y))
            y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=strides, use_bias=False)(shortcut))
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    return _output(layers.GlobalAveragePooling2D()(x), config)


def _xraynet(inputs, config: ModelConfig):
    """The default X-ray recipe's network (issue 7): five 3x3 conv blocks 24-48-96-192-192 with
    BatchNorm, max-pooling after the first four, global average pooling, dropout, output.

    Small enough for a 2-core CPU epoch over ~4,000 images at 128 px in about a minute; BatchNorm
    and GAP instead of SmallNet's Flatten + Dense keep it from memorising where a hospital puts
    its labels and markers. BatchNorm momentum 0.9, not Keras' 0.99: with the default the moving
    statistics lag for hundreds of steps, and on the demo set (8 steps an epoch) validation
    accuracy sat at 0.5 for ten epochs while AUC was 1.0.
    """
    x = _normalise(inputs, config)
    for i, filters in enumerate((24, 48, 96, 192, 192)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
        if i < 4:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if config.dropout:
        x = layers.Dropout(config.dropout)(x)
    return _output(x, config)


def weights_hint(name: str, alpha: float = 1.0, size: int = 224) -> str:
    """Where a user puts ImageNet weights for a backbone when this machine cannot download them."""
    spec = BACKBONES[name]
    return (f"ImageNet weights for {spec.constructor} could not be downloaded. "
            f"{weight_files.where_to_put(spec.file_for(alpha, size))} Or train with weights 'none' (from scratch).")


def imagenet_weights_file(config: ModelConfig) -> Path | None:
    """The backbone's official ImageNet file found in a weights folder (core.weights.weights_dirs), or None."""
    return weight_files.find_weights(BACKBONES[config.name].file_for(config.alpha, config.image_size))


def _constructor_kwargs(config: ModelConfig) -> dict:
    spec = BACKBONES[config.name]
    side = config.image_size - 2 * border_pixels(config)  # the backbone sees the cropped image (its weights fit any size)
    kwargs = {"include_top": False, "input_shape": (side, side, 3)}
    if spec.alphas:
        kwargs["alpha"] = config.alpha
    return kwargs


def _load_weights(base, path: Path, config: ModelConfig) -> None:
    spec = BACKBONES[config.name]
    try:
        base.load_weights(str(path))
    except Exception as exc:  # noqa: BLE001 - h5/keras loaders raise many types for a wrong file
        raise WeightsUnavailable(f"{path.name} does not fit {spec.constructor}"
                                 f"{f' alpha {config.alpha}' if spec.alphas else ''} without its top ({exc}). "
                                 f"Use '{spec.file_for(config.alpha, config.image_size)}'.") from exc


def _backbone(config: ModelConfig):
    spec = BACKBONES[config.name]
    kwargs = _constructor_kwargs(config)

    def constructor(**more):
        try:
            return getattr(keras.applications, spec.constructor)(**more)
        except ValueError as exc:  # e.g. InceptionV3 under 75 px: the job would fail with Keras' words only
            raise _too_small(config, spec.constructor, f": {exc}.") from exc

    weights = config.weights
    if spec.alphas and weights == "imagenet" and config.alpha not in spec.alphas:
        raise WeightsUnavailable(f"{spec.constructor} has ImageNet weights for alpha {', '.join(map(str, spec.alphas))} "
                                 f"only; got {config.alpha}.")
    if weights == "imagenet":
        found = imagenet_weights_file(config)
        if found is None:
            try:  # Keras' own download into ~/.keras/models
                return constructor(weights="imagenet", **kwargs)
            except MedImageError:
                raise
            except Exception as exc:  # noqa: BLE001 - offline downloads fail with URL, socket and HTTP errors alike
                raise WeightsUnavailable(weights_hint(config.name, config.alpha, config.image_size)) from exc
        base = constructor(weights=None, **kwargs)
        _load_weights(base, found, config)
        return base
    base = constructor(weights=None, **kwargs)
    if weights not in ("none", "", None):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"The weights file {path} does not exist. {weights_hint(config.name, config.alpha, config.image_size)}")
        _load_weights(base, path, config)
    return base


def _freeze(base, config: ModelConfig) -> None:
    if config.freeze == "full":
        base.trainable = True
    elif config.freeze == "feature_extraction":
        base.trainable = False
    elif config.fine_tune_layers == 0:  # every layer, BatchNorm included: the second phase of LP-FT
        base.trainable = True
    else:  # fine-tune the last N layers; BatchNorm stays frozen so its statistics are not wrecked
        base.trainable = True
        for layer in base.layers[: -config.fine_tune_layers]:
            layer.trainable = False
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False


def backbone_of(model: keras.Model):
    """The nested keras.applications network inside one of our transfer models, or None for scratch models."""
    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer, nested backbones' layers included."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(all_layers(layer))
    return out


def set_backbone_trainable(model: keras.Model, config: ModelConfig) -> None:
    """Apply `config.freeze` to a built model's backbone (the model must be compiled again afterwards)."""
    base = backbone_of(model)
    if base is not None:
        _freeze(base, config)


def head_for_classes(config: ModelConfig, n_classes: int) -> ModelConfig:
    """The model config fitted to a dataset's class count: a binary head (the default) becomes a softmax over 3+
    classes, and every head gets the count. Without this a 3-class dataset trained one sigmoid unit on labels 0/1/2
    and completed with a model that could never say the third class."""
    if n_classes < 2:
        raise MedImageError(f"Training needs at least 2 classes; this dataset has {n_classes}.")
    head = "multiclass" if config.head == "binary" and n_classes > 2 else config.head
    return replace(config, head=head, n_classes=n_classes)


def build_model(config: ModelConfig) -> keras.Model:
    """Build (not compile) a model taking (S, S, channels) images valued 0-255."""
    if config.name not in MODEL_NAMES:
        raise MedImageError(f"Unknown model '{config.name}'. Choose one of: {', '.join(MODEL_NAMES)}.")
    if config.head not in HEADS:
        raise MedImageError(f"Unknown head '{config.head}'. Choose one of: {', '.join(HEADS)}.")
    if config.intensity not in INTENSITY:
        raise MedImageError(f"Unknown intensity normalisation '{config.intensity}'. Choose one of: {', '.join(INTENSITY)}.")
    if config.head == "binary" and config.n_classes != 2:
        raise MedImageError(f"A binary head needs exactly 2 classes; this dataset has {config.n_classes}.")
    inputs = keras.Input((config.image_size, config.image_size, config.channels), name="image")
    border = border_pixels(config)
    # after augmentation (a pipeline stage), so a shifted image is cut the same way; the network sees fewer pixels
    # float32 under mixed precision too: a cut must not round the pixels (in-model equalisation ranks them)
    image = layers.Cropping2D(((border, border), (border, border)), name="crop", dtype="float32")(inputs) if border else inputs
    if config.name in SCRATCH:
        builder = {"smallnet": _smallnet, "cifar_cnn": _cifar_cnn, "mlp": _mlp, "resnet18": _resnet18, "xraynet": _xraynet}[config.name]
        try:
            return keras.Model(inputs, builder(image, config), name=config.name)
        except ValueError as exc:  # its poolings ran the image down to nothing
            raise _too_small(config, config.name, ": its poolings shrink it to nothing.") from exc
    if config.freeze not in FREEZE_MODES:
        raise MedImageError(f"Unknown freeze mode '{config.freeze}'. Choose one of: {', '.join(FREEZE_MODES)}.")
    base = _backbone(config)
    _freeze(base, config)
    x = _backbone_intensity(image, config)
    x = x if config.channels == 3 else layers.Concatenate(name="gray_to_rgb")([x] * 3)
    x = BackbonePreprocess(BACKBONES[config.name].module, name="preprocess")(x)
    # No training=False here: in Keras 3, fit's training=True overrides it for nested models (keras-team/keras#20285).
    # What holds a frozen BatchNorm at its statistics is trainable=False (_freeze), which BatchNormalization checks.
    x = base(x)
    return keras.Model(inputs, _head(x, config), name=config.name)
