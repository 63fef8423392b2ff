"""Is this image like the ones the model learned from? A check that needs no label, for Predict and for a new site.

A model gives a confident probability for any image, an X-ray from a scanner it never saw included. This measures how far
an image lies from the training images in the model's own features (the input of its last Dense layer): the Mahalanobis
distance to the nearest class mean, with one covariance shared by the classes (Lee et al. 2018, "A simple unified
framework for detecting out-of-distribution samples"), estimated with Ledoit-Wolf shrinkage (scikit-learn) because a
backbone has more features than a run has images to spare. Distances mean nothing alone, so each is put beside the
distances of the run's validation images, which the model did not learn from but which come from its own hospital: an
image further than 99% of them is flagged "unusual". On a whole site it gives the share flagged, which should be near 1%
when the site is like the training hospital.

The reference (class means, shared precision, the validation distances) is measured once per run and kept in the run
folder as novelty.npz. For a run adapted to a site, the reference is that site's own images (the classes the adapted model
gives them, since labels are never read there), split half to fit, half to compare: its statistics describe that site.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from core.atomic import write_bytes
from core.errors import MedImageError
from core.runs import read_json, read_status, run_rows

FILE = "novelty.npz"
FIT_IMAGES = 1000  # training images the class means and covariance are fitted on (seeded sample)
COMPARE_IMAGES = 1000  # validation images the distances are compared with
FLAG_SHARE = 0.01  # flagged: further than all but this share of the validation images
Progress = Callable[[str, float], None]


def feature_model(model: keras.Model) -> keras.Model:
    """The model up to its last layer's input: the features its decision is a linear function of."""
    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise MedImageError(f"{model.name} does not end in a Dense layer, so it has no feature layer to measure images in.")
    return keras.Model(model.inputs, last.input, name=f"{model.name}_features")


def features_and_output(model: keras.Model) -> keras.Model:
    """One pass for both: the features (the last layer's input) and the model's own output."""
    return keras.Model(model.inputs, [feature_model(model).outputs[0], model.outputs[0]], name=f"{model.name}_and_features")


@dataclass
class Reference:
    """Class means (k, d) and a shared precision (d, d) of the fit images' features; the sorted distances of the
    comparison images."""

    means: np.ndarray
    precision: np.ndarray
    compare: np.ndarray
    source: str = ""
    _twins: dict = field(default_factory=dict, repr=False)

    @property
    def cutoff(self) -> float:
        """Distances above this are flagged: the (1 - FLAG_SHARE) quantile of the comparison images' distances."""
        return float(np.quantile(self.compare, 1 - FLAG_SHARE, method="higher"))

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row to the nearest class mean."""
        diff = np.asarray(features, np.float64)[:, None, :] - self.means[None]  # (n, k, d)
        squared = ((diff @ self.precision) * diff).sum(axis=-1)
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0))

    @property
    def expected_share(self) -> float:
        """The share of images like the comparison images (exchangeable with them) that the cutoff flags."""
        n = len(self.compare)
        return float((self.compare >= self.cutoff).sum()) / (n + 1)

    def share_as_far(self, distances: np.ndarray) -> np.ndarray:
        """For each distance, the share of comparison images at least as far (an empirical p-value, never 0)."""
        n = len(self.compare)
        return (n - np.searchsorted(self.compare, distances, side="left") + 1) / (n + 1)

    def measure(self, model: keras.Model, batch: np.ndarray) -> np.ndarray:
        """Distances of a prepared batch (B, S, S, C) in `model`'s features."""
        return self.measure_and_score(model, batch)[0]

    def measure_and_score(self, model: keras.Model, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances and the model's output from one pass (a two-output twin of the model, built once per model)."""
        key = id(model)
        if key not in self._twins:
            self._twins = {key: features_and_output(model)}
        features, outputs = self._twins[key].predict_on_batch(batch)
        return self.distances(np.asarray(features, np.float64)), np.asarray(outputs, np.float64)

    def unusual(self, distances: np.ndarray) -> np.ndarray:
        return np.asarray(distances) > self.cutoff


def caution(reference: Reference, distance: float) -> str:
    """The words for one image: empty when it is as close to the training images as most validation images."""
    if distance <= reference.cutoff:
        return ""
    share = float(reference.share_as_far(np.array([distance]))[0])
    return (f"Unusual for this model: in what the model sees, further from the images it learned from than {1 - share:.0%} of "
            f"{reference.source}. Its probabilities may not hold for an image like this.")


def fit(features: np.ndarray, labels: np.ndarray, compare: np.ndarray, source: str) -> Reference:
    """A reference from fit features with their classes and the comparison images' features."""
    from sklearn.covariance import LedoitWolf

    features, labels = np.asarray(features, np.float64), np.asarray(labels)
    classes = [c for c in np.unique(labels) if (labels == c).sum() >= 2]
    if not classes or len(compare) < 2:
        raise MedImageError("Too few images to measure what is usual for this model (at least 2 of a class to fit, 2 to compare).")
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    keep = np.isin(labels, classes)
    centred = features[keep] - means[np.searchsorted(classes, labels[keep])]
    precision = LedoitWolf(assume_centered=True).fit(centred).get_precision()
    reference = Reference(means, precision, np.zeros(1), source)
    reference.compare = np.sort(reference.distances(compare))
    return reference


def measured_run(run: Path) -> Path:
    """The run folder whose model the check reads: the run, or a K-fold ensemble's first fold (each fold model has its
    own features, and one of them answers whether an image is like the images the ensemble learned from)."""
    from core.evaluate import model_runs

    return model_runs(run)[0]


def path(run: Path) -> Path:
    return measured_run(run) / FILE


def load(run: Path) -> Reference | None:
    """The run's stored reference, or None when it has not been measured (or was measured for an older model)."""
    file = path(run)
    if not file.exists():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            if float(data["model_mtime"]) != _model_mtime(run):
                return None  # the run trained on after it was measured
            source = str(data["source"]) + ("" if measured_run(run) == Path(run) else " (of fold 1, whose features the check reads)")
            return Reference(data["means"], data["precision"].astype(np.float64), data["compare"], source)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # damaged or from another version: measured again on request
        return None


def save(run: Path, reference: Reference) -> None:
    """Atomically; the precision in float32, half the file (6.5 MB for a 1280-feature backbone)."""
    buffer = io.BytesIO()
    np.savez(buffer, means=reference.means, precision=reference.precision.astype(np.float32), compare=reference.compare,
             source=np.array(reference.source), model_mtime=np.array(_model_mtime(run)))
    write_bytes(path(run), buffer.getvalue())


def model_file(run: Path) -> Path | None:
    """The model file the check's reference describes (its mtime is stored with it)."""
    from core.runs import model_file as run_model_file

    return run_model_file(measured_run(run))


def _model_mtime(run: Path) -> float:
    model = model_file(run)
    return model.stat().st_mtime if model is not None else 0.0


def _tables(run: Path, config: dict, classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(fit images with labels, or None for a site's images; comparison images; words for the comparison images)."""
    if config.get("adapted_from"):
        from core.adapt import site_images

        site = site_images(config.get("adapted_on", ""))  # content-hash order: alternate rows are a fixed half each
        site = site.head(FIT_IMAGES + COMPARE_IMAGES)
        return site.iloc[::2].assign(label=None), site.iloc[1::2].assign(label=classes[0]), "held-out images of the site it was adapted to"
    from core.dataset_store import open_source

    table = run_rows(Path(run), config, open_source(config["data"]).table)
    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    if train.empty:
        raise MedImageError(f"{Path(run).name} has no training images left to measure what is usual for it.")
    train = train.sample(min(FIT_IMAGES, len(train)), random_state=0)
    if len(val) < 2:  # no validation split: a fifth of the sample compares, the rest fits
        cut = max(2, len(train) // 5)
        return train.iloc[cut:], train.iloc[:cut], "held-out images of its training split"
    return train, val.sample(min(COMPARE_IMAGES, len(val)), random_state=0), "its own validation images"


def measure_run(run: Path, progress: Progress | None = None) -> Reference:
    """Measure and store the run's reference (reads up to FIT_IMAGES + COMPARE_IMAGES images once)."""
    from core.evaluate import load_run_models
    from core.pipeline import PipelineConfig, make_dataset

    run = measured_run(run)  # a K-fold ensemble: its first fold
    config, classes = read_json(run / "config.json"), read_status(run).get("classes")
    if not classes:
        raise MedImageError(f"{run.name} has not started training, so there is no model to measure images with.")
    models = load_run_models(run)
    fit_table, compare_table, source = _tables(run, config, classes)
    pipeline = PipelineConfig(**{**config.get("pipeline", {}), "cache": False})
    total, done = len(fit_table) + len(compare_table), 0
    twin = features_and_output(models[0])

    def embed(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        nonlocal done
        out, outputs = [], []
        for images, _ in make_dataset(table.assign(label=table["label"].fillna(classes[0])), classes, pipeline):
            features, scores = twin.predict_on_batch(images)
            out.append(np.asarray(features, np.float64))
            outputs.append(np.asarray(scores, np.float64))
            done += len(images)
            if progress:
                progress(f"Reading what is usual for {run.name}: {done}/{total} images", done / total)
        return np.concatenate(out), np.concatenate(outputs)

    fit_features, fit_outputs = embed(fit_table)
    labels = fit_table["label"].to_numpy(object)
    if fit_table["label"].isna().all():  # a site's images: the classes the adapted model gives them
        labels = np.array(_predicted(fit_outputs, classes, read_status(run), config), object)
    reference = fit(fit_features, labels, embed(compare_table)[0], source)
    save(run, reference)
    return reference


def measure_if_possible(run: Path, progress: Progress | None = None) -> str:
    """What a finished job and an adaptation call: measure the run's reference, or say in one line why it cannot be
    (a model without a final Dense layer, too few images); the run stands either way."""
    try:
        measure_run(run, progress)
    except MedImageError as exc:
        return f"No check of unusual images for this run: {exc}"
    return ""


def _predicted(outputs: np.ndarray, classes: list[str], status: dict, config: dict) -> list[str]:
    head = config.get("model", {}).get("head", "binary")
    if head == "binary":
        return [classes[int(s >= float(status.get("threshold", 0.5)))] for s in outputs[:, 0]]
    if head == "multiclass":
        return [classes[i] for i in outputs.argmax(axis=1)]
    return [classes[i] for i in np.clip(np.round(outputs[:, 0]), 0, len(classes) - 1).astype(int)]


SITE_ALPHA = 0.01  # a set is called different from the comparison images when chance gives its count less often
SITE_UNDECIDED = 0.10  # below this (and not below SITE_ALPHA) chance is a poor but possible explanation: too few to tell


def site_p_value(reference: Reference, unusual: np.ndarray) -> float:
    """How often a set of this size, drawn like the comparison images, has at least this many unusual images (one-sided).

    Exact under exchangeability: ranked together, the set's images above the cutoff are those drawn before the r-th
    comparison image, a negative hypergeometric count. A binomial test at the expected share ignores that the cutoff
    comes from a sample: with the 44 validation images of a small set it called 15% of same-source sets of 300 shifted.
    """
    from scipy.stats import nhypergeom

    n, flagged = len(unusual), int(np.asarray(unusual, bool).sum())
    if n == 0 or flagged == 0:
        return 1.0
    beyond = int((reference.compare >= reference.cutoff).sum())  # comparison images at or beyond the cutoff
    return float(nhypergeom(len(reference.compare) + n, n, beyond).sf(flagged - 1))


def site_shifted(reference: Reference, unusual: np.ndarray) -> bool:
    """Whether more of a set's images are unusual than chance gives if they were like the comparison images (at 1%)."""
    return site_p_value(reference, unusual) < SITE_ALPHA


def site_summary(reference: Reference, unusual: np.ndarray) -> str:
    """One sentence on a set of images (whether each is unusual): the share flagged, against the share a set like the
    comparison images would give. A count that chance gives rarely (under 10%) but not rarely enough to call is said to
    be undecided, not usual: with few images a real difference and chance look alike."""
    n, flagged = len(unusual), int(np.asarray(unusual, bool).sum())
    p_value = site_p_value(reference, unusual)
    if p_value < SITE_ALPHA:
        verdict = ("more than chance gives: these images differ from what the model learned from, so check its accuracy "
                   "on labelled images of them, or adapt it")
    elif p_value < SITE_UNDECIDED:
        verdict = (f"more than that, but too few to tell from chance: a set like those images has this many or more "
                   f"{p_value:.1%} of the time, and the check calls a set different only below {SITE_ALPHA:.0%}. Check "
                   f"more images of the site, and measure the model on labelled images of it")
    else:
        verdict = ("no more than chance gives. That rules out gross differences only (another exposure, another body "
                   "part, not an X-ray): a model can still lose accuracy at a site whose images it finds usual, so "
                   "measure it on labelled images of the site")
    return (f"{flagged} of {n} images ({flagged / max(n, 1):.0%}) are unusual for this model; about "
            f"{reference.expected_share:.0%} would be for images like {reference.source}: {verdict}.")


def check_folder(run: Path, folder: str | Path, progress: Progress | None = None) -> dict:
    """A new site's images (any layout; labels are not read) checked against the run: how many are unusual, whether
    that is more than chance, and which. Measures the run's reference first when it has none."""
    from core.adapt import _batches, site_images
    from core.predict import from_run

    run = Path(run)
    reference = load(run) or measure_run(run, progress)
    predictor = from_run(run)  # its first model is the one the reference describes (a K-fold ensemble's first fold)
    table = site_images(folder)
    distances = []
    for images, _ in _batches(run, table, predictor.classes):  # adaptation's batches of a site's images, labels unread
        distances.append(reference.measure(predictor.model, images))
        if progress:
            progress(f"Checking the site's images: {sum(map(len, distances))}/{len(table)}", sum(map(len, distances)) / len(table))
    distance = np.concatenate(distances)
    unusual = reference.unusual(distance)
    return {"run": run.name, "images": int(len(table)), "unusual": int(unusual.sum()), "share": round(float(unusual.mean()), 4),
            "expected_share": round(reference.expected_share, 4), "p_value": round(site_p_value(reference, unusual), 6),
            "shifted": bool(site_shifted(reference, unusual)),
            "summary": site_summary(reference, unusual), "compared_with": reference.source,
            "unusual_files": [str(p) for p in table["path"][unusual]]}
