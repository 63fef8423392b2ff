"""Training-step speed and fidelity of the model zoo in float32 (naive) vs mixed precision, on this machine's device.

Usage: python bench/precision_bench.py [--models mobilenetv2 resnet50] [--policies float32 mixed_float16]
                                       [--batch 64] [--steps 20] [--budget 480] [--csv FILE]
For each model, `core.models.build_model` (weights none, every layer training, the binary head) is built under each
dtype policy. Then, in the same run:
- fidelity: float32's weights after its training steps loaded into the mixed model (variables stay float32 under a
  mixed policy), and both models' probabilities on one batch compared (largest absolute difference), with batch
  statistics: untrained backbones' moving statistics give every image a flat 0.5, which would hide any difference;
- checks: outputs are float32 (the head's `dtype="float32"`), the float16 policy trains through a loss-scale optimizer,
  and the loss stays finite;
- speed: images per second over `--steps` training steps after the compile, and the ratio to float32.
It needs only Keras, so it also runs where TensorFlow is not installed (`KERAS_BACKEND=jax` on a GPU machine); a row
is printed as soon as it is measured, and models left when `--budget` seconds are spent are skipped, not guessed.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# the recipe's network first, then the backbones people pick most; each with the size it is used at
SIZES = {"mobilenetv2": 224, "resnet50": 224, "efficientnetb0": 224, "mobilenet": 224, "densenet121": 224, "vgg16": 224,
         "inceptionv3": 299, "xraynet": 128, "smallnet": 128}


def build(name: str, policy: str, size: int):
    import keras

    from core.catalog import SCRATCH
    from core.models import ModelConfig, build_model

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    scratch = name in SCRATCH
    config = ModelConfig(name=name, image_size=size, channels=1 if scratch else 3, weights="none", freeze="full",
                         dense=(), dropout=0.0, alpha=0.35 if name == "mobilenetv2" else 1.0)
    model = build_model(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(label_smoothing=0.1))
    return model


def measure(name: str, policy: str, batch: int, steps: int, reference: dict | None) -> dict:
    import keras

    size = SIZES[name]
    model = build(name, policy, size)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, size, size, model.input_shape[-1])).astype("float32")
    y = (rng.random((batch, 1)) < 0.6).astype("float32")
    out_dtype = str(model.outputs[0].dtype)
    start = time.perf_counter()
    losses = [float(model.train_on_batch(x, y))]  # the first step compiles
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    losses += [float(model.train_on_batch(x, y)) for _ in range(steps)]  # each float() waits for the device
    seconds = time.perf_counter() - start
    weights = model.get_weights()
    if reference is not None:
        model.set_weights(reference["weights"])
    probabilities = np.asarray(keras.ops.convert_to_numpy(model(x, training=True)), dtype="float64")
    return {
        "model": name, "size": size, "policy": policy, "images_per_s": round(batch * steps / seconds, 1),
        "compile_s": round(compile_s, 1), "output_dtype": out_dtype,
        "loss_scaled": type(model.optimizer).__name__ == "LossScaleOptimizer",
        "loss_finite": bool(np.isfinite(losses).all()), "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
        "max_prob_diff": "" if reference is None else f"{np.abs(probabilities - reference['probabilities']).max():.2e}",
        "probabilities": probabilities, "weights": weights,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--policies", nargs="+", default=None, help="float32 first (the baseline); default: float32 and "
                        "mixed_float16 on a GPU, float32 and mixed_bfloat16 elsewhere")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds; models not started by then are skipped")
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = ", ".join(sorted({d.device_kind for d in jax.devices()}))
        gpu = any(d.platform == "gpu" for d in jax.devices())
    else:
        from core.device_info import device_summary

        summary = device_summary()
        gpu = bool(summary["gpus"])
        device = ", ".join(g["name"] for g in summary["gpus"]) if gpu else "CPU"
    policies = args.policies or ["float32", "mixed_float16" if gpu else "mixed_bfloat16"]
    print(f"Keras {keras.__version__} on {backend}, device: {device}; batch {args.batch}, {args.steps} timed steps", flush=True)
    began, rows = time.perf_counter(), []
    for name in args.models:
        if time.perf_counter() - began > args.budget:
            print(f"{name}: skipped, the {args.budget:.0f} s budget is spent", flush=True)
            continue
        reference = None
        for policy in policies:
            row = measure(name, policy, args.batch, args.steps, reference)
            if reference is None:
                reference, baseline = row, row["images_per_s"]
            row["ratio"] = round(row["images_per_s"] / baseline, 2)
            rows.append(row)
            print(f"{name:>14} {row['size']}px {policy:>15}: {row['images_per_s']:8.1f} img/s ({row['ratio']:.2f}x) "
                  f"compile {row['compile_s']:5.1f} s · output {row['output_dtype']} · loss-scaled {row['loss_scaled']} · "
                  f"loss {row['first_loss']} -> {row['last_loss']} finite {row['loss_finite']} · "
                  f"max |p - p32| {row['max_prob_diff'] or '-'}", flush=True)
            if args.csv:
                fields = [k for k in rows[0] if k not in ("probabilities", "weights")]
                with args.csv.open("w", newline="") as handle:
                    writer = csv.DictWriter(handle, fields, extrasaction="ignore")
                    writer.writeheader()
                    writer.writerows(rows)
    return 0 if all(r["loss_finite"] and r["output_dtype"] == "float32" for r in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
