"""Export a run's model for serving (SavedModel) and for phones and edge devices (TFLite), or as a
plain .keras file, with a model card beside it.

Every model of ours normalises inside its own graph, so the exported file takes the same raw 0-255
pixels as the run's Keras model and needs no preprocessing code. The export is checked before it
is kept: the exported file's outputs on 32 of the run's own images must equal the Keras model's
(max abs difference <= 1e-4 in float32, <= 2e-2 quantised), and that difference is written into the
model card. Models trained in mixed precision are exported in float32 (the weights are float32
anyway), which every runtime executes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from core.errors import MedImageError
from core.model_card import write_model_card
from core.runs import read_json, read_status, run_rows

FORMATS = ("keras", "savedmodel", "tflite")
QUANTIZE = ("float16", "int8")
TOLERANCE = {None: 1e-4, "float16": 2e-2, "int8": 2e-2}
CHECK_IMAGES = 32


@dataclass(frozen=True)
class ExportResult:
    path: str  # the exported file or folder
    format: str
    quantize: str | None
    size_bytes: int
    checked_images: int
    max_abs_diff: float  # exported vs the run's Keras model (float32), on checked_images images
    tolerance: float
    card_md: str
    card_json: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def float32_model(run: Path) -> keras.Model:
    """The run's best model rebuilt in float32 with its weights (a mixed-precision graph would carry bfloat16/float16
    casts into the export, which TFLite and many servers do not run)."""
    from core.evaluate import load_run_models
    from core.models import ModelConfig, build_model

    models = load_run_models(run)
    if len(models) > 1:
        raise MedImageError(f"{run.name} is a K-fold run: export one fold's run folder (fold-k) instead of the ensemble.")
    model = models[0]
    if keras.mixed_precision.global_policy().name == "float32" and all(
            getattr(layer, "dtype_policy", None) is None or layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        config = ModelConfig.from_dict({**read_json(run / "config.json")["model"], "weights": "none"})
        rebuilt = build_model(config)
        rebuilt.set_weights(model.get_weights())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return rebuilt


def check_images(run: Path, n: int = CHECK_IMAGES) -> np.ndarray:
    """n of the run's own images (test split first) as the model's input batch, float32 0-255."""
    from core.dataset_store import open_source
    from core.pipeline import PipelineConfig, make_dataset

    config, status = read_json(run / "config.json"), read_status(run)
    table = run_rows(run, config, open_source(config["data"]).table)
    ordered = pd.concat([table[table["split"] == s] for s in ("test", "val", "train")]).head(n)
    pipeline = PipelineConfig(**{**config.get("pipeline", {}), "cache": False, "batch_size": n})
    images, _ = next(iter(make_dataset(ordered, status["classes"], pipeline)))
    return np.asarray(images, np.float32)


def _saved_model(model: keras.Model, folder: Path) -> None:
    model.export(str(folder), format="tf_saved_model", verbose=False)


def _tflite_bytes(model: keras.Model, quantize: str | None, work: Path) -> bytes:
    import tensorflow as tf

    saved = work / "saved_model_for_tflite"
    _saved_model(model, saved)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":  # dynamic range: int8 weights, float activations and float input/output
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return converter.convert()
    except Exception as exc:  # the converter's own error class moves between TensorFlow versions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedImageError(f"This model could not be converted to TFLite ({first[:300]}); nothing was written. Export it as "
                            "a SavedModel or a .keras file instead.") from exc


def tflite_predict(path: Path, images: np.ndarray) -> np.ndarray:
    """Run a .tflite file with LiteRT's interpreter (what phones run; tf.lite.Interpreter is deprecated), one image at a
    time (as on a device)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [1, *images.shape[1:]])
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    outputs = []
    for image in images:
        interpreter.set_tensor(inp, image[None].astype(np.float32))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out)[0].copy())
    return np.asarray(outputs, float)


def saved_model_predict(folder: Path, images: np.ndarray) -> np.ndarray:
    """Run a SavedModel through its serving signature, as TensorFlow Serving would."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))
    serve = loaded.signatures["serving_default"]
    outputs = serve(tf.constant(images, tf.float32))
    return np.asarray(next(iter(outputs.values())), float)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_run(run: Path, out_dir: Path, fmt: str = "tflite", quantize: str | None = None,
               progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export the run's model to out_dir (model.keras, saved_model/ or model[-float16|-int8].tflite), check it against the
    Keras model on the run's own images, and write model_card.md/.json beside it. Everything lands atomically."""
    run, out_dir = Path(run), Path(out_dir)
    if fmt not in FORMATS:
        raise MedImageError(f"Unknown export format '{fmt}'. Choose one of: {', '.join(FORMATS)}.")
    if quantize not in (None, *QUANTIZE):
        raise MedImageError(f"Unknown quantisation '{quantize}'. Choose float16 or int8 (TFLite only), or none.")
    if quantize and fmt != "tflite":
        raise MedImageError("Quantisation is for TFLite exports; SavedModel and .keras keep float32 weights.")
    say = progress or (lambda message: None)
    say("loading the model")
    model = float32_model(run)
    images = check_images(run)
    reference = np.asarray(model.predict_on_batch(images), float)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=out_dir, prefix=".export-"))
    except OSError as exc:
        raise MedImageError(f"Cannot write to {out_dir} ({exc.strerror or exc}). Choose a writable folder.") from exc
    try:
        say(f"writing {fmt}")
        if fmt == "keras":
            name = "model.keras"
            model.save(work / name)
            exported = np.asarray(keras.saving.load_model(work / name, safe_mode=True, compile=False).predict_on_batch(images), float)
        elif fmt == "savedmodel":
            name = "saved_model"
            _saved_model(model, work / name)
            exported = saved_model_predict(work / name, images)
        else:
            name = f"model{'-' + quantize if quantize else ''}.tflite"
            (work / name).write_bytes(_tflite_bytes(model, quantize, work))
            shutil.rmtree(work / "saved_model_for_tflite", ignore_errors=True)
            exported = tflite_predict(work / name, images)
        say("checking the export against the Keras model")
        diff = float(np.max(np.abs(exported - reference)))
        tolerance = TOLERANCE[quantize]
        if not diff <= tolerance:
            raise MedImageError(f"The {fmt} export differs from the Keras model by {diff:.2e} on {len(images)} images "
                                f"(allowed {tolerance:.0e}); nothing was written.")
        target = out_dir / name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(work / name, target)
        check = {"format": fmt, "quantize": quantize, "file": name, "size_bytes": _size(target), "checked_images": len(images),
                 "max_abs_diff": diff, "tolerance": tolerance}
        say("writing the model card")
        card_md, card_json = write_model_card(run, out_dir, check)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(str(target), fmt, quantize, check["size_bytes"], len(images), diff, tolerance, str(card_md), str(card_json))
