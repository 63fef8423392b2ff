"""`python -m core read|scan|train`: exit codes and JSON output, run as a real subprocess; the many option checks of
`train --create-only` run in this process through the same `main`, which saves a TensorFlow start for each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom.data
import pytest

from tests.conftest import make_class_folders

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=120)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    """`main(args)` in this process, answered like `_run`: argparse's refusals exit 2 with their message on stderr."""
    from core.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["core", *args], code, out, err)


def test_read_dicom_json() -> None:
    result = _run("read", pydicom.data.get_testdata_file("CT_small.dcm"), "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["format"] == "DICOM" and facts["width"] == 128 and facts["modality"] == "CT"
    assert "PatientName" not in result.stdout and "CompressedSamples" not in result.stdout


def test_read_bad_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    result = _run("read", str(bad))
    assert result.returncode == 2 and "not an image" in result.stderr
    result = _run("read", str(bad), "--json")
    assert result.returncode == 2 and "not an image" in json.loads(result.stdout)["error"]


def test_scan_json(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "ds", {"a": 5, "b": 7})
    (tmp_path / "ds" / "a" / "x.txt").write_text("x")
    result = _run("scan", str(tmp_path / "ds"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["classes"] == ["a", "b"] and summary["images"] == 12
    assert summary["counts"]["b"]["total"] == 7 and summary["counts"]["total"]["total"] == 12
    assert summary["sizes"]["width"]["mean"] == 16 and summary["skipped"] == {"not an image type (.txt)": 1}
    human = _run("scan", str(tmp_path / "ds"))
    assert human.returncode == 0 and "classes: ['a', 'b']" in human.stdout
    assert _run("scan", str(tmp_path / "nothing")).returncode == 2


def test_train_options_reach_the_run_config_and_bad_values_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_class_folders(tmp_path / "ds", {"a": 4, "b": 4})
    common = ("train", "--data", str(tmp_path / "ds"), "--runs-dir", str(tmp_path / "runs"), "--create-only", "--json")
    result = _main(capsys, *common, "--ema-epochs", "3", "--mixup", "0.2", "--crop", "0.1", "--intensity", "equalize",
                   "--seed", "7", "--deterministic")
    assert result.returncode == 0, result.stderr
    run = Path(json.loads(result.stdout)["run"])
    config = json.loads((run / "config.json").read_text())
    assert config["ema_epochs"] == 3 and config["mixup"] == 0.2 and config["model"]["crop"] == 0.1
    assert config["seed"] == 7 and config["deterministic"] is True
    assert config["model"]["intensity"] == "equalize"
    result = _main(capsys, *common, "--crop", "0.4")
    assert result.returncode == 2 and "between 0 (off) and 0.3 of each side" in result.stderr
    result = _main(capsys, *common, "--ema-epochs", "-1")
    assert result.returncode == 2 and "positive number of epochs" in result.stderr
    result = _main(capsys, *common, "--mixup", "2")
    assert result.returncode == 2 and "between 0 (off) and 1" in result.stderr
    result = _main(capsys, *common, "--cutmix", "1", "--cosine")
    config = json.loads((Path(json.loads(result.stdout)["run"]) / "config.json").read_text())
    assert config["cutmix"] == 1.0 and config["cosine"] is True and config["mixup"] == 0.0
    runs_before = len(list((tmp_path / "runs").iterdir()))
    result = _main(capsys, *common, "--cutmix", "1", "--mixup", "0.2")
    assert result.returncode != 0 and "Choose mixup or CutMix, not both" in result.stderr + result.stdout
    assert len(list((tmp_path / "runs").iterdir())) == runs_before  # refused before a run folder was made
    result = _main(capsys, *common, "--model", "mobilenetv2", "--freeze", "full", "--fine-tune-epochs", "2")
    assert result.returncode != 0 and "Fine-tuning follows feature extraction" in result.stderr + result.stdout
    assert len(list((tmp_path / "runs").iterdir())) == runs_before
    result = _main(capsys, *common, "--model", "mobilenetv2", "--fine-tune-epochs", "2", "--fine-tune-layers", "0")  # LP-FT
    config = json.loads((Path(json.loads(result.stdout)["run"]) / "config.json").read_text())
    assert config["fine_tune_epochs"] == 2 and config["model"]["fine_tune_layers"] == 0
    runs_before += 1
    make_class_folders(tmp_path / "three", {"a": 4, "b": 4, "c": 4})
    result = _main(capsys, "train", "--data", str(tmp_path / "three"), "--runs-dir", str(tmp_path / "runs"), "--create-only", "--mixup", "0.2")
    assert result.returncode != 0 and "head is 'multiclass' for 3 classes" in result.stderr + result.stdout
    assert len(list((tmp_path / "runs").iterdir())) == runs_before


def test_train_recipe_from_the_cli_trains_in_the_foreground_and_reports_its_threshold(tmp_path: Path) -> None:
    """The acceptance command's path (`train --recipe NAME --data DIR`): the recipe's config and patient-grouped split,
    trained here until it ends, with the validation threshold in its answer."""
    runs = str(tmp_path / "runs")
    created = _run("train", "--recipe", "xray", "--data", "demo", "--runs-dir", runs, "--create-only", "--json", "--deterministic")
    assert created.returncode == 0, created.stderr[-2000:]
    config = json.loads((Path(json.loads(created.stdout)["run"]) / "config.json").read_text())
    assert config["model"]["name"] == "mobilenetv2" and config["model"]["freeze"] == "full" and config["tune_threshold"]
    assert config["deterministic"] is True
    result = subprocess.run([sys.executable, "-m", "core", "train", "--recipe", "xray-scratch", "--data", "demo", "--epochs", "1",
                             "--runs-dir", runs, "--json"], cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["state"] == "completed" and out["epoch"] == 1 and 0 < out["threshold"] < 1
    assert (Path(out["run"]) / "rows.csv").exists()  # its own split, kept with the run


def test_read_and_scan_answer_without_importing_keras(tmp_path: Path) -> None:
    """Keras takes about 4 s to import: a command that only reads images must not pay it."""
    make_class_folders(tmp_path / "ds", {"a": 2, "b": 2})
    probe = ("import sys; from core.cli import main; main(['read', sys.argv[1], '--json']); main(['scan', sys.argv[2], '--json']); "
             "print('keras' in sys.modules or 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe, pydicom.data.get_testdata_file("CT_small.dcm"), str(tmp_path / "ds")], cwd=ROOT,
                            capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"
