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

from core import metrics, novelty
from core.atomic import write_text
from core.errors import MedImageError
from core.file_cache import Progress
from core.models import ModelConfig
from core.pipeline import PipelineConfig, make_dataset
from core.runs import model_file, read_json, read_status, run_rows, write_status


def load_run_model(run: Path) -> keras.Model:
    """The run's best model (or final/last), loaded in Keras safe mode."""
    file = model_file(run)
    if file is None:
        raise MedImageError(f"{Path(run).name} has no saved model yet. Wait for its first epoch, or train it.")
    return keras.saving.load_model(file, safe_mode=True, compile=False)


def model_runs(run: Path) -> list[Path]:
    """The run folders whose models a run predicts with: itself, or for a K-fold run every fold (an ensemble)."""
    folds = sorted(p for p in Path(run).glob("fold-*") if any((p / n).exists() for n in ("best.keras", "final.keras")))
    return folds if folds and not (Path(run) / "best.keras").exists() else [Path(run)]


def load_run_models(run: Path) -> list[keras.Model]:
    """The models a run predicts with: its own, or for a K-fold run every fold's best (an ensemble)."""
    return [load_run_model(r) for r in model_runs(run)]


def models_mtime(run: Path) -> int:
    """When the models a run predicts with were last written (ns; 0 when it has none). A table stored before it came from
    an earlier model: a run resumed or extended after an evaluation writes a new best checkpoint."""
    files = [model_file(r) for r in model_runs(run)]
    return max((f.stat().st_mtime_ns for f in files if f is not None), default=0)


def predictions_path(run: Path, name: str) -> Path:
    return Path(run) / f"predictions-{name}.csv"


def is_current(run: Path, name: str) -> bool:
    """Whether the run holds a predictions table for `name` made by its present model."""
    path = predictions_path(run, name)
    return path.exists() and path.stat().st_mtime_ns >= models_mtime(run)


def stored_predictions(run: Path) -> list[str]:
    """The names of the run's predictions tables its present model made (an earlier model's are left out)."""
    names = sorted(p.stem[len("predictions-"):] for p in Path(run).glob("predictions-*.csv"))
    return [name for name in names if is_current(run, name)]


def load_predictions(run: Path, name: str) -> pd.DataFrame | None:
    """A stored predictions table, or None when this run has not predicted `name` yet or trained on since it did (its
    metrics would be an earlier model's)."""
    return pd.read_csv(predictions_path(run, name)) if is_current(run, name) else None


def split_rows(run: Path, split: str) -> pd.DataFrame:
    """The images of one of the run's splits ("all" for every one) as the run split them (a recipe's patient-grouped split,
    a fold's), from the data it was trained on."""
    from core.dataset_store import open_source

    config = read_json(Path(run) / "config.json")
    table = run_rows(run, config, open_source(config["data"]).table)
    return table if split == "all" else table[table["split"] == split]


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
    models = load_run_models(run)
    pipeline = PipelineConfig(**{**config.get("pipeline", {}), "cache": False})
    head = ModelConfig.from_dict(config.get("model", {})).head
    batches = make_dataset(table, classes, pipeline)
    tta = bool(config.get("tta", False)) if tta is None else tta
    reference = novelty.load(run)  # what is usual for the (first) model: each image's distance
    outputs, distances, done = [], [], 0
    views = 2 if tta else 1
    for images, _ in batches:
        if reference is not None:  # one pass gives the distance and the first model's prediction
            distance, scores = reference.measure_and_score(models[0], images)
            distances.append(distance)
            scores = scores + sum(np.asarray(m.predict_on_batch(images), dtype=float) for m in models[1:])
        else:
            scores = sum(np.asarray(m.predict_on_batch(images), dtype=float) for m in models)
        if tta:
            scores = scores + sum(np.asarray(m.predict_on_batch(images[:, :, ::-1, :]), dtype=float) for m in models)
        outputs.append(scores / (views * len(models)))
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
        scores = prior_weighted(scores, read_status(run).get("prior_weights"))
        for i, c in enumerate(classes):
            out[f"p_{c}"] = scores[:, i]
        out["predicted"] = [classes[i] for i in scores.argmax(axis=1)]
    else:
        out["score"] = scores[:, 0]
        out["predicted"] = [classes[i] for i in np.clip(np.round(scores[:, 0]), 0, len(classes) - 1).astype(int)]
    if reference is not None:
        out["distance"] = np.concatenate(distances)
        out["unusual"] = reference.unusual(out["distance"].to_numpy())
    write_text(predictions_path(run, name), out.to_csv(index=False))
    return out


def prior_weighted(probabilities: np.ndarray, weights: list[float] | None) -> np.ndarray:
    """Multi-class probabilities moved to a site's class proportions (core.adapt: target / source prior), renormalised."""
    if not weights:
        return probabilities
    out = np.asarray(probabilities, float) * np.asarray(weights, float)
    return out / out.sum(axis=-1, keepdims=True)


def save_threshold(run: Path, threshold: float, source: str) -> None:
    """The binary decision threshold Evaluate (or the job) chose; Predict and later evaluations use it. The model it was
    chosen for is recorded, so a run that trains on afterwards says its threshold is an earlier model's."""
    if not 0.0 <= threshold <= 1.0:
        raise MedImageError(f"A threshold must be between 0 and 1; got {threshold}.")
    write_status(run, threshold=float(threshold), threshold_source=source, threshold_model_mtime=models_mtime(run))


def threshold_source(run: Path, status: dict[str, Any] | None = None) -> str:
    """Where the run's saved threshold came from, and when the run has trained on since it was chosen, that it was chosen
    for an earlier model (the job re-tunes a recipe's own; one saved from Evaluate stays until saved again)."""
    status = read_status(run) if status is None else status
    source = str(status.get("threshold_source", "default 0.5"))
    chosen_for = status.get("threshold_model_mtime")
    if chosen_for is not None and int(chosen_for) < models_mtime(run):
        source += ", chosen for an earlier model of this run: it trained on since, so choose it again on the validation split"
    return source


def tune_threshold(run: Path, val: pd.DataFrame) -> float:
    """Choose the binary decision threshold on validation predictions (Youden's J), save it in the
    run's status for Evaluate and Predict, and return it. Validation predictions stay in the run."""
    classes = read_status(run)["classes"]
    predictions = predict_table(run, val, "val")
    y = (predictions["label"] == classes[1]).to_numpy(int)
    if len(np.unique(y)) < 2:
        return float(read_status(run).get("threshold", 0.5))
    threshold = metrics.youden_threshold(y, predictions[f"p_{classes[1]}"].to_numpy(float))
    save_threshold(run, threshold, "Youden's J on the validation split")
    return threshold


def choose_threshold(val: pd.DataFrame | None, classes: list[str], method: str = "youden", target: float = 0.95) -> tuple[float, str]:
    """A binary threshold chosen on validation predictions: Youden's J, or the most specific one with
    sensitivity >= target. Returns (threshold, where it came from); refuses without validation data,
    so a threshold is never tuned on the test set it is then judged on."""
    if val is None or val.empty:
        raise MedImageError("Predict the validation split first (Evaluate on: validation split): "
                            "thresholds are chosen there, not on the test set.")
    y = (val["label"] == classes[1]).to_numpy(int)
    p = val[f"p_{classes[1]}"].to_numpy(float)
    if len(np.unique(y)) < 2:
        raise MedImageError("The validation split has only one class, so no threshold can be chosen on it.")
    if method == "youden":
        return metrics.youden_threshold(y, p), "Youden's J on the validation split"
    return metrics.threshold_for_sensitivity(y, p, target), f"sensitivity >= {target:.2f} on the validation split"


def misclassified(predictions: pd.DataFrame, classes: list[str], head: str, threshold: float = 0.5) -> pd.DataFrame:
    """The wrong predictions (binary: at `threshold`, not the one stored with the table), most confident first, with
    `confidence` (how sure the wrong answer was, 0-1) and `shown` (the model's own number for a caption).

    Binary: the confidence is how far past the threshold the probability went, as a share of the way to the wrong
    end ((p - t) / (1 - t) called positive, (t - p) / t called negative), so at a threshold of 0.86 a healthy image at
    0.92 and a sick one at 0.84 are not ranked by p alone; `shown` is P(positive class), the number the threshold cuts.
    """
    out = predictions.copy()
    if head == "binary":
        p = out[f"p_{classes[1]}"].to_numpy(float)
        positive = p >= threshold
        out["predicted"] = np.where(positive, classes[1], classes[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            out["confidence"] = np.where(positive, (p - threshold) / (1 - threshold), (threshold - p) / threshold)
        out["confidence"] = out["confidence"].fillna(1.0)  # a threshold of 0 or 1: every call on its side is certain
        out["shown"] = [f"P({classes[1]}) {v:.2f}" for v in p]
    elif head == "multiclass":
        probabilities = out[[f"p_{c}" for c in classes]].to_numpy(float)
        out["confidence"] = probabilities[np.arange(len(out)), out["predicted"].map({c: i for i, c in enumerate(classes)}).to_numpy(int)]
        out["shown"] = [f"P({c}) {v:.2f}" for c, v in zip(out["predicted"], out["confidence"], strict=True)]
    else:  # ordinal: how far the score sits from the true class
        out["confidence"] = (out["score"] - out["label"].map({c: i for i, c in enumerate(classes)})).abs()
        out["shown"] = [f"score {v:.2f}" for v in out["score"]]
    wrong = out[out["label"] != out["predicted"]]
    return wrong.sort_values("confidence", ascending=False, kind="stable")


def binary_summary(predictions: pd.DataFrame, classes: list[str], threshold: float = 0.5, n_boot: int = 1000) -> dict[str, Any]:
    """Metrics at the threshold with bootstrap 95% intervals for accuracy, sensitivity, specificity, PPV, NPV, balanced
    accuracy, AUC, F1 and kappa: a diagnostic accuracy report (STARD) gives sensitivity and specificity with their intervals."""
    y = (predictions["label"] == classes[1]).to_numpy(int)
    p = predictions[f"p_{classes[1]}"].to_numpy(float)
    predicted = (p >= threshold).astype(int)
    summary = metrics.binary_metrics(y, p, threshold)
    summary["confusion_matrix"] = skm.confusion_matrix(y, predicted, labels=[0, 1]).tolist()
    summary["kappa"] = metrics.quadratic_kappa(y, predicted, 2).kappa
    # every resample is a set of case weights (how often each case was drawn), and its metrics come from a weighted
    # confusion matrix and a once-sorted AUC: scikit-learn's values without its input checks or a copy of the cases
    # (bench/summary_bench.py, 1,000 resamples: 624 predictions 6.6 s with scikit-learn per resample, 0.13 s here;
    # 100,000 predictions 52 s and 2.5 s)
    auc = metrics.auc_by_weights(y, p)

    def resample(counts: np.ndarray) -> dict[str, float]:
        matrix = metrics.confusion(y, predicted, 2, weights=counts)
        (tn, fp), (fn, tp) = matrix
        rates = metrics.rates_from_counts(tn, fp, fn, tp)
        return {"accuracy": float(np.trace(matrix) / matrix.sum()), **rates,
                "balanced_accuracy": (rates["sensitivity"] + rates["specificity"]) / 2, "auc": auc(counts),
                "f1": metrics.f1_from_confusion(matrix), "kappa": metrics.kappa_from_confusion(matrix).kappa}

    for key, interval in metrics.bootstrap_intervals(resample, len(y), n=n_boot, seed=0).items():
        summary[f"{key}_ci95"] = list(interval)
    summary["ece"] = metrics.calibration(y, p)[0]
    summary["n"] = int(len(y))
    return summary


def multiclass_summary(predictions: pd.DataFrame, classes: list[str], n_boot: int = 1000) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro AUC, the report, QWK and the confusion matrix, with intervals."""
    index = {c: i for i, c in enumerate(classes)}
    y = predictions["label"].map(index).to_numpy(int)
    probabilities = predictions[[f"p_{c}" for c in classes]].to_numpy(float)
    summary = metrics.multiclass_metrics(y, probabilities, classes)
    y_pred = probabilities.argmax(axis=1)
    summary["confusion_matrix"] = skm.confusion_matrix(y, y_pred, labels=list(range(len(classes)))).tolist()
    kappa = metrics.quadratic_kappa(y, y_pred, len(classes))
    summary.update(observed=kappa.observed.tolist(), expected=kappa.expected.tolist(), weights=kappa.weights.tolist())
    k = len(classes)

    def resample(counts: np.ndarray) -> dict[str, float]:
        matrix = metrics.confusion(y, y_pred, k, weights=counts)
        return {"accuracy": float(np.trace(matrix) / matrix.sum()), "f1_macro": metrics.f1_from_confusion(matrix, "macro"),
                "kappa": metrics.kappa_from_confusion(matrix).kappa}

    summary.update(resample(np.ones(len(y))))
    for key, interval in metrics.bootstrap_intervals(resample, len(y), n=n_boot, seed=0).items():
        summary[f"{key}_ci95"] = list(interval)
    summary["n"] = int(len(y))
    return summary


def ordinal_summary(predictions: pd.DataFrame, classes: list[str], cutpoints: list[float] | None = None) -> dict[str, Any]:
    """QWK with plain rounding and with cut-points (optimised on validation by the caller), O/E/W matrices."""
    index = {c: i for i, c in enumerate(classes)}
    y = predictions["label"].map(index).to_numpy(int)
    score = predictions["score"].to_numpy(float)
    k = len(classes)
    rounded = np.clip(np.round(score), 0, k - 1).astype(int)
    out: dict[str, Any] = {"n": int(len(y)), "mae": float(np.mean(np.abs(score - y)))}
    plain = metrics.quadratic_kappa(y, rounded, k)
    out["kappa_rounding"] = plain.kappa
    chosen = rounded if cutpoints is None else metrics.apply_cutpoints(score, cutpoints)
    kappa = metrics.quadratic_kappa(y, chosen, k)
    out.update(kappa=kappa.kappa, cutpoints=None if cutpoints is None else [float(c) for c in cutpoints],
               observed=kappa.observed.tolist(), expected=kappa.expected.tolist(), weights=kappa.weights.tolist(),
               accuracy=float(skm.accuracy_score(y, chosen)),
               confusion_matrix=skm.confusion_matrix(y, chosen, labels=list(range(k))).tolist())
    return out


def summarize(run: Path, predictions: pd.DataFrame, n_boot: int = 1000, threshold: float | None = None) -> dict[str, Any]:
    """The metrics for a run's predictions table, whatever its head; binary at the run's threshold
    (or the one given), ordinal with cut-points optimised on the run's validation predictions."""
    status = read_status(run)
    classes = status["classes"]
    head = ModelConfig.from_dict(read_json(Path(run) / "config.json").get("model", {})).head
    if head == "binary":
        chosen = float(status.get("threshold", 0.5)) if threshold is None else threshold
        return {"head": head, **binary_summary(predictions, classes, chosen, n_boot)}
    if head == "multiclass":
        return {"head": head, **multiclass_summary(predictions, classes, n_boot)}
    val = load_predictions(run, "val")
    cuts = None
    if val is not None and len(val):
        y_val = val["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(int)
        cuts = metrics.optimise_cutpoints(y_val, val["score"].to_numpy(float), len(classes)).tolist()
    return {"head": head, **ordinal_summary(predictions, classes, cuts)}
