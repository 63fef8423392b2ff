"""Predict's comparison of a call with the validation images the model scored alike (core.similar_scores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from core.similar_scores import MIN_IMAGES, neighbour_count, similar_scores, unavailable

CLASSES = ["NORMAL", "PNEUMONIA"]


def _binary_validation(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Scores spread over (0, 1); an image's chance of being PNEUMONIA is its score, so the middle is a coin toss."""
    rng = np.random.default_rng(seed)
    p = np.sort(rng.uniform(0.01, 0.99, n))
    return pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "label": np.where(rng.uniform(size=n) < p, "PNEUMONIA", "NORMAL"),
                         "p_PNEUMONIA": p})


def test_a_score_far_from_the_threshold_is_backed_and_one_near_it_is_borderline() -> None:
    val = _binary_validation()
    k = neighbour_count(len(val))
    assert k == 20  # the square root of 400
    sure = similar_scores(val, CLASSES, "binary", np.array([0.985]), "PNEUMONIA")
    assert sure.k == k and sure.agree >= 18 and not sure.borderline
    assert sure.low <= 0.985 <= sure.high or sure.high == val["p_PNEUMONIA"].max()  # its neighbours, at the top end
    assert sure.sentence().startswith(f"Of the {k} validation images scored nearest this one (P(PNEUMONIA) ")
    assert sure.sentence().endswith("at another hospital a confident call can be wrong.") and "borderline" not in sure.sentence()
    middle = similar_scores(val, CLASSES, "binary", np.array([0.5]), "PNEUMONIA")
    assert middle.borderline and 0.4 < middle.low < 0.5 < middle.high < 0.6
    assert middle.sentence().endswith("a borderline call. Images scored like this were not clearly more often PNEUMONIA than not.")
    # the count is of the images themselves, and the interval scipy's Wilson interval of it
    chosen = val[(val["p_PNEUMONIA"] >= middle.low) & (val["p_PNEUMONIA"] <= middle.high)]
    assert len(chosen) == k and middle.agree == int((chosen["label"] == "PNEUMONIA").sum())
    wilson = binomtest(middle.agree, k).proportion_ci(method="wilson")
    assert middle.ci == pytest.approx((wilson.low, wilson.high))
    # a NORMAL call at a low score counts the NORMAL images
    low = similar_scores(val, CLASSES, "binary", np.array([0.02]), "NORMAL")
    assert low.agree >= 18 and not low.borderline and low.counted == f"{low.agree}/{k}"


def test_nearest_in_score_across_a_gap() -> None:
    """Scores in two clusters: an image just below the upper one is compared with the upper one, not with the images that
    merely rank beside it."""
    val = pd.DataFrame({"label": ["NORMAL"] * 20 + ["PNEUMONIA"] * 20, "p_PNEUMONIA": [0.1] * 20 + [0.9] * 20})
    result = similar_scores(val, CLASSES, "binary", np.array([0.7]), "PNEUMONIA")
    assert (result.agree, result.k, result.low, result.high) == (10, 10, 0.9, 0.9) and not result.borderline


def test_several_classes_compare_with_the_images_given_the_same_call_and_too_few_say_nothing() -> None:
    classes = ["a", "b", "c"]
    rng = np.random.default_rng(2)
    probabilities = rng.dirichlet([1, 1, 1], 300)
    labels = [classes[i] for i in probabilities.argmax(axis=1)]
    labels[:30] = ["c"] * 30  # some images the model calls a or b are truly c
    val = pd.DataFrame({"label": labels, **{f"p_{c}": probabilities[:, i] for i, c in enumerate(classes)}})
    called_a = val[probabilities.argmax(axis=1) == 0]
    result = similar_scores(val, classes, "multiclass", np.array([0.9, 0.05, 0.05]), "a")
    assert result.k == neighbour_count(len(called_a)) and result.score_name == "P(a)"
    assert result.low >= called_a["p_a"].min() and result.agree <= result.k
    ordinal = pd.DataFrame({"label": ["0", "1", "2"] * 20, "score": np.tile([0.1, 1.0, 2.1], 20)})
    assert similar_scores(ordinal, ["0", "1", "2"], "ordinal", np.array([2.0]), "2").agree == neighbour_count(60)
    assert similar_scores(val.head(MIN_IMAGES - 1), classes, "multiclass", np.array([0.9, 0.05, 0.05]), "a") is None
    assert similar_scores(None, CLASSES, "binary", np.array([0.5]), "PNEUMONIA") is None


def test_adapted_runs_and_fold_ensembles_have_no_validation_images_of_their_own(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {}}))
    assert unavailable(run) == ""
    (run / "config.json").write_text(json.dumps({"model": {}, "adapted_from": "parent"}))
    assert "adapted to a site without its labels" in unavailable(run)
    (run / "config.json").write_text(json.dumps({"model": {}}))
    for k in (1, 2):
        (run / f"fold-{k}").mkdir()
        (run / f"fold-{k}" / "best.keras").write_bytes(b"")
    assert "K-fold ensemble" in unavailable(run)
