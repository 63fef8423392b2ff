"""Pages under streamlit.testing AppTest: they render, show the demo set, and turn bad input into messages."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption] + [str(m.value) for m in at.metric]
    return "\n".join(parts)


def test_home_shows_demo_classes_and_device() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    text = _text(at)
    assert "**NORMAL** (150)" in text and "**PNEUMONIA** (150)" in text
    assert "TensorFlow" in text and ("CPU" in text or "GPU" in text)


def test_dataset_page_bad_folder_shows_message_not_traceback(tmp_path: Path) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/dataset.py").run()
    assert not at.exception
    at.radio[0].set_value("Folder").run()
    at.text_input[0].input(str(tmp_path / "does-not-exist")).run()
    at.button[0].click().run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)
    assert "demo set" in at.subheader[0].value  # the previous dataset stays active


def test_dataset_page_opens_a_folder(tmp_path: Path) -> None:
    from tests.conftest import make_class_folders

    root = make_class_folders(tmp_path / "ds", {"left": 6, "right": 9})
    (root / "left" / "junk.txt").write_text("x")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/dataset.py").run()
    at.radio[0].set_value("Folder").run()
    at.text_input[0].input(str(root)).run()
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert str(root) in at.subheader[0].value
    assert "15 images · 2 classes" in _text(at)


def test_dataset_page_splits_by_patient_when_the_names_carry_ids(tmp_path: Path) -> None:
    """Kermany-style names (person12_bacteria_3.jpeg): opening the folder splits by patient, the page says so, and the
    leakage tab counts the patients on both sides (none)."""
    import numpy as np
    from PIL import Image

    for label, first, base in (("NORMAL", 0, 60), ("PNEUMONIA", 100, 150)):
        (tmp_path / "ds" / label).mkdir(parents=True)
        for i in range(40):  # two images per child
            Image.fromarray(np.full((24, 24), base + i, np.uint8)).save(tmp_path / "ds" / label / f"person{first + i // 2}_x_{i}.png")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/dataset.py").run()
    at.radio[0].set_value("Folder").run()
    at.text_input[0].input(str(tmp_path / "ds")).run()
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert "80 images · 2 classes · split by patient (ids in the file names), 70/15/15" in _text(at)
    assert any("both train and test: 0; in both train and validation: 0." in c.value for c in at.caption)


def test_server_config_is_safe_by_default() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    assert config["server"]["enableXsrfProtection"] is True
    assert 0 < config["server"]["maxUploadSize"] <= 500
    assert config["client"]["showErrorDetails"] == "none"
    # And Streamlit itself reads them as the effective settings.
    shown = subprocess.run(
        [sys.executable, "-m", "streamlit", "config", "show"], cwd=ROOT, capture_output=True, text=True,
        env=os.environ.copy(), timeout=60,
    ).stdout
    assert 'address = "localhost"' in shown and "enableXsrfProtection = true" in shown


def test_lab_page_runs_every_method_and_operation() -> None:
    from core.morphology import OPERATIONS
    from core.normalize import METHODS

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/lab.py").run()
    assert not at.exception
    for method in METHODS:
        at.selectbox(key="lab_method").set_value(method).run()
        assert not at.exception, method
    for operation in OPERATIONS:
        at.selectbox(key="lab_operation").set_value(operation).run()
        assert not at.exception, operation
    at.checkbox(key="lab_otsu").uncheck().run()
    at.slider(key="lab_threshold").set_value(60).run()
    assert not at.exception
    assert any("threshold used: 60.0" in c.value for c in at.caption)


def _dataset_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/dataset.py").run()
    assert not at.exception
    return at


def test_dataset_page_every_tab_on_the_demo_set() -> None:
    from core.dataset_store import list_definitions

    at = _dataset_page()
    assert len(at.get("plotly_chart")) >= 3  # counts, size scatter, size histograms
    assert "Imbalance (largest/smallest)" in [m.label for m in at.metric]
    assert len(at.get("image")) >= 1  # sample grid and channel viewer
    before = at.session_state["samples_seed"] if "samples_seed" in at.session_state else 0
    at.button(key="samples_shuffle").click().run()
    assert at.session_state["samples_seed"] == before + 1 and not at.exception
    at.radio(key="channel_name").set_value("gray").run()
    assert not at.exception

    at.number_input(key="trim_max").set_value(100).run()
    assert not at.exception
    at.text_input(key="save_name").input("demo-100").run()
    at.button(key="save_button").click().run()
    assert not at.exception and any("Saved 'demo-100'" in s.value for s in at.success)
    assert next(d for d in list_definitions() if d["name"] == "demo-100")["images"] == 200

    at.button(key="dup_button").click().run()
    assert not at.exception
    assert any("No duplicates" in s.value for s in at.success)


def _sidebar(at: AppTest) -> list:
    return [getattr(e, "value", None) for e in at.sidebar]


@pytest.mark.parametrize(("page", "message"), [("pages/train.py", "No runs yet"), ("pages/evaluate.py", "No trained model yet")])
def test_a_page_that_ends_early_still_draws_the_sidebar(page: str, message: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any run, Train and Evaluate end early with a message. The sidebar (dataset, latest run, device) is drawn
    after the page; ended with st.stop(), the page stopped it too, and a new user saw neither on those pages."""
    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(tmp_path / "no-runs"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page(page).run()
    assert not at.exception and any(message in i.value for i in at.info)
    assert {"Active dataset", "Latest run", "Device", "none yet: train one on the Train page"} <= set(_sidebar(at))


def test_a_refused_rebalance_ends_its_tab_only() -> None:
    """Trimming that would leave one class is refused in the balance tab; the leakage tab after it and the sidebar
    still draw (st.stop() ended the whole page there)."""
    at = _dataset_page()
    at.number_input(key="trim_min").set_value(1000).run()
    assert not at.exception and any("fewer than two classes" in e.value for e in at.error)
    assert at.button(key="dup_button") is not None and "Active dataset" in _sidebar(at)


@pytest.mark.parametrize("case", ["empty folder", "bad csv", "saved dataset"])
def test_dataset_page_bad_sources_show_messages(tmp_path: Path, case: str) -> None:
    at = _dataset_page()
    if case == "empty folder":
        (tmp_path / "empty" / "a").mkdir(parents=True)
        at.radio[0].set_value("Folder").run()
        at.text_input[0].input(str(tmp_path / "empty")).run()
        expected = "No readable images"
    elif case == "bad csv":
        (tmp_path / "bad.csv").write_text("nothing,useful\n1,2\n")
        at.radio[0].set_value("CSV file").run()
        at.text_input[0].input(str(tmp_path / "bad.csv")).run()
        expected = "needs a 'path' and a 'label' column"
    else:
        at.radio[0].set_value("Kaggle").run()
        at.text_input[0].input("no handle here").run()
        expected = "not a Kaggle dataset handle"
    at.button[0].click().run()
    assert not at.exception
    assert any(expected in e.value for e in at.error)
    assert "demo set" in at.subheader[0].value


def test_lab_page_augmentation_preview() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/lab.py").run()
    assert not at.exception
    at.slider(key="aug_rotation").set_value(0.2).run()
    at.slider(key="aug_shear").set_value(0.2).run()
    at.selectbox(key="aug_flip").set_value("horizontal_and_vertical").run()
    assert not at.exception
    assert len(at.get("image")) >= 3
    at.selectbox(key="blend_kind").set_value("cutmix").run()  # the demo set's two classes: blends with the other one
    assert not at.exception
    captions = [c for img in at.get("image") for c in img.captions if c.startswith("target: ")]
    assert len(captions) == 6 and all(c.endswith("PNEUMONIA") for c in captions)  # the lab shows a NORMAL image first


def test_train_page_preselects_the_imagenet_recipe_when_its_weights_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.weights import mobilenet_v2_file

    (tmp_path / mobilenet_v2_file(0.35, 224, top=False)).write_bytes(b"found")  # only its presence is checked here
    monkeypatch.setenv("MEDIMAGE_WEIGHTS_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/train.py").run()
    assert not at.exception and at.selectbox(key="train_recipe").value.startswith("X-ray recipe: ImageNet MobileNetV2")
    assert at.number_input(key="train_epochs_xray").value == 10


@pytest.mark.slow
def test_train_page_starts_a_job_and_shows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import time

    from core.runs import effective_state, list_runs, read_status

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    # preselected for two classes: the scratch recipe where the ImageNet recipe's weights file is not found (here)
    assert at.selectbox(key="train_recipe").value.startswith("X-ray recipe, from scratch")
    at.selectbox(key="train_recipe").set_value("Custom: the settings below").run()
    at.number_input(key="train_size").set_value(32)
    at.number_input(key="train_epochs").set_value(1)
    assert at.selectbox(key="train_precision").value == "auto"
    at.selectbox(key="train_precision").set_value("off")
    at.number_input(key="train_ema").set_value(2.0)
    at.number_input(key="train_mixup").set_value(0.2)
    at.number_input(key="train_crop").set_value(0.1)
    at.number_input(key="train_cutmix").set_value(0.5)
    at.selectbox(key="train_intensity").set_value("equalize")
    runs_before = len(list_runs())
    at.button[0].click().run()  # both blends: a message on the form, and no run
    assert not at.exception and "Choose mixup or CutMix, not both" in at.error[0].value and len(list_runs()) == runs_before
    at.number_input(key="train_cutmix").set_value(0.0)
    at.checkbox(key="train_cosine").check()
    at.button[0].click().run()  # the form's submit button
    assert not at.exception and any("Started" in s.value or "Queued" in s.value for s in at.success)
    run = Path(list_runs().iloc[0]["path"])
    config = json.loads((run / "config.json").read_text())
    assert config["ema_epochs"] == 2.0 and config["mixup"] == 0.2  # the job averages its weights and blends its images
    assert config["model"]["crop"] == 0.1 and config["cosine"] is True  # its model cuts the borders, its LR follows a cosine
    assert config["model"]["intensity"] == "equalize"  # and equalises each image
    deadline = time.time() + 180
    while effective_state(read_status(run)) not in ("completed", "failed") and time.time() < deadline:
        time.sleep(0.5)
    assert read_status(run)["state"] == "completed", read_status(run)
    assert read_status(run)["precision"] == "float32"  # the form's choice reached the job
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) >= 1  # the curves of the finished run
    assert any("completed" in p.proto.text for p in at.get("progress"))
    # the learning rate field starts at the run's current rate (a cosine's end here), and the caption says it: "Set LR"
    # pressed as it comes changes nothing (it said 1e-4 for every run, which put a decayed LR back up)
    lr = read_status(run)["lr"]
    assert at.number_input(key="ctl_lr_value").value == pytest.approx(lr)
    assert any(f"learning rate now {lr:.2g}" in c.value for c in at.caption)
    # Resume when no job process can be started (the process table full): a message, not a traceback
    def no_process(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr("core.jobs._spawn", no_process)
    at.button(key="ctl_resume").click().run()
    assert not at.exception and any(e.value.startswith("Not resumed:") and "Resource temporarily" in e.value for e in at.error)
    assert read_status(run)["state"] == "failed" and not (run / ".claimed").exists()  # resumable, not stuck claimed


def test_train_page_shows_what_a_recipe_will_use() -> None:
    """The fields a recipe sets are greyed out and show the recipe's values, not the custom defaults (they said
    'smallnet' beside the recipe that trains xraynet); Custom shows its own."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train_recipe").set_value("X-ray recipe, from scratch (works offline)").run()
    assert not at.exception
    assert at.selectbox(key="train_model_xray-scratch").value == "xraynet" and at.selectbox(key="train_model_xray-scratch").disabled
    assert at.number_input(key="train_size_xray-scratch").value == 128 and at.number_input(key="train_batch_xray-scratch").value == 32
    assert at.number_input(key="train_lr_xray-scratch").value == pytest.approx(1e-3)
    label = next(o for o in at.selectbox(key="train_recipe").options if o.startswith("X-ray recipe: ImageNet"))
    at.selectbox(key="train_recipe").set_value(label).run()
    assert not at.exception
    assert at.selectbox(key="train_model_xray").value == "mobilenetv2" and at.selectbox(key="train_weights_xray").value == "imagenet"
    assert at.selectbox(key="train_alpha_xray").value == 0.35 and at.selectbox(key="train_freeze_xray").value == "full"
    assert at.number_input(key="train_size_xray").value == 224 and at.number_input(key="train_lr_xray").value == pytest.approx(1e-4)
    at.selectbox(key="train_recipe").set_value("Custom: the settings below").run()
    assert at.selectbox(key="train_model").value == "smallnet" and at.number_input(key="train_size").value == 128
    assert not at.selectbox(key="train_model").disabled and at.selectbox(key="train_alpha").value == 1.0


def test_train_page_overlay_says_what_the_runs_were_trained_with_differently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Overlaying an LR sweep's curves names the setting the sweep changed, so the legend's run names need no decoding."""
    from core.runs import create_run
    from core.train import lr_sweep_configs, make_config

    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(tmp_path))
    runs = [create_run(c.to_dict(), tmp_path) for c in lr_sweep_configs(make_config("demo", image_size=32, epochs=1))]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/train.py").run()
    at.multiselect(key="train_compare").set_value([r.name for r in runs]).run()
    assert not at.exception
    differ = next(d.value for d in at.dataframe if "learning_rate" in d.value.index)
    assert list(differ.index) == ["learning_rate"] and sorted(map(float, differ.loc["learning_rate"])) == [0.001, 0.01, 0.1]
    assert any("trained with differently" in c.value for c in at.caption)


def test_train_form_refuses_blending_three_classes_before_a_run_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mixup's and CutMix's targets are one probability: with 3 classes active the form says so, instead of making a
    run whose job fails when it fits a softmax head."""
    from core.runs import list_runs
    from pages.common import DATASET_KEY
    from tests.conftest import make_class_folders

    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(tmp_path / "models"))
    make_class_folders(tmp_path / "ds", {"a": 4, "b": 4, "c": 4})
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state[DATASET_KEY] = str(tmp_path / "ds")
    at.run()
    at.switch_page("pages/train.py").run()
    assert at.selectbox(key="train_recipe").value.startswith("Custom")  # 3 classes: no X-ray recipe preselected
    at.number_input(key="train_cutmix").set_value(1.0)
    at.button[0].click().run()
    assert not at.exception and "CutMix is for a binary head (two classes); this run's head is 'multiclass' for 3 classes." in at.error[0].value
    assert list_runs().empty


@pytest.mark.slow
def test_train_form_fine_tunes_after_feature_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The form's second phase: refused with a plain message on a backbone that already trains whole, and with feature
    extraction first a job that unfreezes every layer (0), BatchNorm included, at the switch."""
    import json
    import time

    from core.runs import effective_state, list_runs, read_status

    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train_recipe").set_value("Custom: the settings below").run()
    at.selectbox(key="train_model").set_value("mobilenet")  # the smallest backbone: its whole-network graph builds fastest
    at.selectbox(key="train_alpha").set_value(0.25)
    at.number_input(key="train_size").set_value(32)
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_freeze").set_value("full")
    at.number_input(key="train_fine_tune_epochs").set_value(1)
    at.number_input(key="train_fine_tune_layers").set_value(0)
    at.number_input(key="train_fine_tune_lr").set_value(5e-5)
    at.number_input(key="train_seed").set_value(5)
    at.checkbox(key="train_deterministic").check()  # a transfer job's ops all have deterministic kernels here
    at.button[0].click().run()
    assert not at.exception and "Fine-tuning follows feature extraction" in at.error[0].value and list_runs().empty
    at.selectbox(key="train_freeze").set_value("feature_extraction")
    at.button[0].click().run()
    assert not at.exception and not at.error and any("Started" in s.value or "Queued" in s.value for s in at.success)
    run = Path(list_runs().iloc[0]["path"])
    config = json.loads((run / "config.json").read_text())
    assert config["fine_tune_epochs"] == 1 and config["model"]["fine_tune_layers"] == 0 and config["fine_tune_lr"] == 5e-5
    assert config["seed"] == 5 and config["deterministic"] is True
    deadline = time.time() + 180
    while effective_state(read_status(run)) not in ("completed", "failed") and time.time() < deadline:
        time.sleep(0.5)
    status = read_status(run)
    assert status["state"] == "completed" and status["fine_tune_from_epoch"] == 1, status
    from core.device_info import device_summary, precision_policy

    # "auto" for a MobileNet: float32 on a CPU (bfloat16 slows depthwise convolutions), and the form said so
    expected = precision_policy(device_summary()["gpus"], True, "mobilenet")
    assert status["precision"] == expected and at.selectbox(key="train_precision").options[0] == f"auto: {expected} here"


def test_train_page_offline_imagenet_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train_recipe").set_value("Custom: the settings below").run()
    at.selectbox(key="train_model").set_value("vgg16")
    at.selectbox(key="train_weights").set_value("local file")
    at.text_input(key="train_weights_file").input("/nowhere/vgg16.h5")
    at.button[0].click().run()
    assert not at.exception
    assert any("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in e.value for e in at.error)
    # a backbone too small for its images after the border crop: the form says so and no run is made
    from core.runs import list_runs

    before = len(list_runs())
    at.selectbox(key="train_model").set_value("inceptionv3")
    at.selectbox(key="train_weights").set_value("none")
    at.number_input(key="train_size").set_value(96)
    at.number_input(key="train_crop").set_value(0.3)
    at.button[0].click().run()
    assert not at.exception and any("InceptionV3 cannot take 38x38 images" in e.value for e in at.error)
    assert len(list_runs()) == before


@pytest.mark.slow
def test_train_page_starts_the_xray_recipe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json
    import time

    import keras

    from core.runs import effective_state, list_runs, read_status

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/train.py").run()
    assert at.number_input(key="train_epochs_xray-scratch").value == 14
    at.number_input(key="train_epochs_xray-scratch").set_value(1)
    at.button[0].click().run()
    assert not at.exception and any("xray-scratch recipe" in s.value for s in at.success)
    run = Path(list_runs().iloc[0]["path"])
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["name"] == "xraynet" and config["rows"] == "rows.csv" and config["epochs"] == 1
    deadline = time.time() + 240
    while effective_state(read_status(run)) not in ("completed", "failed") and time.time() < deadline:
        time.sleep(0.5)
    assert read_status(run)["state"] == "completed" and "threshold" in read_status(run)

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure")

    from core import weights

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)  # no download, and no file in the weights folders
    monkeypatch.setattr(weights, "KERAS_MODELS", tmp_path / "empty")
    monkeypatch.setenv("MEDIMAGE_WEIGHTS_DIR", str(tmp_path / "empty"))
    at.selectbox(key="train_recipe").set_value("X-ray recipe: ImageNet MobileNetV2, whole network (needs its weights file)").run()
    at.button[0].click().run()
    assert not at.exception and any("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in e.value for e in at.error)


@pytest.mark.slow
def test_a_new_dashboard_session_reattaches_to_a_running_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job runs in its own process; a restarted dashboard (a fresh session) finds it from its folder."""
    import time

    from core import jobs
    from core.models import ModelConfig
    from core.pipeline import PipelineConfig
    from core.runs import create_run, read_status, request
    from core.train import TrainConfig

    monkeypatch.setenv("MEDIMAGE_MODELS_DIR", str(tmp_path))
    config = TrainConfig(data="demo", epochs=50, tensorboard=False, model=ModelConfig(image_size=32), pipeline=PipelineConfig(image_size=32))
    run = create_run(config.to_dict(), tmp_path)
    assert jobs.start(run) == "running"
    deadline = time.time() + 120
    while read_status(run).get("epoch", 0) < 1 and time.time() < deadline:
        time.sleep(0.3)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()  # a brand-new session
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert any("running" in p.proto.text for p in at.get("progress")) and run.name in at.selectbox(key="train_run").options
    request(run, stop="now")
    while read_status(run).get("state") == "running" and time.time() < deadline + 60:
        time.sleep(0.3)
    assert read_status(run)["state"] == "stopped"
