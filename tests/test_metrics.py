"""Metrics against scikit-learn and hand-computed values on fixed arrays."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from core import metrics

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
S = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.9, 0.6, 0.2, 0.55, 0.95])


def test_binary_metrics_by_hand_and_sklearn() -> None:
    m = metrics.binary_metrics(Y, S, threshold=0.5)
    # predictions: 0 0 0 1 | 1 1 1 0 1 1  -> tn=3 fp=1 fn=1 tp=5
    assert m["sensitivity"] == pytest.approx(5 / 6) and m["specificity"] == pytest.approx(3 / 4)
    assert m["ppv"] == pytest.approx(5 / 6) and m["npv"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(0.8) and m["balanced_accuracy"] == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(Y, S)) and m["brier"] == pytest.approx(np.mean((S - Y) ** 2))
    assert m["f1"] == pytest.approx(5 / 6) and m["average_precision"] == pytest.approx(skm.average_precision_score(Y, S))


def test_youden_and_target_sensitivity() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.62, 0.6, 0.7, 0.8, 0.9])
    t = metrics.youden_threshold(y, s)
    m = metrics.binary_metrics(y, s, t)
    assert m["sensitivity"] + m["specificity"] - 1 == pytest.approx(0.75)  # the best J on this case
    strict = metrics.threshold_for_sensitivity(y, s, 1.0)
    assert strict == pytest.approx(0.6) and metrics.binary_metrics(y, s, strict)["sensitivity"] == 1.0
    with pytest.raises(ValueError, match="target sensitivity"):
        metrics.threshold_for_sensitivity(y, s, 0)


def test_quadratic_kappa_matrices_by_hand() -> None:
    y_true, y_pred = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0])
    k = metrics.quadratic_kappa(y_true, y_pred, 3)
    np.testing.assert_array_equal(k.observed, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    np.testing.assert_allclose(k.expected, np.outer([2, 2, 2], [2, 3, 1]) / 6)
    np.testing.assert_allclose(k.weights, [[0, 0.25, 1], [0.25, 0, 0.25], [1, 0.25, 0]])
    expected = 1 - (k.weights * k.observed).sum() / (k.weights * k.expected).sum()
    assert k.kappa == pytest.approx(expected)
    assert k.kappa == pytest.approx(skm.cohen_kappa_score(y_true, y_pred, weights="quadratic"))


def test_cutpoints_beat_rounding_on_a_biased_regressor() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    scores = y * 0.7 + 0.3 + rng.normal(0, 0.15, 400)  # compressed and shifted: rounding is off
    rounded = metrics.quadratic_kappa(y, np.clip(np.round(scores), 0, 4).astype(int), 5).kappa
    cuts = metrics.optimise_cutpoints(y, scores, 5)
    tuned = metrics.quadratic_kappa(y, metrics.apply_cutpoints(scores, cuts), 5).kappa
    assert tuned > rounded + 0.02 and len(cuts) == 4 and np.all(np.diff(cuts) > 0)


def test_calibration_and_multiclass() -> None:
    ece, predicted, observed, counts = metrics.calibration(np.array([0, 1, 1, 1]), np.array([0.05, 0.95, 0.95, 0.95]), bins=10)
    assert counts.tolist() == [1, 3] and ece == pytest.approx(0.05)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    y = np.array([0, 1, 2, 1])
    m = metrics.multiclass_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == 0.75 and m["auc_macro_ovr"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert m["report"]["b"]["recall"] == 0.5 and m["report"]["macro avg"]["support"] == 4


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) * 0.6 + 0.3 * y
    auc = metrics.auc_by_weights(y, s)
    point = auc(np.ones(200))
    lo, hi = metrics.bootstrap_intervals(lambda w: {"auc": auc(w)}, 200, n=1000, seed=1)["auc"]
    assert lo <= point <= hi and (lo, hi) == metrics.bootstrap_intervals(lambda w: {"auc": auc(w)}, 200, n=1000, seed=1)["auc"]
    assert metrics.bootstrap_intervals(lambda w: {"auc": auc(w)}, 200, n=1000, seed=2)["auc"] != (lo, hi)
    one_class = metrics.auc_by_weights(np.ones(5), np.linspace(0, 1, 5))
    assert np.isnan(metrics.bootstrap_intervals(lambda w: {"auc": one_class(w)}, 5, n=50)["auc"]).all()  # undefined: no interval
    draws = list(metrics.resample_counts(7, n=3, seed=0))
    assert all(d.sum() == 7 and len(d) == 7 for d in draws)
    rng = np.random.default_rng(0)
    assert (draws[0] == np.bincount(rng.integers(0, 7, 7), minlength=7)).all()  # the draws of indices, counted
    with pytest.raises(ValueError, match="10 values but y_score has 3"):
        metrics.binary_metrics(Y, S[:3])


def test_resampled_metrics_are_scikit_learns() -> None:
    """The bootstrap's metrics (weighted counts by bincount, AUC over tied groups) give scikit-learn's values, ties, a class missing
    and one class only included."""
    rng = np.random.default_rng(3)
    for n in (2, 7, 60, 500):
        y = rng.integers(0, 2, n)
        s = np.round(rng.random(n), 1)  # many ties
        pred = (s >= 0.5).astype(int)
        assert metrics.f1_from_confusion(metrics.confusion(y, pred, 2)) == pytest.approx(skm.f1_score(y, pred, zero_division=0))
        if len(np.unique(y)) == 2:
            assert metrics.auc_by_weights(y, s)(np.ones(n)) == pytest.approx(skm.roc_auc_score(y, s))
        k = 4
        y3, pred3 = rng.integers(0, k - 1, n), rng.integers(0, k - 1, n)  # class 3 never true nor predicted
        assert (metrics.confusion(y3, pred3, k) == skm.confusion_matrix(y3, pred3, labels=list(range(k)))).all()
        assert metrics.f1_from_confusion(metrics.confusion(y3, pred3, k), "macro") == pytest.approx(
            skm.f1_score(y3, pred3, average="macro", zero_division=0))
    assert metrics.f1_from_confusion(metrics.confusion([0, 0], [0, 0], 2)) == 0.0
    # weighted by a resample's multiplicities = computed on the resampled cases themselves
    for n in (5, 60, 500):
        y, s = rng.integers(0, 2, n), np.round(rng.random(n), 1)
        pred = (s >= 0.5).astype(int)
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        drawn = np.repeat(np.arange(n), counts)
        assert (metrics.confusion(y, pred, 2, weights=counts) == skm.confusion_matrix(y[drawn], pred[drawn], labels=[0, 1])).all()
        assert metrics.kappa_from_confusion(metrics.confusion(y, pred, 2, weights=counts)).kappa == pytest.approx(
            skm.cohen_kappa_score(y[drawn], pred[drawn], weights="quadratic"))
        if len(np.unique(y[drawn])) == 2:
            assert metrics.auc_by_weights(y, s)(counts) == pytest.approx(skm.roc_auc_score(y[drawn], s[drawn]))
    assert np.isnan(metrics.auc_by_weights([0, 1, 1], [0.1, 0.5, 0.9])(np.array([0, 1, 2])))  # no negative drawn
    with pytest.raises(ValueError, match="0 to 1"):
        metrics.confusion([0, 1], [0, 2], 2)  # not silently counted in another cell
    assert np.isnan(metrics.auc_by_weights([1, 1, 1], [0.2, 0.5, 0.9])(np.ones(3)))  # one class: undefined
