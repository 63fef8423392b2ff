"""Grad-CAM / Grad-CAM++ on hand-built models, Predictors from runs and uploaded files, safe loading."""

from __future__ import annotations

import io
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from core.dataset import DEMO, open_dataset
from core.errors import MedImageError
from core.evaluate import predict_table
from core.gradcam import GradCam, GradCamPlusPlus, overlay, spatial_layers
from core.models import ModelConfig
from core.pipeline import PipelineConfig
from core.predict import from_model, from_run, load_model_file, predict_files
from core.runs import create_run
from core.train import TrainConfig, run_job


def _blob_model() -> keras.Model:
    """logit = mean of a 1x1 conv of the image: evidence for class 1 is wherever the image is bright."""
    inputs = keras.Input((32, 32, 1))
    feat = keras.layers.Conv2D(1, 1, name="feat", kernel_initializer="ones", bias_initializer="zeros")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(feat)
    out = keras.layers.Dense(1, activation="sigmoid", name="prediction", kernel_initializer="ones",
                             bias_initializer=keras.initializers.Constant(-5.0))(pooled)
    return keras.Model(inputs, out)


def _blob_image() -> np.ndarray:
    image = np.zeros((1, 32, 32, 1), np.float32)
    image[0, 4:10, 20:28] = 255.0
    return image


@pytest.mark.parametrize("method", [GradCam, GradCamPlusPlus])
def test_cam_peaks_on_the_evidence_and_respects_the_class(method) -> None:
    model = _blob_model()
    explainer = method(model)
    assert explainer.layer == "feat" and spatial_layers(model) == ["feat"]
    result = explainer.explain(_blob_image(), class_index=1)
    assert np.allclose(result.probabilities, model.predict_on_batch(_blob_image()), atol=1e-6)
    heat = result.heatmaps[0]
    assert heat.shape == (32, 32) and heat.max() == pytest.approx(1.0)
    assert heat[4:10, 20:28].mean() > 0.9 and heat[20:, :10].max() < 0.05
    against = explainer.explain(_blob_image(), class_index=0)  # the blob is evidence against class 0
    assert against.heatmaps.max() == 0.0


def test_cam_of_a_cropping_model_lands_on_the_uncropped_image() -> None:
    """A model that cuts 4 px off each side: the map covers the centre at its place in the whole image, the borders
    get no heat. Stretched over the whole image instead, the blob's heat would shift by up to 3 px and spill onto
    the borders."""
    inputs = keras.Input((32, 32, 1))
    cropped = keras.layers.Cropping2D(4, name="crop")(inputs)
    feat = keras.layers.Conv2D(1, 1, name="feat", kernel_initializer="ones", bias_initializer="zeros")(cropped)
    out = keras.layers.Dense(1, activation="sigmoid", name="prediction", kernel_initializer="ones",
                             bias_initializer=keras.initializers.Constant(-5.0))(keras.layers.GlobalAveragePooling2D()(feat))
    model = keras.Model(inputs, out)
    explainer = GradCam(model)
    assert explainer.layer == "feat" and spatial_layers(model) == ["feat"]
    image = np.zeros((1, 32, 32, 1), np.float32)
    image[0, 4:10, 20:28] = 255.0  # touching the top crop line
    heat = explainer.explain(image, class_index=1).heatmaps[0]
    assert heat.shape == (32, 32) and heat[4:10, 20:28].min() > 0.9
    assert heat[:4].max() == 0 and heat[-4:].max() == 0 and heat[:, :4].max() == 0 and heat[:, -4:].max() == 0
    assert heat[14:, :].max() < 0.05 and heat[:, :16].max() < 0.05


def test_cam_rejects_models_without_spatial_layers_and_bad_layer_names() -> None:
    inputs = keras.Input((8, 8, 1))
    mlp = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="no layer with a spatial output"):
        GradCam(mlp)
    with pytest.raises(ValueError, match="choose one of"):
        GradCam(_blob_model(), layer="nope")


def test_overlay_matches_the_image_size() -> None:
    image = np.zeros((50, 70), np.uint8)
    out = overlay(image[..., None], np.eye(8), alpha=0.5, colormap="turbo")
    assert out.shape == (50, 70, 3) and out.dtype == np.uint8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = TrainConfig(data="demo", epochs=1, tensorboard=False, model=ModelConfig(image_size=32), pipeline=PipelineConfig(image_size=32))
    folder = create_run(config.to_dict(), tmp_path_factory.mktemp("runs"))
    assert run_job(folder, verbose=0) == "completed"
    return folder


@pytest.mark.slow
def test_predict_page_path_agrees_with_evaluate_path(run: Path) -> None:
    predictor = from_run(run)
    assert predictor.classes == ["NORMAL", "PNEUMONIA"] and predictor.image_size == 32 and predictor.channels == 1
    test = open_dataset(DEMO).table.query("split == 'test'").head(12)
    table = predict_table(run, test, "agree")
    rows = predict_files(predictor, [(p, p) for p in test["path"]], batch_size=5)
    assert np.allclose(rows["PNEUMONIA"].to_numpy(), table["p_PNEUMONIA"].to_numpy(), atol=1e-5)
    assert (rows["label"].to_numpy() == table["predicted"].to_numpy()).all()
    explanation = GradCam(predictor.model).explain(np.stack([predictor.prepare(np.zeros((40, 40, 1), np.uint8))]))
    assert explanation.heatmaps.shape == (1, 32, 32)


@pytest.mark.slow
def test_predict_files_reads_dicom_and_reports_bad_files(run: Path) -> None:
    predictor = from_run(run)
    png = io.BytesIO()
    Image.fromarray(np.full((20, 30), 90, np.uint8)).save(png, format="PNG")
    sources = [("ct.dcm", get_testdata_file("CT_small.dcm")), ("notes.png", b"not an image"), ("x.png", png.getvalue()),
               ("cr.dcm", get_testdata_file("6154"))]
    rows = predict_files(predictor, sources)
    assert rows["file"].tolist() == ["ct.dcm", "notes.png", "x.png", "cr.dcm"]
    assert rows.loc[0, "error"] == "" and rows.loc[2, "error"] == "" and rows.loc[1, "error"]
    assert rows.loc[0, "label"] in predictor.classes
    # a CT slice still gets an answer, with the caution that says what it is; an X-ray (CR) and a PNG get none
    assert "computed tomography (CT), not a projection X-ray" in rows.loc[0, "caution"]
    assert rows.loc[2, "caution"] == "" and rows.loc[3, "caution"] == "" and rows.loc[3, "error"] == ""


def test_modality_caution_names_what_is_not_an_x_ray() -> None:
    """Every image DICOM that pydicom ships: a caution exactly for the modalities that are not a projection X-ray;
    none for CR, for OT (a screenshot of an X-ray often is) or where the file states no modality."""
    import pydicom
    from pydicom.data import get_testdata_files

    from core.dicom import modality_caution

    said: dict[str, bool] = {}
    for path in get_testdata_files():
        try:
            modality = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality", ""))
        except Exception:  # noqa: BLE001 - the corpus holds deliberately broken files
            continue
        said[modality] = bool(modality_caution({"modality": modality}))
    assert {m for m, warned in said.items() if warned} >= {"CT", "MR", "US", "NM"}
    assert not said["CR"] and not said["OT"] and not said[""]


def test_uploaded_models_load_only_in_safe_mode(tmp_path: Path) -> None:
    good = tmp_path / "good.keras"
    _blob_model().save(good)
    predictor = from_model(load_model_file(good.read_bytes(), "good.keras"))
    assert predictor.head == "binary" and predictor.image_size == 32 and predictor.channels == 1
    inputs = keras.Input((8, 8, 1))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    lam.save(tmp_path / "lambda.keras")
    with pytest.raises(MedImageError, match="Lambda"):
        load_model_file((tmp_path / "lambda.keras").read_bytes(), "lambda.keras")
    with pytest.raises(MedImageError, match="not a Keras 3"):
        load_model_file(b"\x80\x04pickle", "model.pkl")
    corrupt = bytearray(good.read_bytes())
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 200] = b"\0" * 200
    with pytest.raises(MedImageError):
        load_model_file(bytes(corrupt), "corrupt.keras")
    free = keras.Input((None, None, 3))
    with pytest.raises(MedImageError, match="fixed"):
        from_model(keras.Model(free, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(free))))


def test_cam_on_a_transfer_model_uses_the_backbone_output() -> None:
    from core.models import build_model

    model = build_model(ModelConfig(name="mobilenetv2", image_size=64, channels=1, weights="none"))
    explainer = GradCam(model)
    assert explainer.layer.startswith("mobilenetv2")  # the nested backbone, called in the outer graph
    result = explainer.explain(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 1)))
    assert result.heatmaps.shape == (2, 64, 64) and np.allclose(result.probabilities, model.predict_on_batch(
        np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 1))), atol=1e-5)


@pytest.mark.slow
def test_predict_cli_json_with_cam(run: Path, tmp_path: Path) -> None:
    import json
    import os
    import shutil
    import subprocess
    import sys

    from core.evaluate import predict_table, split_rows

    png = tmp_path / "x.png"
    Image.fromarray(np.full((40, 40), 100, np.uint8)).save(png)
    (tmp_path / "bad.png").write_text("text")
    root = Path(__file__).resolve().parents[1]
    run = Path(shutil.copytree(run, tmp_path / run.name))
    predict_table(run, split_rows(run, "val"), "val")  # what each call is set beside (core.similar_scores)
    command = [sys.executable, "-m", "core", "predict", str(run), str(png), str(tmp_path / "bad.png"), get_testdata_file("CT_small.dcm"),
               "--cam", str(tmp_path / "cams"), "--json"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["classes"] == ["NORMAL", "PNEUMONIA"] and out["threshold"] == 0.5
    good, bad, ct = out["results"]
    assert good["label"] in out["classes"] and abs(sum(good["probabilities"].values()) - 1) < 1e-6
    assert "error" in bad and ct["label"] in out["classes"]
    alike = good["validation_alike"]
    assert alike["of"] == 10 and 0 <= alike["agree"] <= 10 and alike["says"].startswith("Of the 10 validation images scored nearest")
    assert Path(good["cam"]).exists() and Image.open(good["cam"]).size == (40, 40)


def _corner_data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise images; the positives carry a bright 8x8 square in the top-left corner."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 90, (n, 32, 32, 1)).astype("float32")
    y = np.arange(n) % 2
    x[y == 1, 2:10, 2:10] = 255.0
    return x, y


@pytest.mark.parametrize("method", [GradCam, GradCamPlusPlus])
def test_cam_of_a_trained_model_finds_the_corner_square(method) -> None:
    keras.utils.set_random_seed(0)
    x, y = _corner_data()
    inputs = keras.Input((32, 32, 1))
    h = keras.layers.Rescaling(1 / 255.0)(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(h)
    out = keras.layers.Dense(1, activation="sigmoid", name="prediction")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, out)
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    test_x, test_y = _corner_data(8, seed=1)
    assert model.evaluate(test_x, test_y, verbose=0)[1] == 1.0  # it learned the square
    explainer = method(model)
    assert explainer.layer == "last_conv"
    positive = test_x[test_y == 1][:1]
    heat = explainer.explain(positive, class_index=1).heatmaps[0]
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    assert row < 14 and col < 14, (row, col)  # the peak sits on the square, top-left
    assert heat[:16, :16].mean() > 2 * heat[16:, 16:].mean()
    other = explainer.explain(positive, class_index=0).heatmaps[0]
    assert not np.allclose(other, heat)  # the class asked about changes the map
