"""What the machine offers for training: TensorFlow/Keras versions, CPUs, GPUs."""

from __future__ import annotations

import os
import platform
from typing import Any


def device_summary() -> dict[str, Any]:
    """Versions and devices; imports TensorFlow (slow the first time), so callers cache it."""
    import keras
    import tensorflow as tf

    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append({"name": details.get("device_name", gpu.name), "compute_capability": details.get("compute_capability")})
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count() or 1,
        "gpus": gpus,
        "device": f"GPU ({gpus[0]['name']})" if gpus else "CPU only",
        # Mixed precision pays off from compute capability 7.0 (tensor cores) upwards.
        "mixed_precision": any((g["compute_capability"] or (0, 0)) >= (7, 0) for g in gpus),
    }
