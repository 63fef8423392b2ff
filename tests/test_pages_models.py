"""Evaluate and Predict pages under AppTest, on a small run trained on the demo set."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.models import ModelConfig
from core.pipeline import PipelineConfig
from core.runs import create_run, read_status
from core.train import TrainConfig, run_job

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    config = TrainConfig(data="demo", epochs=2, tensorboard=False, model=ModelConfig(image_size=48), pipeline=PipelineConfig(image_size=48))
    assert run_job(create_run(config.to_dict(), folder), verbose=0) == "completed"
    return folder


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(models_dir))


def _page(path: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page(path).run()
    assert not at.exception
    return at


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _warnings(at: AppTest) -> list[str]:
    """The page's warnings but a borderline call's (core.similar_scores), which a 2-epoch model's scores make now and then
    once its validation split has been predicted."""
    return [w.value for w in at.warning if "a borderline call" not in w.value]


def test_evaluate_without_runs_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(tmp_path))
    at = _page("pages/evaluate.py")
    assert any("No trained model yet" in i.value for i in at.info)


def test_evaluate_predicts_tunes_and_saves_a_threshold(models_dir: Path) -> None:
    run = next(p for p in models_dir.iterdir() if p.is_dir())
    at = _page("pages/evaluate.py")
    assert any("Press Predict" in i.value for i in at.info)
    _button(at, "Predict").click().run()
    assert not at.exception and not at.error
    assert (run / "predictions-test.csv").exists()
    assert {m.label for m in at.metric} >= {"Accuracy", "Sensitivity", "Specificity", "AUC"}
    assert any(c.value.startswith("95% bootstrap intervals: Accuracy ") and "Specificity" in c.value for c in at.caption)
    assert any(b.label == "Predict again" for b in at.button)  # the button says what it does now
    # the misclassified gallery explains an image once one is chosen, not on every first view (the model load and its
    # gradient graph took most of that view's seconds)
    at.slider(key=f"eval_threshold_{run.name}").set_value(0.999).run()  # every PNEUMONIA image is then a mistake
    cams = lambda: [i for i in at.get("image") if "Grad-CAM for the predicted class" in str(i.proto)]  # noqa: E731
    assert at.selectbox(key="eval_cam").value is None and not cams()
    at.selectbox(key="eval_cam").set_value(at.selectbox(key="eval_cam").options[0]).run()
    assert not at.exception and len(cams()) == 1
    _button(at, "Youden (validation)").click().run()  # no validation predictions yet: a message, not a guess
    assert any("validation split first" in w.value for w in at.warning)
    at.radio(key="eval_target").set_value("validation split").run()
    _button(at, "Predict").click().run()
    _button(at, "Youden (validation)").click().run()
    assert not at.exception
    chosen = at.slider(key=f"eval_threshold_{run.name}").value
    _button(at, "Save threshold to run").click().run()
    assert read_status(run)["threshold"] == pytest.approx(chosen) and "Youden" in read_status(run)["threshold_source"]
    at.selectbox(key="eval_run").set_value(run.name).run()
    at.multiselect(key="eval_compare")  # only one run here; the widget exists
    assert not at.exception


def test_evaluate_predicts_again_once_the_run_trained_on(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run resumed or extended after it was evaluated holds a new best model: its stored table is the old model's, so the
    page says so and asks for a new prediction instead of showing the old metrics as the run's."""
    import shutil

    from core.evaluate import is_current, load_run_model
    from core.train import save_model_atomic

    source = next(p for p in models_dir.iterdir() if p.is_dir())
    run = tmp_path / "runs" / source.name
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("predictions-*.csv"))  # as yet unevaluated, whatever ran before
    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(run.parent))
    at = _page("pages/evaluate.py")
    _button(at, "Predict").click().run()
    assert not at.exception and any(m.label == "Accuracy" for m in at.metric)
    save_model_atomic(load_run_model(run), run / "best.keras")  # the job's next best epoch
    at.run()
    assert not at.exception and not at.metric
    assert any("came from an earlier model: the run trained on since" in i.value for i in at.info)
    _button(at, "Predict").click().run()
    assert not at.exception and any(m.label == "Accuracy" for m in at.metric) and is_current(run, "test")


def test_evaluate_external_folder_missing_is_a_message(tmp_path: Path) -> None:
    at = _page("pages/evaluate.py")
    at.radio(key="eval_target").set_value("external folder").run()
    at.text_input(key="eval_external").input(str(tmp_path / "nowhere")).run()
    _button(at, "Predict").click().run()
    assert not at.exception and at.error


def _png(value: int = 120) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((60, 50), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _checkerboard() -> bytes:
    """An image nothing like an X-ray, for the unusual-image check: over 10 trainings of the 2-epoch fixture model it lay
    2.8-4.6 times the cutoff's distance out (a flat grey image 0.9-2.0: usual now and then, which failed 2 of 30 runs)."""
    buf = io.BytesIO()
    Image.fromarray(((np.indices((60, 50)).sum(0) // 4) % 2 * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_predict_page_classifies_png_and_dicom_with_gradcam() -> None:
    from pydicom.data import get_testdata_file

    at = _page("pages/predict.py")
    assert any("Upload one or more images" in i.value for i in at.info)
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    at.file_uploader(key="pred_files").set_value([("a.png", _checkerboard(), "image/png"), ("ct.dcm", dicom, "application/dicom"),
                                                   ("bad.png", b"nope", "image/png")]).run()
    assert not at.exception and not at.error
    assert any(m.value in ("### NORMAL", "### PNEUMONIA") for m in at.markdown)
    captions = [c for img in at.get("image") for c in img.captions]
    assert any("Grad-CAM for" in c for c in captions) and not any("border crop" in c for c in captions)
    assert any("threshold" in c.value for c in at.caption)
    # a PNG raises no modality caution; a checkerboard is unlike every X-ray the model learned from, which the page says
    assert [w for w in _warnings(at) if not w.startswith("Unusual for this model")] == []
    assert any("than 9" in w.value and "its own validation images" in w.value for w in at.warning)
    at.selectbox(key="pred_image").set_value("ct.dcm").run()
    assert not at.exception
    assert any("computed tomography (CT), not a projection X-ray" in w.value for w in at.warning)
    at.selectbox(key="pred_window").set_value("Lung (CT)").run()
    at.radio(key="pred_method").set_value("Grad-CAM++").run()
    assert not at.exception
    at.selectbox(key="pred_image").set_value("bad.png").run()
    assert not at.exception and any("bad.png" in e.value for e in at.error)
    assert len(at.dataframe) >= 1  # the batch table of all three uploads (the bad one with its error)


def test_predict_sets_each_call_beside_the_validation_images_scored_alike(models_dir: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose validation split was never predicted offers to predict it; then each call says how many of the validation
    images scored nearest it were truly that class (a warning when that makes it borderline), and the batch table too."""
    import shutil

    from core.dataset import DEMO, open_dataset
    from core.evaluate import load_predictions
    from core.image_reader import read_image
    from core.predict import from_run
    from core.similar_scores import similar_scores

    source = next(p for p in models_dir.iterdir() if p.is_dir())
    run = tmp_path / "runs" / source.name
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("predictions-*.csv"))
    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(run.parent))
    xray = open_dataset(DEMO).table.query("split == 'test'")["path"].iloc[0]
    at = _page("pages/predict.py")
    at.file_uploader(key="pred_files").set_value([("xray.png", Path(xray).read_bytes(), "image/png"), ("flat.png", _png(), "image/png")]).run()
    assert not at.exception and not any("validation images scored nearest" in c.value for c in [*at.caption, *at.warning])
    _button(at, "Predict the validation split").click().run()
    assert not at.exception and not at.error and (run / "predictions-val.csv").exists()
    assert not any(b.label == "Predict the validation split" for b in at.button)
    predictor = from_run(run)
    score = predictor.scores(predictor.prepare(read_image(xray).pixels)[None])[0]
    alike = similar_scores(load_predictions(run, "val"), predictor.classes, "binary", score, predictor.label(score))
    shown = [e.value for e in (at.warning if alike.borderline else at.caption)]
    assert alike.sentence() in shown, (alike.sentence(), shown)  # what core says of the image, the page says
    table = at.dataframe[0].value
    assert table.loc[table["file"] == "xray.png", "validation_alike"].item() == alike.counted
    assert table["borderline"].notna().all()


def test_predict_uses_a_threshold_saved_after_the_model_was_loaded(models_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The loaded model is kept per model file; a threshold saved on Evaluate afterwards (same file) must still decide."""
    import shutil

    from core.evaluate import save_threshold

    source = next(p for p in models_dir.iterdir() if p.is_dir())
    run = tmp_path / "runs" / source.name
    shutil.copytree(source, run)
    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(run.parent))
    at = _page("pages/predict.py")
    at.file_uploader(key="pred_files").set_value([("flat.png", _png(), "image/png")]).run()
    before = float(read_status(run).get("threshold", 0.5))
    assert any(f"threshold {before:.3f} (" in c.value for c in at.caption)
    save_threshold(run, 0.987, "set on Evaluate")
    at.run()
    assert not at.exception and any("threshold 0.987 (set on Evaluate)" in c.value for c in at.caption), [c.value for c in at.caption]


def test_predict_page_picks_a_frame_of_a_multi_frame_dicom() -> None:
    """A multi-frame file (pydicom's 2-frame RLE secondary capture) opens on its middle frame with a frame slider; the
    chosen frame is the one classified."""
    from pydicom.data import get_testdata_file

    at = _page("pages/predict.py")
    two = Path(get_testdata_file("SC_rgb_rle_2frame.dcm")).read_bytes()
    at.file_uploader(key="pred_files").set_value([("two.dcm", two, "application/dicom")]).run()
    assert not at.exception and not at.error
    slider = at.slider(key="pred_frame_two.dcm")
    assert slider.label == "Frame (of 2)" and slider.max == 2 and slider.value == 2  # the middle of 2 frames: index 1
    slider.set_value(1).run()
    assert not at.exception and not at.error and '"frame": 0' in at.json[0].value


def test_reruns_keep_the_compiled_model_and_a_load_clears_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamlit clears Keras' session after every run, which made each Predict rerun recompile its model
    (1.2 s instead of 0.2 s with a MobileNetV2 run, bench/rerun_bench.py). The pages clear it only when they load a model."""
    import streamlit as st
    from tensorflow.python.eager import context

    import pages.common

    clears: list[int] = []
    clear = context.Context.clear_kernel_cache
    monkeypatch.setattr(context.Context, "clear_kernel_cache", lambda self: (clears.append(1), clear(self))[1])
    monkeypatch.setattr(pages.common, "RUNS_PER_KERAS_CLEAR", 10**9)  # the periodic clear: the next test
    st.cache_resource.clear()  # the run's model loads afresh below
    at = _page("pages/predict.py")
    at.file_uploader(key="pred_files").set_value([("a.png", _png(90), "image/png"), ("b.png", _png(160), "image/png")]).run()
    assert not at.exception and any(m.value in ("### NORMAL", "### PNEUMONIA") for m in at.markdown)
    assert clears, "loading the model clears what TensorFlow compiled for models let go"
    loaded = len(clears)
    for name in ("b.png", "a.png", "b.png"):
        at.selectbox(key="pred_image").set_value(name).run()
        assert not at.exception
    assert len(clears) == loaded, "a rerun that loads no model keeps the compiled model"


def test_streamlits_keras_clear_still_comes_every_hundredth_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras layers built in a run (the Lab's preview) leave TensorFlow kernels that only a clear frees: bounded."""
    from streamlit.runtime.scriptrunner import script_runner
    from tensorflow.python.eager import context

    import pages.common

    assert pages.common.RUNS_PER_KERAS_CLEAR == 100
    clears: list[int] = []
    monkeypatch.setattr(context.Context, "clear_kernel_cache", lambda self: clears.append(1))
    for _ in range(100):
        script_runner._clean_problem_modules()  # what Streamlit calls after each run
    assert len(clears) == 1


def test_three_class_run_on_evaluate_and_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on a 3-class folder (a softmax head, fitted by the job) and a border crop, through Evaluate and Predict
    like any run; Predict says why the map's borders are blank."""
    from tests.conftest import make_separable_classes

    data = make_separable_classes(tmp_path / "ds", {"a": 40, "b": 120, "c": 200}, n=20)
    config = TrainConfig(data=str(data), epochs=2, tensorboard=False, model=ModelConfig(image_size=32, crop=0.1),
                         pipeline=PipelineConfig(image_size=32))
    run = create_run(config.to_dict(), tmp_path / "models")
    assert run_job(run, verbose=0) == "completed"
    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(tmp_path / "models"))
    at = _page("pages/evaluate.py")
    _button(at, "Predict").click().run()
    assert not at.exception and not at.error
    shown = " ".join(df.value.to_string() for df in at.dataframe)
    assert "auc_macro_ovr" in shown and "quadratic_kappa" in shown  # the multi-class summary, not the binary one
    report = next(df.value for df in at.dataframe if "macro avg" in df.value.columns)
    assert {"a", "b", "c"} <= set(report.columns) and report.loc["support", ["a", "b", "c"]].sum() == 9
    at = _page("pages/predict.py")
    at.file_uploader(key="pred_files").set_value([("c.png", (data / "c" / "c0.png").read_bytes(), "image/png")]).run()
    assert not at.exception and not at.error
    assert any(m.value in ("### a", "### b", "### c") for m in at.markdown)
    assert any("Grad-CAM for" in c and "border crop" in c for img in at.get("image") for c in img.captions)


def test_predict_page_refuses_a_lambda_model(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((8, 8, 1))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(tmp_path / "lambda.keras")
    at = _page("pages/predict.py")
    at.radio(key="pred_kind").set_value("Upload a .keras model").run()
    at.file_uploader(key="pred_model_file").set_value(("lambda.keras", (tmp_path / "lambda.keras").read_bytes(), "application/zip")).run()
    assert not at.exception and any("Lambda" in e.value for e in at.error)


def test_predict_page_imagenet_and_segmentation_offline_messages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    at = _page("pages/predict.py")
    at.text_input(key="inet_weights").input(str(tmp_path / "missing.h5")).run()
    at.file_uploader(key="inet_file").set_value(("p.png", _png(), "image/png")).run()
    assert not at.exception and any("does not exist" in e.value for e in at.error)
    at.text_input(key="seg_handle").input(str(tmp_path)).run()
    at.file_uploader(key="seg_file").set_value(("p.png", _png(), "image/png")).run()
    assert not at.exception and any("saved_model.pb" in e.value for e in at.error)


def test_pages_survive_corrupt_run_folders(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    good = next(p for p in models_dir.iterdir() if p.is_dir())
    folder = tmp_path / "models"
    shutil.copytree(good, folder / good.name)
    broken_config = folder / "20990101-000000-smallnet-dead"
    shutil.copytree(good, broken_config)
    (broken_config / "config.json").write_text("{ not json")
    broken_status = folder / "20990101-000001-smallnet-beef"
    shutil.copytree(good, broken_status)
    (broken_status / "status.json").write_text('{"state": "runn')
    (broken_status / "metrics.csv").write_bytes(b'epoch,loss\n1,"0.5\n\x00')
    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(folder))
    for page in ("pages/train.py", "pages/evaluate.py", "pages/predict.py"):
        at = _page(page)
        assert not at.exception, page
    at = _page("pages/train.py")
    text = " ".join(d.value.to_csv() for d in at.dataframe)  # every cell: a frame's repr elides middle columns
    assert "unreadable" in text


def test_evaluate_compares_runs_by_score_and_by_what_was_changed(models_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison tab puts the runs' scores side by side and, under them, only the settings they were trained with
    differently; runs trained alike say so; variants with two seeds or more get their mean ± sd over seeds."""
    import json
    import shutil

    from core.dataset import DEMO, open_dataset
    from core.evaluate import load_predictions, predict_table

    good = next(p for p in models_dir.iterdir() if p.is_dir())
    if load_predictions(good, "test") is None:  # predicted once here, the copies carry them: the page predicts none of them
        table = open_dataset(DEMO).table
        predict_table(good, table[table["split"] == "test"], "test")
    folder = tmp_path / "models"
    shutil.copytree(good, folder / good.name)
    changed = folder / "20990101-000000-smallnet-c0c0"
    shutil.copytree(good, changed)
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, "cosine": True, "learning_rate": 1e-4}))
    shutil.copytree(good, folder / "20990101-000001-smallnet-5a5a")
    for source, name in ((good, "20990101-000002-smallnet-5eed"), (changed, "20990101-000003-smallnet-5eed")):  # seed 1 of each
        shutil.copytree(source, folder / name)
        config = json.loads((folder / name / "config.json").read_text())
        (folder / name / "config.json").write_text(json.dumps({**config, "seed": 1}))
    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(folder))
    at = _page("pages/evaluate.py")
    at.selectbox(key="eval_run").set_value(good.name).run()
    at.multiselect(key="eval_compare").set_value([changed.name]).run()
    assert not at.exception and not at.error
    scores = next(d.value for d in at.dataframe if "accuracy" in d.value.columns)
    assert {"accuracy 95% CI", "sensitivity 95% CI", "specificity 95% CI"} <= set(scores.columns)
    differ = next(d.value for d in at.dataframe if "learning_rate" in d.value.index)
    assert set(differ.index) == {"cosine", "learning_rate"} and differ.loc["cosine"].tolist() == ["False", "True"]
    assert not any("seeds" in d.value.columns for d in at.dataframe)  # one run a variant: no spread to show
    at.multiselect(key="eval_compare").set_value(["20990101-000001-smallnet-5a5a"]).run()
    assert not at.exception and any("same settings, seed included" in c.value for c in at.caption)
    # two seeds of each variant: each variant's mean and spread over its seeds
    at.multiselect(key="eval_compare").set_value([changed.name, "20990101-000002-smallnet-5eed", "20990101-000003-smallnet-5eed"]).run()
    assert not at.exception and not at.error
    grouped = next(d.value for d in at.dataframe if "seeds" in d.value.columns)
    assert grouped.index.tolist() == ["cosine=False; learning_rate=0.001", "cosine=True; learning_rate=0.0001"]
    assert grouped["runs"].tolist() == [2, 2] and grouped["seeds"].tolist() == ["0, 1", "0, 1"]
    assert all(" ± " in value for value in grouped["accuracy"]) and any("what drawing another seed does" in c.value for c in at.caption)


def test_evaluate_an_external_folder(models_dir: Path, tmp_path: Path) -> None:
    import shutil

    from core.dataset import DEMO, open_dataset

    table = open_dataset(DEMO).table
    for label in ("NORMAL", "PNEUMONIA"):  # "another hospital": the same classes, other files
        (tmp_path / "hospital_b" / label).mkdir(parents=True)
        for path in table[table["label"] == label]["path"].head(6):
            shutil.copy(path, tmp_path / "hospital_b" / label / f"b_{Path(path).name}")
    at = _page("pages/evaluate.py")
    at.radio(key="eval_target").set_value("external folder").run()
    at.text_input(key="eval_external").input(str(tmp_path / "hospital_b")).run()
    _button(at, "Predict").click().run()
    assert not at.exception and not at.error
    run = next(p for p in models_dir.iterdir() if p.is_dir())
    assert (run / "predictions-external-hospital-b.csv").exists()
    assert any("12 images" in c.value for c in at.caption)


def test_predict_checks_uploads_for_unusual_images_and_measures_an_older_run(models_dir: Path, tmp_path: Path) -> None:
    """A demo X-ray is usual for the run, a checkerboard is not; a run without the record (trained before the check
    existed) gets a button that measures it; a folder gets one sentence on how many of its images are unusual; Evaluate
    says the same of the split it predicted."""
    import shutil

    from core import novelty
    from core.dataset import open_dataset
    from core.predict import from_run, predict_files

    run = next(p for p in sorted(models_dir.iterdir()) if (p / "novelty.npz").exists())
    shutil.move(run / "novelty.npz", tmp_path / "novelty.npz")  # as a run trained before the check
    test = open_dataset("demo").table.query("split == 'test'")
    xray = Path(test["path"].iloc[0]).read_bytes()
    at = _page("pages/predict.py")
    at.file_uploader(key="pred_files").set_value([("xray.png", xray, "image/png")]).run()
    assert not at.exception and not _warnings(at) and not any("Usual for this model" in c.value for c in at.caption)
    _button(at, "Measure which images are usual for this run").click().run()
    assert not at.exception and not at.error and (run / "novelty.npz").exists()
    assert not any(b.label == "Measure which images are usual for this run" for b in at.button)
    folder = tmp_path / "site"
    folder.mkdir()
    for i, path in enumerate(test["path"].iloc[:6]):
        shutil.copy(path, folder / f"x{i}.png")
    (folder / "checkerboard.png").write_bytes(_checkerboard())
    # what core says of each image with the record the button wrote: the page must say the same. (A 2-epoch model's
    # record from a few validation images flags an unseen demo X-ray now and then, so the count is not fixed.)
    files = [("xray.png", str(test["path"].iloc[0]))] + [(p.name, str(p)) for p in sorted(folder.iterdir())]
    flags = dict(zip((name for name, _ in files), predict_files(from_run(run), files, novelty=novelty.load(run))["unusual"], strict=True))
    assert flags["checkerboard.png"], "a checkerboard is unusual"
    if flags["xray.png"]:
        assert any(w.value.startswith("Unusual for this model") for w in at.warning)
    else:
        assert any(c.value.startswith("Usual for this model") for c in at.caption) and not _warnings(at)
    at.text_input(key="pred_folder").set_value(str(folder)).run()
    count = sum(flag for name, flag in flags.items() if name != "xray.png")
    sentence = f"{count} of 7 images ({count / 7:.0%}) are unusual for this model"
    assert not at.exception and any(c.value.startswith(sentence) for c in at.caption), (sentence, [c.value for c in at.caption])

    (run / "predictions-test.csv").unlink(missing_ok=True)
    at = _page("pages/evaluate.py")
    _button(at, "Predict").click().run()
    assert not at.exception
    assert any("images" in c.value and "are unusual for this model" in c.value for c in at.caption)
