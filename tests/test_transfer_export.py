"""Issue 14: MobileNets with genuine ImageNet weights (offline), ImageNet top-k and Grad-CAM on a real network,
two-phase transfer learning, and export (Keras, SavedModel, TFLite) checked against the run, with a model card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from core import weights as weight_files
from core.models import ModelConfig, backbone_of, build_model

ROOT = Path(__file__).resolve().parents[1]
SHARED_WEIGHTS = ROOT.parent / "shared" / "data" / "imagenet-weights"
CHEST_XRAY = ROOT.parent / "shared" / "data" / "chest_xray" / "train"
needs_weights = pytest.mark.skipif(not SHARED_WEIGHTS.is_dir(), reason="../shared/data/imagenet-weights is not present")


def test_official_names_and_hash_verification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert weight_files.mobilenet_file(0.25, 224, top=True) == "mobilenet_2_5_224_tf.h5"
    assert weight_files.mobilenet_file(0.5, 96, top=False) == "mobilenet_5_0_224_tf_no_top.h5"  # other sizes load the 224 file
    assert weight_files.mobilenet_v2_file(0.35, 224, top=False) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    fake = tmp_path / "mobilenet_2_5_224_tf.h5"
    fake.write_bytes(b"not the real file")
    monkeypatch.setenv("MEDIMAGE_WEIGHTS_DIR", str(tmp_path))
    assert weight_files.weights_dirs()[0] == tmp_path and weight_files.find_weights(fake.name) == fake
    info = weight_files.describe(fake)
    assert info.published and not info.verified and "MISMATCH" in info.label  # a wrong file under the official name is flagged
    assert "MEDIMAGE_WEIGHTS_DIR" in weight_files.where_to_put("x.h5") and str(tmp_path) in weight_files.where_to_put("x.h5")


def test_the_shared_weights_folder_is_searched_without_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m core train --recipe xray` on a team machine finds ../shared/data/imagenet-weights with no env var."""
    shared = tmp_path / "shared-weights"
    shared.mkdir()
    (shared / "mobilenet_2_5_224_tf.h5").write_bytes(b"x")
    monkeypatch.delenv("MEDIMAGE_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(weight_files, "SHARED_WEIGHTS", shared)
    assert weight_files.weights_dirs() == [shared, weight_files.KERAS_MODELS]
    assert weight_files.find_weights("mobilenet_2_5_224_tf.h5") == shared / "mobilenet_2_5_224_tf.h5"
    monkeypatch.setattr(weight_files, "SHARED_WEIGHTS", tmp_path / "absent")
    assert weight_files.weights_dirs() == [weight_files.KERAS_MODELS]


@needs_weights
def test_shared_weights_verify_and_are_really_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIMAGE_WEIGHTS_DIR", str(SHARED_WEIGHTS))
    labels = {info.name: info for info in weight_files.available()}
    for name in ("mobilenet_2_5_224_tf.h5", "mobilenet_2_5_128_tf.h5", "mobilenet_2_5_224_tf_no_top.h5"):
        assert labels[name].verified, labels[name].label
    reference = keras.applications.MobileNetV2(alpha=0.35, include_top=False, input_shape=(224, 224, 3),
                                               weights=str(SHARED_WEIGHTS / weight_files.mobilenet_v2_file(0.35, 224, top=False)))
    model = build_model(ModelConfig(name="mobilenetv2", alpha=0.35, image_size=224, channels=1, weights="imagenet"))
    base = backbone_of(model)
    for ours, theirs in zip(base.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    random = backbone_of(build_model(ModelConfig(name="mobilenetv2", alpha=0.35, image_size=224, channels=1)))
    assert not np.allclose(np.asarray(random.weights[0]), np.asarray(base.weights[0]))
    # feature extraction: only the head trains; fine-tuning: the last N layers too, BatchNorm still frozen
    assert not base.trainable and all(not w.path.startswith(base.name) for w in model.trainable_weights)
    from core.models import set_backbone_trainable

    set_backbone_trainable(model, ModelConfig(name="mobilenetv2", freeze="fine_tune", fine_tune_layers=10))
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert trainable and all(layer in base.layers[-10:] for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    v1 = backbone_of(build_model(ModelConfig(name="mobilenet", alpha=0.25, image_size=224, channels=3, weights="imagenet")))
    v1_ref = keras.applications.MobileNet(alpha=0.25, include_top=False, input_shape=(224, 224, 3),
                                          weights=str(SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5"))
    np.testing.assert_array_equal(np.asarray(v1.weights[0]), np.asarray(v1_ref.weights[0]))


def test_offline_imagenet_names_the_file_and_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.models import WeightsUnavailable

    monkeypatch.setenv("MEDIMAGE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(weight_files, "KERAS_MODELS", tmp_path / "keras-cache")

    def offline(*args, **kwargs):
        if kwargs.get("weights") == "imagenet":
            raise Exception("URL fetch failure")
        return real(*args, **kwargs)

    real = keras.applications.MobileNet
    monkeypatch.setattr(keras.applications, "MobileNet", offline)
    with pytest.raises(WeightsUnavailable, match=r"mobilenet_5_0_224_tf_no_top\.h5.*MEDIMAGE_WEIGHTS_DIR"):
        build_model(ModelConfig(name="mobilenet", alpha=0.5, image_size=96, channels=3, weights="imagenet"))
    with pytest.raises(WeightsUnavailable, match="alpha"):
        build_model(ModelConfig(name="mobilenet", alpha=0.3, image_size=96, channels=3, weights="imagenet"))


@needs_weights
def test_imagenet_cli_finds_the_cat_and_the_espresso_and_gradcam_sits_on_the_cat(tmp_path: Path) -> None:
    import skimage.data
    from PIL import Image

    from core import imagenet

    cat, coffee = tmp_path / "chelsea.png", tmp_path / "coffee.png"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    Image.fromarray(skimage.data.coffee()).save(coffee)
    weights = SHARED_WEIGHTS / "mobilenet_2_5_224_tf.h5"
    out = subprocess.run([sys.executable, "-m", "core", "imagenet", str(cat), str(coffee), "--model", "mobilenet-0.25",
                          "--weights", str(weights), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert "verified" in result["weights"]
    cat_top, coffee_top = ({row["index"] for row in r["top"]} for r in result["results"])
    assert cat_top & {281, 282, 283, 284, 285}, cat_top
    assert coffee_top & {967, 968}, coffee_top

    model = imagenet.load_classifier("mobilenet-0.25", weights)
    pixels = skimage.data.chelsea()  # 451 x 300; the cat's head fills x < 380, background (a room) to its right
    top = imagenet.top_k(model, "mobilenet-0.25", pixels, 1).iloc[0]
    import cv2

    heat = cv2.resize(imagenet.explain(model, "mobilenet-0.25", pixels, int(top["index"])), (pixels.shape[1], pixels.shape[0]))
    box = np.zeros(heat.shape, bool)
    box[:, :390] = True  # the cat, drawn by hand on the photo: its head and chest fill x < 390; a room to the right
    assert heat[box].sum() / heat.sum() > 0.8  # the map's mass is mostly on the cat
    hottest = heat >= np.quantile(heat, 0.9)  # and its hot spots are (eyes, forehead, chin), not the room
    assert box[hottest].mean() > 0.9, box[hottest].mean()
    assert box[np.unravel_index(np.argmax(heat), heat.shape)]


@pytest.mark.slow
@pytest.mark.parametrize("layers", [12, 0])
def test_two_phase_transfer_job_unfreezes_after_feature_extraction(tmp_path: Path, layers: int) -> None:
    """The last 12 layers (BatchNorm frozen), or with 0 every layer, BatchNorm included (LP-FT)."""
    from dataclasses import replace

    from core.model_card import training_procedure
    from core.runs import create_run, read_json, read_metrics, read_status
    from core.train import make_config, run_job

    config = make_config("demo", "mobilenet", image_size=32, epochs=1, batch_size=32, weights="none", alpha=0.25,
                         fine_tune_layers=layers, tensorboard=False)
    config = replace(config, fine_tune_epochs=1, fine_tune_lr=1e-4, early_stopping_patience=0, reduce_lr_patience=0)
    run = create_run(config.to_dict(), tmp_path)
    assert run_job(run, verbose=0) == "completed"
    status = read_status(run)
    assert status["fine_tuning"] and status["fine_tune_from_epoch"] == 1 and status["epochs"] == 2
    assert len(read_metrics(run)) == 2
    assert "random initialisation" in status["weights"]
    base = backbone_of(keras.saving.load_model(run / "final.keras", safe_mode=True))  # (best.keras may be epoch 1's)
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    if layers:
        assert trainable and all(layer in base.layers[-12:] for layer in trainable)
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    else:
        assert trainable == [layer for layer in base.layers if layer.weights]
    described = " ".join(training_procedure(read_json(run / "config.json")))
    assert ("then every layer, BatchNorm included" in described) == (layers == 0), described
    lrs = read_metrics(run)["lr"].tolist()
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(1e-4)
    if layers:
        return
    # extended (as after a stop or a crash, from last.keras): the second phase goes on, every layer training and
    # BatchNorm still learning, at the fine-tuning LR
    from core.runs import request

    def statistics(model_file: str) -> np.ndarray:
        model = keras.saving.load_model(run / model_file, safe_mode=True)
        return np.concatenate([np.asarray(layer.moving_mean) for layer in backbone_of(model).layers
                               if isinstance(layer, keras.layers.BatchNormalization)])

    before = statistics("last.keras")
    request(run, extend=1)
    assert run_job(run, verbose=0) == "completed"
    assert read_metrics(run)["epoch"].tolist() == [1, 2, 3] and read_metrics(run)["lr"].iloc[-1] == pytest.approx(1e-4)
    assert np.abs(statistics("last.keras") - before).max() > 0
    base = backbone_of(keras.saving.load_model(run / "last.keras", safe_mode=True))
    assert all(layer.trainable for layer in base.layers if layer.weights)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.evaluate import predict_table
    from core.runs import create_run
    from core.train import make_config, run_job

    # with a border crop and in-model equalisation: every export format must carry both layers and take the whole image
    # (equalisation ranked pixels with tf.searchsorted, which TFLite lacks: the xray-scratch recipe could not be exported)
    config = make_config("demo", "smallnet", image_size=48, epochs=2, batch_size=32, tensorboard=False, tune_threshold=True, crop=0.1,
                         intensity="equalize")
    run = create_run(config.to_dict(), tmp_path_factory.mktemp("export-runs"))
    assert run_job(run, verbose=0) == "completed"
    from core.dataset import open_dataset

    table = open_dataset("demo").table
    predict_table(run, table[table["split"] == "test"], "test")
    return run


@pytest.mark.slow
@pytest.mark.parametrize("fmt,quantize", [("keras", None), ("savedmodel", None), ("tflite", None), ("tflite", "float16"), ("tflite", "int8")])
def test_export_matches_the_run_and_writes_a_card(demo_run: Path, tmp_path: Path, fmt: str, quantize: str | None) -> None:
    from core.export import check_images, float32_model, saved_model_predict, tflite_predict

    out = subprocess.run([sys.executable, "-m", "core", "export", str(demo_run), str(tmp_path / "out"), "--format", fmt, "--json"]
                         + (["--quantize", quantize] if quantize else []), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    path = Path(result["path"])
    # the check is redone here, independently: the exported file against the run's own model on its test images
    images = check_images(demo_run)
    assert len(images) == 32
    reference = np.asarray(float32_model(demo_run).predict_on_batch(images), float)
    if fmt == "tflite":
        exported = tflite_predict(path, images)
    elif fmt == "savedmodel":
        exported = saved_model_predict(path, images)
    else:
        exported = keras.saving.load_model(path, safe_mode=True, compile=False).predict_on_batch(images)
    tolerance = 1e-4 if quantize is None else 2e-2
    assert np.max(np.abs(np.asarray(exported, float) - reference)) <= tolerance
    assert result["max_abs_diff"] <= tolerance and result["checked_images"] == 32
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert card["classes"] == ["NORMAL", "PNEUMONIA"] and card["input"]["size"] == [48, 48] and card["input"]["colour"] == "grayscale"
    assert card["input"]["border_crop"] == 0.1 and card["input"]["normalisation"] == "equalize"
    procedure = card["training"]["procedure"]
    assert procedure[0].startswith("Adam, learning rate 0.001 (halved when the validation loss stalled for 2 epochs), batch 32, up to 2")
    assert procedure[1].startswith("Augmentation: ") and "flip horizontal" in procedure[1] and "border crop 0.1 of each side" in procedure[2]
    assert "NOT FOR CLINICAL USE" in card["intended_use"] and card["threshold_source"].endswith("validation split")
    assert "test" in card["evaluations"] and len(card["evaluations"]["test"]["accuracy_ci95"]) == 2
    assert card["training"]["data"]["counts"]["NORMAL"]["train"] > 0 and "tensorflow" in card["software"]
    assert any("No external validation" in item for item in card["limitations"])
    md = (tmp_path / "out" / "model_card.md").read_text()
    assert "Not for clinical use".lower() in md.lower() and "| test | 44 |" in md
    test_row = next(line for line in md.splitlines() if line.startswith("| test | 44 |"))
    assert test_row.count("(") == 5  # accuracy, AUC, sensitivity and specificity with their intervals; unusual's share
    assert test_row.endswith(f" {card['evaluations']['test']['unusual']} ({card['evaluations']['test']['unusual'] / 44:.0%}) |")
    assert card["unusual_images"]["expected_share"] > 0 and "Unusual: further from the training images" in md
    assert any("not part of the exported file" in item for item in card["limitations"])
    assert "## Training procedure" in md and f"- {procedure[0]}" in md
    assert not list((tmp_path / "out").glob(".export-*"))  # no temporary folder left behind


def test_the_card_says_how_a_run_was_trained() -> None:
    """The recipe's procedure in plain lines, and each training option named when it was on (an older run's config,
    without the newer options, reads as off)."""
    from dataclasses import replace

    from core.model_card import training_procedure
    from core.recipes import recipe_config

    recipe = recipe_config("xray", "x")
    lines = training_procedure(recipe.to_dict())
    assert lines[0] == ("Adam, learning rate 0.0001 (halved when the validation loss stalled for 2 epochs), batch 32, up to 10 epochs; "
                        "best checkpoint on val_loss, early stopping after 5 epochs without improvement.")
    assert lines[1] == "Backbone started from imagenet weights, trained whole."
    assert lines[3] == ("Class-weighted loss; label smoothing 0.1; BatchNorm statistics over about the last 1 epoch at most; "
                        "mirror test-time augmentation when the threshold was chosen.")
    equalised = replace(recipe, model=replace(recipe.model, intensity="equalize"), batchnorm_epochs=2.5).to_dict()
    assert training_procedure(equalised)[3].startswith("Each image histogram-equalised inside the model; class-weighted loss")
    assert "BatchNorm statistics over about the last 2.5 epochs at most" in training_procedure(equalised)[3]
    changed = replace(recipe, cosine=True, cutmix=1.0, augment=None, class_weighting=False, label_smoothing=0.0, tta=False).to_dict()
    lines = training_procedure(changed)
    assert "(following half a cosine down over the epochs)" in lines[0]
    assert lines[2:] == ["No augmentation.", "CutMix (factor 1.0); BatchNorm statistics over about the last 1 epoch at most.", "Seed 0."]
    older = {k: v for k, v in changed.items() if k not in ("cosine", "cutmix", "batchnorm_epochs")}
    assert training_procedure(older)[2:] == ["No augmentation.", "Seed 0."]
    assert training_procedure({**older, "seed": 4, "deterministic": True})[-1] == (
        "Seed 4, with TensorFlow's op determinism: retraining with these settings gives the same weights.")
    # an adapted run's config (core.adapt writes its lineage there): the card and the report say what was done after training
    adapted = {**older, "adapted_from": "20261128-025844-mobilenetv2-05c0", "adapted_on": "/data/chest_xray/external-dev"}
    assert training_procedure(adapted)[-1] == ("Then adapted, not trained: run 20261128-025844-mobilenetv2-05c0's model with its "
                                               "BatchNorm statistics re-measured on the unlabeled images of external-dev (no labels read).")


def test_export_refuses_bad_requests(demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.errors import MedImageError
    from core.export import export_run

    with pytest.raises(MedImageError, match="Quantisation is for TFLite"):
        export_run(demo_run, tmp_path, "savedmodel", "int8")
    with pytest.raises(MedImageError, match="Unknown export format"):
        export_run(demo_run, tmp_path, "onnx")
    import tensorflow as tf

    class Unconvertible:  # a model holding an op TFLite lacks: the converter's error, as a message
        def convert(self):
            raise RuntimeError("'tf.SomeOp' op is neither a custom op nor a flex op\nmore detail")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", staticmethod(lambda path: Unconvertible()))
    with pytest.raises(MedImageError, match="could not be converted to TFLite .'tf.SomeOp' op is neither.*SavedModel"):
        export_run(demo_run, tmp_path / "out", "tflite")
    assert not (tmp_path / "out" / "model.tflite").exists() and not list((tmp_path / "out").glob(".export-*"))


@needs_weights
@pytest.mark.slow
def test_transfer_run_from_the_cli_with_shared_weights(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "MEDIMAGE_WEIGHTS_DIR": str(SHARED_WEIGHTS), "MEDIMAGE_MODELS_DIR": str(tmp_path)}
    data = str(CHEST_XRAY) if CHEST_XRAY.is_dir() else "demo"  # the real X-rays when they are here
    out = subprocess.run([sys.executable, "-m", "core", "train", "--data", data, "--model", "mobilenetv2", "--alpha", "0.35",
                          "--weights", "imagenet", "--image-size", "64", "--epochs", "1", "--fine-tune-epochs", "1", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["state"] == "completed"
    from core.runs import read_status

    status = read_status(Path(result["run"]))
    assert status["weights"].startswith("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
    assert status["fine_tuning"] and status["epoch"] == 2



@needs_weights
@pytest.mark.slow
@pytest.mark.skipif(not CHEST_XRAY.is_dir(), reason="../shared/data/chest_xray/train is not present")
def test_transfer_run_on_chest_xray_from_the_train_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Train page: chest_xray as the active dataset, MobileNetV2 0.35 with the shared ImageNet weights, one epoch."""
    import time

    from streamlit.testing.v1 import AppTest

    from core.runs import effective_state, list_runs, read_status

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MEDIMAGE_WEIGHTS_DIR", str(SHARED_WEIGHTS))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["dataset_source"] = str(CHEST_XRAY)
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    expander = "\n".join(m.value for m in at.markdown)
    assert "mobilenet_2_5_224_tf.h5" in expander and "verified against Keras' published hash" in expander
    at.selectbox(key="train_recipe").set_value("Custom: the settings below").run()
    at.selectbox(key="train_model").set_value("mobilenetv2")
    at.selectbox(key="train_weights").set_value("imagenet")
    at.selectbox(key="train_alpha").set_value(0.35)
    at.number_input(key="train_size").set_value(64)
    at.number_input(key="train_epochs").set_value(1)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = Path(list_runs().iloc[0]["path"])
    deadline = time.time() + 600
    while effective_state(read_status(run)) not in ("completed", "failed") and time.time() < deadline:
        time.sleep(1)
    status = read_status(run)
    assert status["state"] == "completed", status
    assert status["weights"].startswith("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
    at.run()
    assert any("Backbone weights: mobilenet_v2" in c.value for c in at.caption)


@pytest.mark.slow
def test_export_from_the_evaluate_page(demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(demo_run.parent))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/evaluate.py").run()
    at.selectbox(key="eval_run").set_value(demo_run.name).run()
    assert not at.exception
    at.selectbox(key="exp_format").set_value("tflite").run()
    at.selectbox(key="exp_quantize").set_value("float16").run()
    at.text_input(key="exp_out").input(str(tmp_path / "page-export")).run()
    at.button(key="exp_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("model-float16.tflite" in s.value and "max difference" in s.value for s in at.success)
    assert (tmp_path / "page-export" / "model-float16.tflite").exists() and (tmp_path / "page-export" / "model_card.md").exists()
