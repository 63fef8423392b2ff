"""External sets watched during training: another hospital's images, scored after every epoch, never learned from.

A run's config may list external sources (`TrainConfig.external`). The job's `ExternalMonitor`
scores them, and the run's own validation split the same way (plain cross-entropy, AUC, accuracy at
the run's current threshold) so the two curves compare like with like, and writes `external.csv`.
It never writes into Keras' epoch logs, which is where checkpointing, early stopping, the LR
schedule and the threshold choice read from: an external set cannot steer them by construction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from core.atomic import write_text
from core.errors import MedImageError
from core.pipeline import PipelineConfig, cache_plan, make_dataset
from core.runs import read_metrics, read_status

EXTERNAL_FILE = "external.csv"
VALIDATION = "validation"


def external_name(source: str) -> str:
    """The short name of an external source, as in predictions-<name>.csv: 'external-<folder>'."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(str(source).rstrip("/")).name).strip("-")[:40]
    return slug if slug.lower().startswith("external-") else f"external-{slug}"


def load_external(source: str, classes: list[str]) -> pd.DataFrame:
    """Every image of an external source with a label the model knows (its own split ignored)."""
    from core.dataset_store import open_source

    table = open_source(source).table
    unknown = sorted(set(table["label"]) - set(classes))
    if unknown:
        raise MedImageError(f"The external set {source} has classes {unknown} that the model does not know ({classes}).")
    return table


def score(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Loss, AUC and accuracy/sensitivity/specificity at the threshold for binary scores p = P(class 1)."""
    eps = 1e-7
    q = np.clip(p, eps, 1 - eps)
    both = len(np.unique(y)) == 2
    pred = p >= threshold
    return {
        "n": int(len(y)),
        "loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
        "auc": float(skm.roc_auc_score(y, p)) if both else float("nan"),
        "accuracy": float(np.mean(pred == y)),
        "sensitivity": float(np.mean(pred[y == 1])) if (y == 1).any() else float("nan"),
        "specificity": float(np.mean(~pred[y == 0])) if (y == 0).any() else float("nan"),
    }


class ExternalMonitor(keras.callbacks.Callback):
    """Scores the validation split and each external set after every epoch into external.csv. Binary heads only."""

    def __init__(self, run: Path, sets: dict[str, pd.DataFrame], classes: list[str], pipeline: PipelineConfig,
                 skip: Callable[[], bool] = lambda: False) -> None:
        super().__init__()
        self.run, self.skip = Path(run), skip
        # scored every epoch: kept decoded in memory when they fit, streamed otherwise
        config = replace(pipeline, cache=cache_plan(sum(len(t) for t in sets.values()), pipeline).in_memory)
        self.sets = {name: (make_dataset(table, classes, config), (table["label"] == classes[1]).to_numpy(int))
                     for name, table in sets.items() if len(table)}
        self.rows = read_metrics(self.run, EXTERNAL_FILE)

    def _predict(self, data) -> np.ndarray:
        return np.concatenate([np.asarray(self.model.predict_on_batch(x), float)[:, 0] for x, _ in data])

    def on_epoch_end(self, epoch: int, logs=None) -> None:  # reads nothing from logs and writes nothing into them
        if self.skip():  # an epoch the run does not count (cut short by "Stop now"): no row, as in metrics.csv
            return
        threshold = float(read_status(self.run).get("threshold", 0.5))
        rows = [{"epoch": epoch + 1, "set": name, "threshold": threshold, **score(y, self._predict(data), threshold)}
                for name, (data, y) in self.sets.items()]
        kept = self.rows[self.rows["epoch"] <= epoch] if len(self.rows) else self.rows  # a resumed run re-scores its epochs
        self.rows = pd.concat([kept, pd.DataFrame(rows)], ignore_index=True)
        write_text(self.run / EXTERNAL_FILE, self.rows.to_csv(index=False))


def monitor_for(run: Path, config, classes: list[str], val: pd.DataFrame,
                skip: Callable[[], bool] = lambda: False) -> ExternalMonitor | None:
    """The job's monitor when the run lists external sets and has a binary head; None otherwise. `skip` says the
    epoch just ended is not counted (the recorder's part epoch)."""
    if not config.external or config.model.head != "binary":
        return None
    sets = {VALIDATION: val} | {external_name(source): load_external(source, classes) for source in config.external}
    return ExternalMonitor(run, sets, classes, config.pipeline, skip)


def predict_externals(run: Path, sources: list[str] | tuple[str, ...], classes: list[str]) -> None:
    """After training: the final model's predictions on each external set, stored for Evaluate's gap panel."""
    from core.evaluate import predict_table

    for source in sources:
        predict_table(run, load_external(source, classes), external_name(source))
