"""Evaluation metrics over arrays, in scikit-learn's style: (y_true, y_score, ...) in, numbers out.

Binary tasks take y_score = P(positive class); multi-class tasks take an (n, k) probability matrix;
ordinal tasks take a regression score turned into classes by cut-points. Everything the Evaluate
page shows is computed here from the stored predictions table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn import metrics as skm


def _check(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=float)
    if len(y_true) != len(y_score):
        raise ValueError(f"y_true has {len(y_true)} values but y_score has {len(y_score)}.")
    if len(y_true) == 0:
        raise ValueError("No predictions to evaluate.")
    return y_true, y_score


def binary_metrics(y_true, y_score, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, sensitivity, specificity, PPV, NPV, F1, AUC, AP and Brier at a threshold."""
    y_true, y_score = _check(y_true, y_score)
    y_true = y_true.astype(int)
    y_pred = (y_score >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    both = len(np.unique(y_true)) == 2
    return {
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)) if both else float("nan"),
        **rates_from_counts(tn, fp, fn, tp),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "auc": float(skm.roc_auc_score(y_true, y_score)) if both else float("nan"),
        "average_precision": float(skm.average_precision_score(y_true, y_score)) if both else float("nan"),
        "brier": float(skm.brier_score_loss(y_true, y_score)),
    }


def rates_from_counts(tn: float, fp: float, fn: float, tp: float) -> dict[str, float]:
    """Sensitivity, specificity, PPV and NPV from a binary confusion matrix's cells (counts, or a resample's weighted
    counts); nan where a rate's denominator is empty (no sick patients: no sensitivity)."""
    def rate(hits: float, total: float) -> float:
        return float(hits / total) if total else float("nan")

    return {"sensitivity": rate(tp, tp + fn), "specificity": rate(tn, tn + fp), "ppv": rate(tp, tp + fp), "npv": rate(tn, tn + fn)}


def youden_threshold(y_true, y_score) -> float:
    """The ROC threshold maximising sensitivity + specificity - 1 (Youden's J)."""
    y_true, y_score = _check(y_true, y_score)
    fpr, tpr, thresholds = skm.roc_curve(y_true.astype(int), y_score)
    finite = np.isfinite(thresholds)
    best = np.argmax((tpr - fpr)[finite])
    return float(np.clip(thresholds[finite][best], 0.0, 1.0))


def threshold_for_sensitivity(y_true, y_score, target: float) -> float:
    """The highest threshold whose sensitivity is at least `target` (most specific such threshold)."""
    y_true, y_score = _check(y_true, y_score)
    if not 0 < target <= 1:
        raise ValueError("The target sensitivity must be in (0, 1].")
    # every threshold: roc_curve's default drops collinear points, which can be the most specific one
    fpr, tpr, thresholds = skm.roc_curve(y_true.astype(int), y_score, drop_intermediate=False)
    ok = np.flatnonzero((tpr >= target) & np.isfinite(thresholds))
    return float(np.clip(thresholds[ok[0]], 0.0, 1.0)) if len(ok) else 0.0


def confusion(y_true, y_pred, n_classes: int, weights=None) -> np.ndarray:
    """Counts of (true, predicted) class indices, rows true: scikit-learn's confusion_matrix without its input checks,
    which were most of the time of the 1,000 resamples behind every bootstrap interval. With `weights` (a resample's
    multiplicities) each case counts that many times, so a resample needs no copy of the cases."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    values = np.concatenate([y_true, y_pred])
    if values.size and (values.min() < 0 or values.max() >= n_classes):
        raise ValueError(f"Class indices must be 0 to {n_classes - 1}.")  # else bincount would count them in another cell
    cells = np.bincount(y_true * n_classes + y_pred, weights=weights, minlength=n_classes * n_classes)
    return cells.reshape(n_classes, n_classes)


def f1_from_confusion(matrix: np.ndarray, average: str = "binary") -> float:
    """F1 of the positive class (binary: 0 when it is never true nor predicted), or the mean over the classes that are
    true or predicted at least once (macro), as scikit-learn's f1_score with zero_division=0."""
    tp = np.diag(matrix).astype(float)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(f1[1] if average == "binary" else f1[denominator > 0].mean())


def auc_by_weights(y_true, y_score) -> Callable[[np.ndarray], float]:
    """ROC AUC of these cases under any case weights, e.g. a bootstrap resample's multiplicities; nan where a class
    weighs nothing. The scores are sorted once: each call is two bincounts and a cumulative sum, O(n), where ranking
    every resample is O(n log n) (100,000 predictions: about 13 s of a summary's 1,000 resamples).

    The Mann-Whitney form over tied groups: AUC = sum over distinct scores of W+(score) * (W-(below) + W-(score) / 2)
    / (W+ * W-), ties counting half, which is roc_auc_score's value."""
    positive = np.asarray(y_true).astype(bool)
    groups = np.unique(np.asarray(y_score, float), return_inverse=True)[1].ravel()
    n_groups = int(groups.max()) + 1 if groups.size else 0
    pos_groups, neg_groups = groups[positive], groups[~positive]

    def auc(weights: np.ndarray) -> float:
        w_pos = np.bincount(pos_groups, weights=weights[positive], minlength=n_groups)
        w_neg = np.bincount(neg_groups, weights=weights[~positive], minlength=n_groups)
        total_pos, total_neg = w_pos.sum(), w_neg.sum()
        if not total_pos or not total_neg:
            return float("nan")
        below = np.cumsum(w_neg) - w_neg
        return float(w_pos @ (below + 0.5 * w_neg) / (total_pos * total_neg))

    return auc


@dataclass(frozen=True)
class Kappa:
    """Quadratic weighted kappa with the matrices it is made of (observed, expected, weights)."""

    kappa: float
    observed: np.ndarray
    expected: np.ndarray
    weights: np.ndarray


def quadratic_kappa(y_true, y_pred, n_classes: int | None = None) -> Kappa:
    """kappa = 1 - sum(W*O) / sum(W*E), W[i,j] = (i-j)^2 / (k-1)^2, E = outer(row, col totals) / n."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    k = n_classes or int(max(y_true.max(), y_pred.max()) + 1)
    return kappa_from_confusion(confusion(y_true, y_pred, k))


def kappa_from_confusion(matrix: np.ndarray) -> Kappa:
    """Quadratic weighted kappa of a (true x predicted) count matrix, weighted counts included."""
    observed = np.asarray(matrix, float)
    k = len(observed)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    idx = np.arange(k)
    weights = (idx[:, None] - idx[None, :]) ** 2 / max((k - 1) ** 2, 1)
    denominator = (weights * expected).sum()
    kappa = 1.0 - (weights * observed).sum() / denominator if denominator else 1.0
    return Kappa(float(kappa), observed, expected, weights)


def apply_cutpoints(scores, cutpoints) -> np.ndarray:
    """Class index = how many (sorted) cut-points the score passes."""
    return np.searchsorted(np.sort(np.asarray(cutpoints, float)), np.asarray(scores, float), side="right")


def optimise_cutpoints(y_true, scores, n_classes: int) -> np.ndarray:
    """Cut-points that maximise quadratic kappa on validation data (seed 004 only rounded).

    Starts from the rounding cut-points (0.5, 1.5, ...) and searches with Nelder-Mead; kappa is
    piecewise constant, which a simplex search handles where gradients would not.
    """
    y_true, scores = np.asarray(y_true, int), np.asarray(scores, float)
    start = np.arange(n_classes - 1) + 0.5

    def loss(cuts: np.ndarray) -> float:
        return -quadratic_kappa(y_true, apply_cutpoints(scores, cuts), n_classes).kappa

    result = minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-6, "maxiter": 2000})
    best = np.sort(result.x)
    return best if loss(best) <= loss(start) else start


def calibration(y_true, y_score, bins: int = 10) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Expected calibration error and the reliability curve (mean predicted, observed rate, count per bin)."""
    y_true, y_score = _check(y_true, y_score)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(y_score, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    predicted = np.bincount(which, weights=y_score, minlength=bins) / np.maximum(counts, 1)
    observed = np.bincount(which, weights=y_true.astype(float), minlength=bins) / np.maximum(counts, 1)
    ece = float(np.sum(counts / counts.sum() * np.abs(predicted - observed)))
    keep = counts > 0
    return ece, predicted[keep], observed[keep], counts[keep]


def multiclass_metrics(y_true, probabilities, labels: list[str]) -> dict[str, object]:
    """Accuracy, balanced accuracy, macro one-vs-rest AUC, the 4-digit classification report, QWK."""
    y_true = np.asarray(y_true, int)
    probabilities = np.asarray(probabilities, float)
    y_pred = probabilities.argmax(axis=1)
    k = probabilities.shape[1]
    present = len(np.unique(y_true)) == k
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "auc_macro_ovr": float(skm.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro")) if present else float("nan"),
        "report": skm.classification_report(y_true, y_pred, labels=list(range(k)), target_names=labels,
                                            digits=4, output_dict=True, zero_division=0),
        "quadratic_kappa": quadratic_kappa(y_true, y_pred, k).kappa,
    }


def resample_counts(n_cases: int, n: int = 1000, seed: int = 0) -> Iterator[np.ndarray]:
    """The percentile bootstrap's n resamples of n_cases cases (drawn with replacement, seeded), each as how many times
    every case was drawn: metrics weigh the cases by it instead of copying them."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield np.bincount(rng.integers(0, n_cases, n_cases), minlength=n_cases)


def bootstrap_intervals(
    statistics: Callable[[np.ndarray], dict[str, float]], n_cases: int, n: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """(lower, upper) percentile interval of every statistic, all over the same resamples (`resample_counts`);
    `statistics` maps a resample's case weights to named values. A resample where a value is undefined (nan, e.g. AUC
    with one class drawn) is skipped for that value; one never defined gets (nan, nan)."""
    values: dict[str, list[float]] = {key: [] for key in statistics(np.ones(n_cases))}  # every key, even with n = 0
    for counts in resample_counts(n_cases, n, seed):
        for key, value in statistics(counts).items():
            if np.isfinite(value):
                values[key].append(value)
    quantiles = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {key: tuple(float(v) for v in np.percentile(found, quantiles)) if found else (float("nan"), float("nan"))
            for key, found in values.items()}


def threshold_table(y_true, y_score, n: int = 101) -> pd.DataFrame:
    """Sensitivity, specificity, precision, F1 and accuracy at n evenly spaced thresholds in [0, 1]
    (vectorised: one pass over the sorted scores, not n confusion matrices)."""
    y_true, y_score = _check(y_true, y_score)
    y = y_true.astype(int)
    thresholds = np.linspace(0, 1, n)
    order = np.sort(y_score)
    pos_scores = np.sort(y_score[y == 1])
    n_pos, n_neg = len(pos_scores), len(y) - len(pos_scores)
    predicted_pos = len(order) - np.searchsorted(order, thresholds, side="left")
    tp = n_pos - np.searchsorted(pos_scores, thresholds, side="left")
    fp = predicted_pos - tp
    fn, tn = n_pos - tp, n_neg - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame({
            "threshold": thresholds,
            "sensitivity": np.where(n_pos, tp / max(n_pos, 1), np.nan),
            "specificity": np.where(n_neg, tn / max(n_neg, 1), np.nan),
            "precision": np.where(predicted_pos > 0, tp / np.maximum(predicted_pos, 1), np.nan),
            "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0),
            "accuracy": (tp + tn) / len(y),
        })
    return table
