"""Predictions table and the evaluate command on a small trained demo model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert list(predictions.columns) == ["path", "label", "p_PNEUMONIA", "predicted"]
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
