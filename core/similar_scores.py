"""How the run's validation images that scored like a new image turned out: Predict's answer to "how sure is this call?".

A probability of 0.51 and one of 0.99 print the same label. The validation images whose scores lie nearest the new
image's, with their true labels, say how often a call made at such a score was right on images the model did not train on.
They come from the training source, at its class mix: at another hospital the same score can be right less often, and
there the errors can be confident (README, Predict: measured on another hospital's X-rays).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from core.evaluate import load_predictions, model_runs
from core.runs import read_json

MIN_IMAGES = 10  # fewer validation images than this (of the predicted class, for several classes) say nothing


@dataclass(frozen=True)
class SimilarScores:
    label: str  # the call being checked
    agree: int  # how many of the k images truly were `label`
    k: int
    score_name: str  # what was compared: "P(PNEUMONIA)", or "score" for an ordinal head
    low: float  # the k images' range of that score
    high: float
    ci: tuple[float, float]  # Wilson 95% interval of agree / k

    @property
    def borderline(self) -> bool:
        """Images scored like this were not clearly more often `label` than not: the interval reaches 50%."""
        return self.ci[0] <= 0.5

    @property
    def counted(self) -> str:
        """The table's short form: "14/23"."""
        return f"{self.agree}/{self.k}"

    def sentence(self) -> str:
        words = (f"Of the {self.k} validation images scored nearest this one ({self.score_name} {self.low:.2f}-{self.high:.2f}), "
                 f"{self.agree} were {self.label} ({self.agree / self.k:.0%}; 95% CI {self.ci[0]:.0%}-{self.ci[1]:.0%})")
        if self.borderline:
            return words + f": a borderline call. Images scored like this were not clearly more often {self.label} than not."
        return words + ". That holds for images like the training images; at another hospital a confident call can be wrong."


def unavailable(run: Path) -> str:
    """Why a run's validation images cannot stand for its calls ("" when they can)."""
    config = read_json(Path(run) / "config.json")
    if config.get("adapted_from"):
        return ("This run was adapted to a site without its labels, and its validation images come from the training source, "
                "not that site: there is nothing labelled to compare its calls with.")
    if len(model_runs(run)) > 1:
        return "A K-fold ensemble has no validation images of its own: every image trained some of its folds."
    return ""


def validation_table(run: Path) -> pd.DataFrame | None:
    """The run's stored validation predictions when they can stand for its calls (its present model's), else None."""
    return None if unavailable(run) else load_predictions(run, "val")


def neighbour_count(n: int) -> int:
    """k: the square root of the images compared, at least MIN_IMAGES: local enough to follow the score, enough to count."""
    return min(n, max(MIN_IMAGES, round(math.sqrt(n))))


def similar_scores(val: pd.DataFrame | None, classes: list[str], head: str, score: np.ndarray, label: str) -> SimilarScores | None:
    """The k validation images whose scores rank nearest this image's, and how many of them truly were its call.

    Binary: P(positive) over all validation images. Several classes: P(call) over those the model also called that class.
    Ordinal: the score. Nearest on the scale the page shows. None when fewer than MIN_IMAGES images can be compared.
    """
    if val is None or label not in classes:
        return None
    if head == "binary":
        column, value, pool, name = f"p_{classes[1]}", float(score[0]), val, f"P({classes[1]})"
    elif head == "multiclass":
        probabilities = val[[f"p_{c}" for c in classes]].to_numpy(float)
        pool = val[probabilities.argmax(axis=1) == classes.index(label)]
        column, value, name = f"p_{label}", float(score[classes.index(label)]), f"P({label})"
    else:
        column, value, pool, name = "score", float(score[0]), val, "score"
    if len(pool) < MIN_IMAGES:
        return None
    values = pool[column].to_numpy(float)
    k = neighbour_count(len(pool))
    chosen = np.argsort(np.abs(values - value), kind="stable")[:k]
    agree = int((pool["label"].to_numpy()[chosen] == label).sum())
    interval = binomtest(agree, k).proportion_ci(method="wilson")
    return SimilarScores(label, agree, k, name, float(values[chosen].min()), float(values[chosen].max()),
                         (float(interval.low), float(interval.high)))
