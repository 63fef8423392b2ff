"""What can be trained, by name: the heads, scratch networks, ImageNet backbones (with their weight files) and recipes.

Kept free of Keras and TensorFlow, so the command line parses its choices, and `read` and `scan` answer, in about a
second instead of the five that importing Keras takes.
"""

from __future__ import annotations

from dataclasses import dataclass

from core import weights as weight_files

HEADS = ("binary", "multiclass", "ordinal")
SCRATCH = ("smallnet", "cifar_cnn", "mlp", "resnet18", "xraynet")
INTENSITY = ("rescale", "standardize", "equalize")
FREEZE_MODES = ("feature_extraction", "fine_tune", "full")
MAX_CROP = 0.3  # of each side: 0.3 keeps the central 40% of the image


@dataclass(frozen=True)
class Backbone:
    constructor: str  # keras.applications attribute
    module: str  # keras.applications submodule holding preprocess_input
    weights_file: str  # the no-top ImageNet weights file Keras downloads into ~/.keras/models (alpha 1.0, 224 px)
    default_size: int = 224
    alphas: tuple[float, ...] = ()  # width multipliers with ImageNet weights (MobileNets); () = no alpha
    depthwise: bool = False  # built of depthwise convolutions (MobileNets, EfficientNets): see device_info.precision_policy

    def file_for(self, alpha: float = 1.0, size: int = 224) -> str:
        """The official no-top weights file for this width and input size."""
        if self.constructor == "MobileNet":
            return weight_files.mobilenet_file(alpha, size, top=False)
        if self.constructor == "MobileNetV2":
            return weight_files.mobilenet_v2_file(alpha, size, top=False)
        return self.weights_file


BACKBONES = {
    "vgg16": Backbone("VGG16", "vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50": Backbone("ResNet50", "resnet", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "inceptionv3": Backbone("InceptionV3", "inception_v3", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 299),
    "efficientnetb0": Backbone("EfficientNetB0", "efficientnet", "efficientnetb0_notop.h5", depthwise=True),
    "efficientnetb1": Backbone("EfficientNetB1", "efficientnet", "efficientnetb1_notop.h5", 240, depthwise=True),
    "efficientnetb2": Backbone("EfficientNetB2", "efficientnet", "efficientnetb2_notop.h5", 260, depthwise=True),
    "efficientnetb3": Backbone("EfficientNetB3", "efficientnet", "efficientnetb3_notop.h5", 300, depthwise=True),
    "mobilenet": Backbone("MobileNet", "mobilenet", "mobilenet_1_0_224_tf_no_top.h5", alphas=weight_files.MOBILENET_ALPHAS,
                          depthwise=True),
    "mobilenetv2": Backbone("MobileNetV2", "mobilenet_v2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                            alphas=weight_files.MOBILENET_V2_ALPHAS, depthwise=True),
    "densenet121": Backbone("DenseNet121", "densenet", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
}
MODEL_NAMES = SCRATCH + tuple(BACKBONES)
RECIPES = ("xray", "xray-scratch")


def native_sizes_sentence() -> str:
    """Which input size each ImageNet backbone was trained at: its features fit best near that size."""
    sizes = ", ".join(f"{b.constructor} {b.default_size}" for b in BACKBONES.values() if b.default_size != 224)
    return f"ImageNet backbones learned at 224 px, except {sizes}."
