"""Patient-identifying DICOM fields never reach a page, a log, a run folder, a cache or a report (issue 8).

A DICOM dataset with a planted patient name, id, birth date and institution goes through the whole
path: scan, training job, evaluation, report, CLI read and predict, and the Predict page. Every file
written and every output produced is then searched for the planted strings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from streamlit.testing.v1 import AppTest

from core.dataset import class_counts, open_dataset
from core.evaluate import predict_table, summarize
from core.models import ModelConfig
from core.pipeline import PipelineConfig
from core.report import build_report
from core.runs import create_run
from core.train import TrainConfig, run_job

ROOT = Path(__file__).resolve().parents[1]
PLANTED = ("ZQXNAME^ZQXGIVEN", "ZQXNAME", "PHI-98765", "19010203", "ZQX Hospital Of Secrets")
pytestmark = pytest.mark.slow


def _dicom_dataset(root: Path) -> Path:
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    for label, shift in (("NORMAL", 0), ("PNEUMONIA", 400)):
        for i in range(6):
            ds = source.copy()
            ds.PatientName, ds.PatientID, ds.PatientBirthDate = PLANTED[0], PLANTED[2], PLANTED[3]
            ds.InstitutionName, ds.ReferringPhysicianName = PLANTED[4], "ZQXDOCTOR^ANN"
            pixels = ds.pixel_array.astype(np.int32) + shift + rng.integers(0, 50, ds.pixel_array.shape)
            ds.PixelData = pixels.astype(ds.pixel_array.dtype).tobytes()
            (root / label).mkdir(parents=True, exist_ok=True)
            ds.save_as(root / label / f"scan{i}.dcm")
    return root


def _leaks(text: str) -> list[str]:
    return [p for p in (*PLANTED, "ZQXDOCTOR") if p.lower() in text.lower()]


def test_planted_patient_data_goes_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _dicom_dataset(tmp_path / "dicoms")
    written = tmp_path / "out"
    for name in ("MEDIMAGE_DATA_DIR", "MEDIMAGE_CACHE_DIR", "MEDIMAGE_MODELS_DIR"):
        monkeypatch.setenv(name, str(written / name.lower()))
    dataset = open_dataset(str(data))
    assert not _leaks(dataset.table.to_csv())
    config = TrainConfig(data=str(data), epochs=1, model=ModelConfig(image_size=32), pipeline=PipelineConfig(image_size=32, batch_size=4))
    run = create_run(config.to_dict())
    assert run_job(run, verbose=0) == "completed"
    predictions = predict_table(run, dataset.table, "all")
    report = build_report(run, "all", predictions, summarize(run, predictions, n_boot=50), class_counts(dataset.table))
    outputs = [report]
    env = os.environ.copy()
    dicom = str(data / "NORMAL" / "scan0.dcm")
    for command in (["read", dicom, "--json"], ["read", dicom], ["predict", str(run), dicom, "--cam", str(written / "cams"), "--json"]):
        result = subprocess.run([sys.executable, "-m", "core", *command], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs += [result.stdout, result.stderr]
    assert "modality" in json.loads(outputs[1])  # the read output has the technical fields

    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/predict.py").run()
    at.file_uploader(key="pred_files").set_value(("scan.dcm", Path(dicom).read_bytes(), "application/dicom")).run()
    assert not at.exception
    page_text = [str(getattr(e, "value", "")) for kind in ("markdown", "caption", "json", "error", "info", "text") for e in at.get(kind)]
    assert any("NORMAL" in t or "PNEUMONIA" in t for t in page_text)
    outputs += page_text

    leaks = [f"output {i}: {_leaks(text)}" for i, text in enumerate(outputs) if _leaks(text)]
    for path in written.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("latin-1")
            if _leaks(text):
                leaks.append(f"{path.relative_to(written)}: {_leaks(text)}")
    assert not leaks, leaks
