"""Predict + Grad-CAM latency for one 224 px image: ours (one compiled forward/backward pass giving the
probabilities and the map) vs the seed's way (eager `model.predict`, then a separate Grad-CAM pass
with its own forward and GradientTape), in one run.

Usage: python bench/gradcam_bench.py [--calls 50] [--size 224]
Prints p50 / p95 in ms over the calls for SmallNet and MobileNetV2 (alpha 0.35), the speed-up, and
peak memory. Goal: p50 <= 50 ms on CPU for both, >= 3x faster than the baseline.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _mobilenet(size: int):
    import keras

    inputs = keras.Input((size, size, 3))
    base = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35, input_shape=(size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(keras.applications.mobilenet_v2.preprocess_input(inputs)))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="prediction")(x))


def _baseline(model, layer: str, image):
    """The seed's way: predict, then build a grad model and run it again under a tape (eager)."""
    import tensorflow as tf

    from core.gradcam import _outer_output  # a nested backbone's output in the outer graph

    probabilities = model.predict(image, verbose=0)
    grad_model = tf.keras.Model(model.inputs, [_outer_output(model, layer), model.output])
    with tf.GradientTape() as tape:
        features, preds = grad_model(image)
        target = preds[:, 0]
    grads = tape.gradient(target, features)
    weights = tf.reduce_mean(grads, axis=(1, 2))
    cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))
    return probabilities, cam


def _time(fn, calls: int) -> tuple[float, float]:
    import numpy as np

    fn()  # warm-up (tracing)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    import numpy as np

    from core.gradcam import GradCam
    from core.models import ModelConfig, build_model

    image = np.random.default_rng(0).uniform(0, 255, (1, args.size, args.size, 1)).astype("float32")
    models = {
        "SmallNet": (build_model(ModelConfig(name="smallnet", image_size=args.size, channels=1)), image),
        "MobileNetV2-0.35": (_mobilenet(args.size), np.repeat(image, 3, axis=-1)),
    }
    print(f"one {args.size}px image, {args.calls} calls each, p50 / p95 in ms")
    for name, (model, x) in models.items():
        explainer = GradCam(model)
        ours = _time(lambda: explainer.explain(x, 1), args.calls)  # noqa: B023 - timed right here
        base = _time(lambda: _baseline(model, explainer.layer, x), args.calls)  # noqa: B023
        print(f"{name:18s} ours {ours[0]:7.1f} / {ours[1]:7.1f}   predict + separate Grad-CAM {base[0]:7.1f} / {base[1]:7.1f}"
              f"   speed-up {base[0] / ours[0]:.1f}x (p50)")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
