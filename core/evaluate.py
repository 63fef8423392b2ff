"""Run a trained model over a split once, store the predictions table, compute metrics from it.

The predictions table (path, label, per-class probability or score, predicted label) is written to
the run folder as predictions-<name>.csv; every metric and plot comes from that table, so nothing
re-predicts. Prediction streams batch by batch, so memory does not grow with the number of images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from core import metrics
from core.atomic import write_text
from core.errors import MedImageError
from core.file_cache import Progress
from core.models import ModelConfig
from core.pipeline import PipelineConfig, make_dataset
from core.runs import read_json, read_status, write_status


def load_run_model(run: Path) -> keras.Model:
    """The run's best model (or last/final), loaded in Keras safe mode."""
    for name in ("best.keras", "final.keras", "last.keras"):
        if (Path(run) / name).exists():
            return keras.saving.load_model(Path(run) / name, safe_mode=True, compile=False)
    raise MedImageError(f"{Path(run).name} has no saved model yet. Wait for its first epoch, or train it.")


def predict_table(
    run: Path, table: pd.DataFrame, name: str = "test", progress: Progress | None = None, tta: bool | None = None
) -> pd.DataFrame:
    """Predict every row with the run's model and store predictions-<name>.csv in the run folder.

    tta: average each image's prediction with its mirror image's (default: the run's own setting).
    """
    run = Path(run)
    config = read_json(run / "config.json")
    classes = read_status(run).get("classes")
    if not classes:
        raise MedImageError(f"{run.name} does not record its classes; it has not started training.")
    unknown = sorted(set(table["label"]) - set(classes))
    if unknown:
        raise MedImageError(f"Labels {unknown} are not among this model's classes {classes}.")
    if table.empty:
        raise MedImageError("There are no images to evaluate in this split.")
    model = load_run_model(run)
    pipeline = PipelineConfig(**{**config.get("pipeline", {}), "cache": False})
    head = ModelConfig.from_dict(config.get("model", {})).head
    batches = make_dataset(table, classes, pipeline)
    tta = bool(config.get("tta", False)) if tta is None else tta
    outputs, done = [], 0
    for images, _ in batches:
        scores = np.asarray(model.predict_on_batch(images), dtype=float)
        if tta:
            scores = (scores + np.asarray(model.predict_on_batch(images[:, :, ::-1, :]), dtype=float)) / 2
        outputs.append(scores)
        done += len(images)
        if progress:
            progress(done, len(table))
    scores = np.concatenate(outputs)
    out = table[["path", "label"]].reset_index(drop=True)
    if head == "binary":
        out[f"p_{classes[1]}"] = scores[:, 0]
        threshold = float(read_status(run).get("threshold", 0.5))  # tuned on validation when the run has one
        out["predicted"] = np.where(scores[:, 0] >= threshold, classes[1], classes[0])
    elif head == "multiclass":
        for i, c in enumerate(classes):
            out[f"p_{c}"] = scores[:, i]
        out["predicted"] = [classes[i] for i in scores.argmax(axis=1)]
    else:
        out["score"] = scores[:, 0]
        out["predicted"] = [classes[i] for i in np.clip(np.round(scores[:, 0]), 0, len(classes) - 1).astype(int)]
    write_text(run / f"predictions-{name}.csv", out.to_csv(index=False))
    return out


def tune_threshold(run: Path, val: pd.DataFrame) -> float:
    """Choose the binary decision threshold on validation predictions (Youden's J), save it in the
    run's status for Evaluate and Predict, and return it. Validation predictions stay in the run."""
    classes = read_status(run)["classes"]
    predictions = predict_table(run, val, "val")
    y = (predictions["label"] == classes[1]).to_numpy(int)
    if len(np.unique(y)) < 2:
        return float(read_status(run).get("threshold", 0.5))
    threshold = metrics.youden_threshold(y, predictions[f"p_{classes[1]}"].to_numpy(float))
    write_status(run, threshold=threshold, threshold_source="Youden's J on the validation split")
    return threshold


def binary_summary(predictions: pd.DataFrame, classes: list[str], threshold: float = 0.5, n_boot: int = 1000) -> dict[str, Any]:
    """Metrics at the threshold with bootstrap 95% intervals for accuracy, AUC and F1."""
    y = (predictions["label"] == classes[1]).to_numpy(int)
    p = predictions[f"p_{classes[1]}"].to_numpy(float)
    summary = metrics.binary_metrics(y, p, threshold)
    summary["confusion_matrix"] = skm.confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1]).tolist()
    for key, fn in (
        ("accuracy", lambda a, b: skm.accuracy_score(a, b >= threshold)),
        ("auc", skm.roc_auc_score),
        ("f1", lambda a, b: skm.f1_score(a, b >= threshold, zero_division=0)),
    ):
        _, lo, hi = metrics.bootstrap_ci(fn, y, p, n=n_boot, seed=0)
        summary[f"{key}_ci95"] = [lo, hi]
    summary["n"] = int(len(y))
    return summary
