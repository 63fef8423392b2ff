"""The presenter's tour: the whole story on the demo set, told in plain words, in about a minute.

A real background job trains a small model on the demo set (`start_tour`), the test split is
predicted and summarised (`tour_evaluation`), and one test X-ray is explained with Grad-CAM
(`tour_example`). What it leaves is an ordinary run folder that Evaluate and Predict open. The
sentences are for a lay audience: numbers turned into "of 100 children".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core import jobs
from core.dataset import DEMO
from core.runs import create_run, read_status
from core.train import TrainConfig, make_config

TOUR_EPOCHS = 12
TOUR_IMAGE_SIZE = 96  # the demo's opacities are large: 96 px learns them in seconds on a CPU


def tour_config(seed: int = 0) -> TrainConfig:
    """SmallNet at 96 px for 12 epochs on the demo set, threshold chosen on validation: about 30 s on 2 cores."""
    return make_config(DEMO, "smallnet", image_size=TOUR_IMAGE_SIZE, epochs=TOUR_EPOCHS, batch_size=16,
                       tensorboard=False, tune_threshold=True, seed=seed)


def start_tour(runs_dir: Path | None = None) -> Path:
    """Create the tour's run and start it as a background job (queued if another job holds the slot)."""
    run = create_run({**tour_config().to_dict(), "tour": True}, runs_dir)
    jobs.start(run)
    return run


@dataclass(frozen=True)
class TourEvaluation:
    summary: dict[str, Any]  # evaluate.binary_summary at the run's threshold
    y: np.ndarray  # 1 = the positive class
    p: np.ndarray  # the model's probability of the positive class
    threshold: float
    threshold_source: str
    classes: list[str]


def tour_evaluation(run: Path) -> TourEvaluation:
    """Predict the test split once (stored as predictions-test.csv, as the Evaluate page would) and summarise it."""
    from core.evaluate import binary_summary, load_predictions, predict_table, split_rows

    status = read_status(run)
    classes = list(status["classes"])
    predictions = load_predictions(run, "test")
    if predictions is None:
        predictions = predict_table(run, split_rows(run, "test"), "test")
    threshold = float(status.get("threshold", 0.5))
    y = (predictions["label"] == classes[1]).to_numpy(int)
    p = predictions[f"p_{classes[1]}"].to_numpy(float)
    return TourEvaluation(binary_summary(predictions, classes, threshold, n_boot=200), y, p, threshold,
                          status.get("threshold_source", "default 0.5"), classes)


@dataclass(frozen=True)
class TourExample:
    path: str
    true_label: str
    predicted: str
    probability: float  # of the predicted class
    pixels: np.ndarray  # the image as read (uint8)
    heatmap: np.ndarray  # Grad-CAM of the predicted class, [0, 1], at the model's input size


def tour_example(run: Path, evaluation: TourEvaluation) -> TourExample:
    """The test X-ray with disease the model is surest of, explained with Grad-CAM for its answer."""
    from core.evaluate import load_predictions
    from core.gradcam import GradCam
    from core.image_reader import read_image
    from core.predict import from_run

    stored = load_predictions(run, "test")  # tour_evaluation wrote it
    sick = stored[stored["label"] == evaluation.classes[1]]
    row = (sick if len(sick) else stored).sort_values(f"p_{evaluation.classes[1]}", ascending=False).iloc[0]
    predictor = from_run(run)
    pixels = read_image(row["path"]).pixels
    batch = predictor.prepare(pixels)[None]
    score = predictor.scores(batch)[0]
    predicted = predictor.label(score)
    heatmap = GradCam(predictor.model).explain(batch, class_index=predictor.classes.index(predicted)).heatmaps[0]
    return TourExample(row["path"], row["label"], predicted, predictor.probabilities(score)[predicted], pixels, heatmap)


# ---- the words ----------------------------------------------------------------------------------

def training_sentence(status: dict[str, Any]) -> str:
    epoch, epochs = int(status.get("epoch", 0)), int(status.get("epochs", TOUR_EPOCHS) or TOUR_EPOCHS)
    return (f"The computer is learning from example X-rays whose answer is known: {epoch} of {epochs} passes done. "
            "With each pass it should make fewer mistakes. The 'validation' lines are X-rays kept aside: they show "
            "whether it learned the disease or just memorised the pictures.")


def result_sentence(summary: dict[str, Any], classes: list[str]) -> str:
    sick, healthy = classes[1].lower(), classes[0].lower()
    found = round(100 * summary["sensitivity"])
    alarms = round(100 * (1 - summary["specificity"]))
    said = (f"On {summary['n']} X-rays it never saw while learning: of 100 children with {sick}, it would flag about "
            f"{found} and miss {100 - found}. Of 100 {healthy} children, it would wrongly flag about {alarms}.")
    lo, hi = summary.get("sensitivity_ci95", (float("nan"),) * 2)
    if np.isfinite(lo):  # a few dozen test X-rays: say how rough "about" is, from the bootstrap
        said += (f" With so few X-rays these numbers are rough: on another {summary['n']} like them it could as easily find "
                 f"anywhere from {round(100 * lo)} to {round(100 * hi)} of 100.")
    return said


def auc_sentence(summary: dict[str, Any]) -> str:
    return (f"AUC {summary['auc']:.2f}: given one sick and one healthy child at random, the model gives the sick child "
            f"the higher score {round(100 * summary['auc'])} times in 100.")


def threshold_sentence(threshold: float, source: str, classes: list[str]) -> str:
    where = "on separate validation X-rays, not on these test ones" if "validation" in source else f"({source})"
    return (f"It says {classes[1]} when its probability is {threshold:.2f} or more. That cut-off was chosen {where}; "
            "moving it trades missed cases against false alarms.")


def heatmap_sentence(example: TourExample) -> str:
    return (f"For this X-ray the model says {example.predicted} ({example.probability:.0%}); the true answer is "
            f"{example.true_label}. The warm colours mark the parts of the image that weighed most in its answer. They "
            "show where the model looked, not where the disease is, and they are not a diagnosis.")


DEMO_CAVEAT = ("These are synthetic demo images made for this tour: the numbers show how the tool works, not how well a "
               "model would do on real patients.")
