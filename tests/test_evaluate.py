"""Predictions table and the evaluate command on a small trained demo model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.dataset import DEMO, open_dataset
from core.errors import MedImageError
from core.evaluate import binary_summary, predict_table
from core.models import ModelConfig
from core.pipeline import PipelineConfig
from core.runs import create_run
from core.train import TrainConfig, run_job

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = TrainConfig(data="demo", epochs=1, model=ModelConfig(image_size=32), pipeline=PipelineConfig(image_size=32))
    run = create_run(config.to_dict(), tmp_path_factory.mktemp("runs"))
    assert run_job(run, verbose=0) == "completed"
    return run


def test_predictions_table_has_one_row_per_image(trained: Path) -> None:
    test = open_dataset(DEMO).table.query("split == 'test'")
    seen = []
    predictions = predict_table(trained, test, "test", progress=lambda d, t: seen.append((d, t)))
    assert len(predictions) == len(test) and predictions["path"].tolist() == test["path"].tolist()
    assert list(predictions.columns) == ["path", "label", "p_PNEUMONIA", "predicted", "distance", "unusual"]  # + the check (core.novelty)
    assert predictions["p_PNEUMONIA"].between(0, 1).all() and seen[-1] == (len(test), len(test))
    assert (trained / "predictions-test.csv").exists()
    summary = binary_summary(predictions, ["NORMAL", "PNEUMONIA"], n_boot=200)
    assert summary["n"] == len(test) and sum(map(sum, summary["confusion_matrix"])) == len(test)
    assert summary["auc_ci95"][0] <= summary["auc"] <= summary["auc_ci95"][1]


def test_unknown_labels_and_missing_model(trained: Path, tmp_path: Path) -> None:
    table = open_dataset(DEMO).table.head(3).assign(label="CAT")
    with pytest.raises(MedImageError, match="not among this model's classes"):
        predict_table(trained, table)
    empty = create_run(TrainConfig().to_dict(), tmp_path)
    with pytest.raises(MedImageError, match="has not started"):
        predict_table(empty, table)


def test_evaluate_cli_json(trained: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "core", "evaluate", str(trained), "--json"], cwd=ROOT,
                            capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["split"] == "test" and out["threshold"] == 0.5 and {"auc", "sensitivity", "specificity", "accuracy_ci95"} <= set(out)
    bad = subprocess.run([sys.executable, "-m", "core", "evaluate", "/nonexistent", "--json"], cwd=ROOT,
                         capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert bad.returncode == 2 and "not a run folder" in json.loads(bad.stdout)["error"]


def _fake_run(root: Path, head: str, classes: list[str], models: dict[str, float], size: int = 16) -> Path:
    """A run folder without training: constant-output models (bias only) saved where a run keeps them."""
    import keras

    from core.runs import write_status

    config = TrainConfig(data="demo", model=ModelConfig(image_size=size, head=head, n_classes=len(classes)),
                         pipeline=PipelineConfig(image_size=size))
    run = create_run(config.to_dict(), root)
    for where, value in models.items():
        inputs = keras.Input((size, size, 1))
        units = len(classes) if head == "multiclass" else 1
        dense = keras.layers.Dense(units, activation={"binary": "sigmoid", "multiclass": "softmax"}.get(head), kernel_initializer="zeros",
                                   bias_initializer=keras.initializers.Constant(value), name="prediction")
        (run / where).parent.mkdir(parents=True, exist_ok=True)
        keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs))).save(run / where)
    write_status(run, classes=classes)
    return run


def test_fold_ensemble_averages_the_fold_models(tmp_path: Path) -> None:
    import numpy as np

    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    run = _fake_run(tmp_path, "binary", ["NORMAL", "PNEUMONIA"], {"fold-1/best.keras": logit(0.2), "fold-2/best.keras": logit(0.6)})
    test = open_dataset(DEMO).table.query("split == 'test'").head(4)
    predictions = predict_table(run, test, "ens")
    assert np.allclose(predictions["p_PNEUMONIA"], 0.4, atol=1e-5)  # the mean of 0.2 and 0.6
    assert (predictions["predicted"] == "NORMAL").all()


def test_summary_intervals_are_those_of_scikit_learns_metrics() -> None:
    """binary_summary resamples with its fast metrics; the intervals are the ones scikit-learn's metrics give on the
    same resamples."""
    from sklearn import metrics as skm

    from core import metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.25, 300), 0, 1).round(2)
    table = pd.DataFrame({"label": np.where(y == 1, "PNEUMONIA", "NORMAL"), "p_PNEUMONIA": p})
    summary = binary_summary(table, ["NORMAL", "PNEUMONIA"], threshold=0.45, n_boot=200)
    for key, reference in (("accuracy", lambda a, b: skm.accuracy_score(a, b >= 0.45)), ("auc", skm.roc_auc_score),
                           ("f1", lambda a, b: skm.f1_score(a, b >= 0.45, zero_division=0)),
                           ("kappa", lambda a, b: skm.cohen_kappa_score(a, b >= 0.45, weights="quadratic")),
                           ("sensitivity", lambda a, b: skm.recall_score(a, b >= 0.45)),
                           ("specificity", lambda a, b: skm.recall_score(a, b >= 0.45, pos_label=0)),
                           ("ppv", lambda a, b: skm.precision_score(a, b >= 0.45)),
                           ("npv", lambda a, b: skm.precision_score(a, b >= 0.45, pos_label=0)),
                           ("balanced_accuracy", lambda a, b: skm.balanced_accuracy_score(a, b >= 0.45))):
        values = [reference(y[drawn], p[drawn]) for counts in metrics.resample_counts(300, n=200, seed=0)
                  for drawn in [np.repeat(np.arange(300), counts)]]
        assert summary[f"{key}_ci95"] == pytest.approx(list(np.percentile(values, [2.5, 97.5]))), key
    healthy = binary_summary(table[table["label"] == "NORMAL"], ["NORMAL", "PNEUMONIA"], threshold=0.45, n_boot=50)
    assert np.isnan(healthy["auc"]) and np.isnan(healthy["auc_ci95"]).all() and healthy["specificity"] > 0  # one class: no AUC
    assert np.isnan(healthy["sensitivity_ci95"]).all() and healthy["specificity_ci95"][0] <= healthy["specificity"]  # no sick


def test_multiclass_summary_intervals_are_those_of_scikit_learns_metrics() -> None:
    from sklearn import metrics as skm

    from core import metrics
    from core.evaluate import multiclass_summary

    rng = np.random.default_rng(1)
    classes = ["a", "b", "c", "d"]
    y = rng.integers(0, 4, 250)
    probabilities = rng.dirichlet(np.ones(4), 250) + 0.6 * np.eye(4)[y] * (rng.random(250) < 0.7)[:, None]
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    table = pd.DataFrame({"label": np.array(classes)[y], **{f"p_{c}": probabilities[:, i] for i, c in enumerate(classes)}})
    summary = multiclass_summary(table, classes, n_boot=150)
    pred = probabilities.argmax(axis=1)
    for key, reference in (("accuracy", skm.accuracy_score), ("f1_macro", lambda a, b: skm.f1_score(a, b, average="macro", zero_division=0)),
                           ("kappa", lambda a, b: skm.cohen_kappa_score(a, b, weights="quadratic"))):
        assert summary[key] == pytest.approx(reference(y, pred)), key
        values = [reference(y[drawn], pred[drawn]) for counts in metrics.resample_counts(250, n=150, seed=0)
                  for drawn in [np.repeat(np.arange(250), counts)]]
        assert summary[f"{key}_ci95"] == pytest.approx(list(np.percentile(values, [2.5, 97.5]))), key


def test_multiclass_and_ordinal_summaries(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from core.evaluate import ordinal_summary, summarize

    classes = ["a", "b", "c"]
    run = _fake_run(tmp_path, "multiclass", classes, {"best.keras": 0.0})
    preds = pd.DataFrame({"path": list("pqrstu"), "label": ["a", "a", "b", "b", "c", "c"],
                          "p_a": [.8, .1, .1, .2, .1, .1], "p_b": [.1, .8, .8, .7, .2, .1], "p_c": [.1, .1, .1, .1, .7, .8]})
    preds["predicted"] = [classes[i] for i in preds[["p_a", "p_b", "p_c"]].to_numpy().argmax(axis=1)]
    summary = summarize(run, preds, n_boot=200)
    assert summary["head"] == "multiclass" and summary["accuracy"] == pytest.approx(5 / 6)
    assert summary["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    assert np.array(summary["weights"]).tolist() == [[0, .25, 1], [.25, 0, .25], [1, .25, 0]]
    assert summary["accuracy_ci95"][0] <= summary["accuracy"] <= summary["accuracy_ci95"][1]
    assert summary["report"]["b"]["recall"] == 1.0
    ordinal = pd.DataFrame({"label": ["a", "a", "b", "b", "c", "c"], "score": [0.2, 0.7, 0.8, 1.3, 1.6, 2.2]})
    plain = ordinal_summary(ordinal, classes)
    tuned = ordinal_summary(ordinal, classes, cutpoints=[0.75, 1.45])
    assert tuned["kappa"] == pytest.approx(1.0) and plain["kappa_rounding"] < 1.0 and tuned["kappa_rounding"] == plain["kappa"]


def test_report_states_threshold_limitations_and_metrics(trained: Path) -> None:
    from core.dataset import class_counts
    from core.evaluate import summarize
    from core.report import build_report

    dataset = open_dataset(DEMO)
    test = dataset.table.query("split == 'test'")
    predictions = predict_table(trained, test, "test")
    html = build_report(trained, "test", predictions, summarize(trained, predictions, n_boot=100), class_counts(dataset.table))
    for text in ("Not for clinical use", "External validation: not done", "Decision threshold 0.5", "95% CI", "plotly", trained.name,
                 "<h3>Training procedure</h3><ul><li>Adam, learning rate 0.001"):
        assert text in html, text
    external = build_report(trained, "external-hospital-b", predictions, summarize(trained, predictions, n_boot=100))
    assert "came from a source other than the training set" in external
    assert "Unusual images: " in html and "are unusual for this model; about" in html  # the run's check, as on Evaluate
    assert "Generalisation gap" not in html  # scored on no other set
    assert "<h2>Dataset</h2>" in html and "<h2>Dataset</h2>" not in external  # no counts given: no empty heading
    tuned = build_report(trained, "test", predictions, summarize(trained, predictions, n_boot=10, threshold=0.8581209480762482))
    assert "Decision threshold 0.8581 (set on the Evaluate page for this report, not saved with the run)" in tuned  # 4 digits
    assert "Decision threshold 0.5000 (default 0.5)" in html


def test_report_carries_the_generalisation_gap_of_a_run_scored_elsewhere(trained: Path, tmp_path: Path) -> None:
    """A run scored on another hospital's images: its test-split report no longer says external validation was not done,
    and carries the Evaluate page's gap panel (each set with its intervals, and the sentence)."""
    import shutil

    from core.evaluate import predictions_path, summarize
    from core.report import build_report

    run = tmp_path / trained.name
    shutil.copytree(trained, run)
    test = open_dataset(DEMO).table.query("split == 'test'")
    predictions = predict_table(run, test, "test")
    shutil.copy(predictions_path(run, "test"), predictions_path(run, "external-hospital-b"))  # a site the model does as well on
    html = build_report(run, "test", predictions, summarize(run, predictions, n_boot=100))
    assert "External validation: not done" not in html and "the run was also scored on 1 set(s) from elsewhere" in html
    assert "<h2>Generalisation gap</h2>" in html and "<td>internal test split</td>" in html and "<td>external-hospital-b</td>" in html
    assert "the difference is within the intervals" in html
    assert "<th>specificity (95% CI)</th>" in html and "external-hospital-b: specificity" in html


def test_predictions_of_an_earlier_model_stop_counting_once_the_run_trains_on(trained: Path, tmp_path: Path) -> None:
    """Resuming or extending a run writes a new best checkpoint. The tables its earlier model predicted then describe another
    model: Evaluate predicts again, the gap panel, the report and the model card leave them out, instead of giving the old
    model's metrics as the run's."""
    import shutil

    from core.evaluate import (
        load_predictions,
        load_run_model,
        predictions_path,
        save_threshold,
        stored_predictions,
        threshold_source,
    )
    from core.generalisation import external_sets, gap_table
    from core.model_card import model_card
    from core.predict import from_run
    from core.train import save_model_atomic

    run = tmp_path / trained.name
    shutil.copytree(trained, run)
    test = open_dataset(DEMO).table.query("split == 'test'")
    predict_table(run, test, "test")
    shutil.copy(predictions_path(run, "test"), predictions_path(run, "external-hospital-b"))
    save_threshold(run, 0.42, "Youden's J on the validation split")
    assert stored_predictions(run) == ["external-hospital-b", "test"] and external_sets(run) == ["external-hospital-b"]
    assert set(model_card(run, {})["evaluations"]) == {"external-hospital-b", "test"} and len(gap_table(run, n_boot=50)) == 2
    assert threshold_source(run) == "Youden's J on the validation split" == from_run(run).threshold_source
    save_model_atomic(load_run_model(run), run / "best.keras")  # what the job does at its next best epoch
    assert (run / "best.keras").stat().st_mtime_ns > predictions_path(run, "test").stat().st_mtime_ns
    assert load_predictions(run, "test") is None and load_predictions(run, "external-hospital-b") is None
    assert stored_predictions(run) == [] and external_sets(run) == [] and gap_table(run, n_boot=50).empty
    card = model_card(run, {})
    assert card["evaluations"] == {}
    stale = "Youden's J on the validation split, chosen for an earlier model of this run: it trained on since"
    assert threshold_source(run).startswith(stale) and from_run(run).threshold_source.startswith(stale)
    assert card["threshold_source"].startswith(stale)
    predict_table(run, test, "test")  # predicted again: the present model's
    assert load_predictions(run, "test") is not None and stored_predictions(run) == ["test"]
    save_threshold(run, 0.42, "Youden's J on the validation split")  # chosen again, for this model
    assert threshold_source(run) == "Youden's J on the validation split"


def test_threshold_choice_refuses_without_validation_and_misclassified_follows_the_threshold() -> None:
    import pandas as pd

    from core.evaluate import choose_threshold, misclassified

    classes = ["NORMAL", "PNEUMONIA"]
    with pytest.raises(MedImageError, match="validation split first"):
        choose_threshold(None, classes)
    val = pd.DataFrame({"label": ["NORMAL"] * 3 + ["PNEUMONIA"] * 3, "p_PNEUMONIA": [0.1, 0.3, 0.6, 0.7, 0.8, 0.9]})
    assert choose_threshold(val, classes) == (pytest.approx(0.7), "Youden's J on the validation split")
    value, source = choose_threshold(val, classes, "sensitivity", 1.0)
    assert value == pytest.approx(0.7) and "sensitivity >= 1.00" in source
    assert choose_threshold(val, classes, "sensitivity", 0.6)[0] == pytest.approx(0.8)  # the most specific one that reaches it
    with pytest.raises(MedImageError, match="only one class"):
        choose_threshold(val.assign(label="NORMAL"), classes)
    table = val.assign(path=[f"{i}.png" for i in range(6)], predicted="PNEUMONIA")  # stored at another threshold
    at_half = misclassified(table, classes, "binary", 0.5)
    assert at_half["path"].tolist() == ["2.png"]  # NORMAL at 0.6; nothing else is wrong at 0.5
    at_high = misclassified(table, classes, "binary", 0.85)
    assert at_high["path"].tolist() == ["3.png", "4.png"] and at_high["confidence"].is_monotonic_decreasing
    assert at_high["shown"].tolist() == ["P(PNEUMONIA) 0.70", "P(PNEUMONIA) 0.80"]
    # ranked by how far past the threshold, not by p: at 0.85 a sick image at 0.10 is a surer mistake (0.88 of the way
    # to 0) than a healthy one at 0.95 (0.67 of the way to 1), though max(p, 1 - p) would rank them the other way
    odd = pd.DataFrame({"path": ["healthy.png", "sick.png"], "label": ["NORMAL", "PNEUMONIA"], "p_PNEUMONIA": [0.95, 0.10]})
    ranked = misclassified(odd, classes, "binary", 0.85)
    assert ranked["path"].tolist() == ["sick.png", "healthy.png"]
    assert ranked["confidence"].tolist() == pytest.approx([0.75 / 0.85, 0.10 / 0.15])
