"""Classify single images with a trained run (or an uploaded .keras file), exactly as the run saw them.

A Predictor carries what a run's model needs beside its weights: input size and colour mode (from
its config), class names, the head, the decision threshold tuned on validation (Evaluate), and
whether the run averages over the mirror image. Images go through the project's one reader and the
training pipeline's resize, so a PNG, a JPEG and a DICOM of the same picture get the same answer.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from core.dicom import modality_caution
from core.errors import MedImageError
from core.evaluate import load_run_models, prior_weighted, threshold_source
from core.image_reader import read_image
from core.novelty import Reference
from core.novelty import caution as novelty_caution
from core.pipeline import PipelineConfig, prepare_pixels
from core.runs import read_json, read_status
from core.similar_scores import similar_scores

MAX_MODEL_BYTES = 1 << 30


@dataclass
class Predictor:
    models: list[keras.Model]
    classes: list[str]
    image_size: int
    channels: int
    head: str = "binary"
    threshold: float = 0.5
    threshold_source: str = "default 0.5"
    tta: bool = False
    name: str = "model"
    meta: dict = field(default_factory=dict)
    prior_weights: list[float] | None = None  # an adapted multi-class run: the site's class proportions (core.adapt)

    @property
    def model(self) -> keras.Model:
        return self.models[0]

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 1|3) -> float32 (S, S, channels) valued 0-255, the pipeline's own resize."""
        return prepare_pixels(pixels, PipelineConfig(image_size=self.image_size, channels=self.channels))

    def scores(self, batch: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
        """The model output for a prepared batch, averaged over fold models and the mirror image. `first` is the first
        model's output on the batch itself when a caller already has it (the unusual-image pass computes it)."""
        views = [batch, batch[:, :, ::-1, :]] if self.tta else [batch]
        outs = [np.asarray(first, float) if first is not None and i == j == 0 else np.asarray(m.predict_on_batch(v), float)
                for i, m in enumerate(self.models) for j, v in enumerate(views)]
        mean = np.mean(outs, axis=0)
        return prior_weighted(mean, self.prior_weights) if self.head == "multiclass" else mean

    def label(self, score: np.ndarray) -> str:
        if self.head == "binary":
            return self.classes[1] if score[0] >= self.threshold else self.classes[0]
        if self.head == "multiclass":
            return self.classes[int(np.argmax(score))]
        return self.classes[int(np.clip(np.round(score[0]), 0, len(self.classes) - 1))]

    def probabilities(self, score: np.ndarray) -> dict[str, float]:
        if self.head == "binary":
            return {self.classes[0]: float(1 - score[0]), self.classes[1]: float(score[0])}
        if self.head == "multiclass":
            return {c: float(p) for c, p in zip(self.classes, score, strict=True)}
        return {"score": float(score[0])}


def release_compiled() -> None:
    """Drop TensorFlow's compiled functions and Keras' session state (`keras.backend.clear_session`).

    A process that stays up and loads model after model (the dashboard) calls it before each load, so the
    kernels of models it has let go do not pile up. Models it still holds recompile on their next call,
    a fraction of a second each, which a load (seconds) hides.
    """
    keras.backend.clear_session()


def from_run(run: Path) -> Predictor:
    """The Predictor of a run folder: its best model (or fold ensemble), classes, threshold, TTA."""
    run = Path(run)
    if not (run / "config.json").exists():
        raise MedImageError(f"{run} is not a run folder (no config.json).")
    config, status = read_json(run / "config.json"), read_status(run)
    if not status.get("classes"):
        raise MedImageError(f"{run.name} has not started training, so it has no model yet.")
    model = config.get("model", {})
    return Predictor(
        models=load_run_models(run),
        classes=list(status["classes"]),
        image_size=int(model.get("image_size", 128)),
        channels=int(model.get("channels", 1)),
        head=model.get("head", "binary"),
        tta=bool(config.get("tta", False)),
        name=run.name,
        **saved_decisions(run, status),
    )


def saved_decisions(run: Path, status: dict | None = None) -> dict:
    """What decides a run's calls beside its model, from its status: the threshold (and where it came from) and an adapted
    multi-class run's class weights. Evaluate can change them without touching the model file, so a Predictor kept per
    model file (the dashboard's) takes them afresh: `dataclasses.replace(predictor, **saved_decisions(run))`."""
    status = read_status(run) if status is None else status
    return {"threshold": float(status.get("threshold", 0.5)), "threshold_source": threshold_source(run, status),
            "prior_weights": status.get("prior_weights")}


def load_model_file(data: bytes | Path, name: str = "model.keras") -> keras.Model:
    """A user's .keras file, loaded only in Keras safe mode (no Lambda layers, no pickled code).

    Anything else (an .h5, a pickle, a broken zip, a model with a Lambda layer) is refused with a
    message that says why.
    """
    raw = Path(data).read_bytes() if isinstance(data, Path) else data
    if len(raw) > MAX_MODEL_BYTES:
        raise MedImageError(f"{name} is larger than {MAX_MODEL_BYTES >> 20} MB.")
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise MedImageError(
            f"{name} is not a Keras 3 '.keras' file (those are zip archives). Only .keras models are accepted: "
            "other formats (.h5, pickles, SavedModel) can run code or lose their preprocessing."
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        path.write_bytes(raw)
        try:
            return keras.saving.load_model(path, safe_mode=True, compile=False)
        except ValueError as exc:
            if "safe_mode" in str(exc) or "Lambda" in str(exc):
                raise MedImageError(
                    f"{name} contains a Lambda layer or other custom code, which Keras safe mode refuses to "
                    "load because it could run arbitrary code. Re-save the model without Lambda layers."
                ) from exc
            raise MedImageError(f"{name} could not be loaded: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - a corrupt archive fails inside Keras in many ways
            raise MedImageError(f"{name} could not be loaded as a Keras model ({type(exc).__name__}: {exc}).") from exc


def from_model(model: keras.Model, classes: list[str] | None = None, name: str = "uploaded model") -> Predictor:
    """A Predictor for a bare model: size and channels from its input; a sigmoid output is binary."""
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    if len(shape) != 4 or shape[1] is None or shape[3] not in (1, 3):
        raise MedImageError(f"{name} takes inputs of shape {shape}; an image model with a fixed (size, size, 1 or 3) input is needed.")
    outputs = int(model.output_shape[-1])
    head = "binary" if outputs == 1 else "multiclass"
    classes = classes or (["class 0", "class 1"] if outputs == 1 else [f"class {i}" for i in range(outputs)])
    if head == "multiclass" and len(classes) != outputs:
        raise MedImageError(f"{name} has {outputs} outputs but {len(classes)} class names were given.")
    return Predictor(models=[model], classes=classes, image_size=int(shape[1]), channels=int(shape[3]), head=head, name=name)


def predict_files(predictor: Predictor, sources: list[tuple[str, bytes | str]], batch_size: int = 32, progress=None,
                  novelty: Reference | None = None, validation: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per file (name, label, probabilities, or the error that file gave, and a caution such as a DICOM that is
    not an X-ray), batched. With the run's novelty reference, each row also says whether the image is unusual for the
    model (core.novelty), and the caution says so. With its validation predictions, how many of the validation images
    scored nearest each one were truly its call, and whether that makes the call borderline (core.similar_scores)."""
    rows: list[dict] = []
    batch: list[np.ndarray] = []
    names: list[tuple[str, str]] = []

    def flush() -> None:
        if not batch:
            return
        prepared = np.stack(batch)
        distances, first = [None] * len(batch), None
        if novelty is not None:  # one pass gives the distances and the first model's scores
            distances, first = novelty.measure_and_score(predictor.model, prepared)
        for (name, caution), score, distance in zip(names, predictor.scores(prepared, first), distances, strict=True):
            extra = {}
            if distance is not None:
                extra = {"unusual": bool(novelty.unusual(distance))}
                caution = " ".join(c for c in (caution, novelty_caution(novelty, distance)) if c)
            label = predictor.label(score)
            if (alike := similar_scores(validation, predictor.classes, predictor.head, score, label)) is not None:
                extra.update(validation_alike=alike.counted, borderline=alike.borderline)
            rows.append({"file": name, "label": label, **predictor.probabilities(score), **extra, "caution": caution, "error": ""})
        batch.clear()
        names.clear()

    for i, (name, data) in enumerate(sources, 1):
        try:
            image = read_image(data)
            batch.append(predictor.prepare(image.pixels))
            names.append((name, modality_caution(image.meta)))
        except MedImageError as exc:
            rows.append({"file": name, "label": "", "caution": "", "error": str(exc)})
        if len(batch) >= batch_size:
            flush()
        if progress:
            progress(i, len(sources))
    flush()
    order = {name: i for i, (name, _) in enumerate(sources)}
    return pd.DataFrame(rows).sort_values("file", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
