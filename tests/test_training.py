"""Training jobs for real: separate processes on the demo set, SIGKILL and resume, stop/extend requests,
concurrent starts, the queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from core import jobs
from core.models import ModelConfig
from core.pipeline import PipelineConfig
from core.runs import create_run, effective_state, latest_run, list_runs, read_metrics, read_status, request, write_status
from core.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _config(epochs: int = 2, size: int = 32, **kw) -> dict:
    return TrainConfig(
        data="demo", epochs=epochs, model=ModelConfig(name="smallnet", image_size=size, channels=1),
        pipeline=PipelineConfig(image_size=size, channels=1, batch_size=16), batch_log_every=2, **kw,
    ).to_dict()


def _wait(run: Path, predicate, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = read_status(run)
        if predicate(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"timed out; status {read_status(run)}; log:\n{(run / 'job.out').read_text() if (run / 'job.out').exists() else ''}")


def _done(status: dict) -> bool:
    return status.get("state") in ("completed", "stopped", "failed")


def test_job_completes_and_writes_every_file(tmp_path: Path) -> None:
    run = create_run(_config(), tmp_path)
    assert jobs.start(run) == "running"
    status = _wait(run, _done)
    assert status["state"] == "completed", status
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    for name in ("config.json", "status.json", "metrics.csv", "batches.csv", "log.txt", "best.keras", "last.keras", "final.keras"):
        assert (run / name).stat().st_size > 0, name
    metrics = read_metrics(run)
    assert metrics["epoch"].tolist() == [1, 2]
    assert {"loss", "val_loss", "accuracy", "val_auc", "val_precision", "val_recall", "lr"} <= set(metrics.columns)
    from core.charts import training_curves_figure, with_f1

    f1 = with_f1(metrics)["val_f1"]
    assert f1.between(0, 1).all()
    assert "F1" in [a.text for a in training_curves_figure(metrics).layout.annotations]
    assert status["epoch"] == 2 and status["best_metric"] == "val_loss" and status["classes"] == ["NORMAL", "PNEUMONIA"]
    from core.train import precision_for

    # one replica on one device; "auto" precision is this machine's (bfloat16 on a CPU with native bfloat16)
    assert status["replicas"] == 1 and status["precision"] == precision_for("auto", "smallnet")
    assert list_runs(tmp_path).iloc[0]["state"] == "completed"
    (tmp_path / "no-runs").mkdir()
    assert latest_run(tmp_path) == (run.name, "completed") and latest_run(tmp_path / "no-runs") is None
    # a finished run can be extended and resumed: it continues from last.keras
    request(run, extend=1)
    assert jobs.resume(run) == "running"
    status = _wait(run, lambda s: s.get("state") == "completed" and s.get("epoch") == 3)
    assert read_metrics(run)["epoch"].tolist() == [1, 2, 3]


def test_batchnorm_statistics_span_about_an_epoch_whatever_the_dataset_size(tmp_path: Path) -> None:
    """A network's own BatchNorm momentum counts batches: MobileNetV2's 0.999 left its statistics 95% ImageNet's after six
    epochs of the demo set, and validation, checkpoints and predictions read those statistics. The span is one epoch
    (at least 10 batches), only ever shortened, kept in the saved model (a resumed run keeps it), and 0 keeps the
    network's own."""
    import keras
    import numpy as np

    from core.models import all_layers, build_model
    from core.train import batchnorm_momentum, follow_batchnorm

    assert batchnorm_momentum(1, 131) == pytest.approx(1 - 1 / 131)
    assert batchnorm_momentum(1, 3) == pytest.approx(0.9) and batchnorm_momentum(2, 50) == pytest.approx(0.99)
    rng = np.random.default_rng(0)
    x, y = rng.normal(5.0, 1.0, (160, 4)).astype("float32"), rng.integers(0, 2, (160, 1)).astype("float32")

    def moving_mean_after_an_epoch(own: float, epochs: float) -> tuple[float, float | None]:
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.BatchNormalization(momentum=own, name="bn")(inputs)))
        changed = follow_batchnorm(model, TrainConfig(batchnorm_epochs=epochs), steps_per_epoch=10)
        model.compile("sgd", "mse")
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)  # 10 batches
        return float(model.get_layer("bn").moving_mean.numpy().mean()), changed

    followed, changed = moving_mean_after_an_epoch(0.999, 1)
    assert changed == pytest.approx(0.9) and followed > 3  # 5 x (1 - 0.9^10) = 3.3: the statistics reached the data
    stale, changed = moving_mean_after_an_epoch(0.999, 0)
    assert changed is None and stale < 0.1  # 5 x (1 - 0.999^10) = 0.05: still the initial statistics
    assert moving_mean_after_an_epoch(0.5, 1)[1] is None  # a faster momentum is never slowed down

    backbone = build_model(ModelConfig(name="mobilenetv2", image_size=32, weights="none", alpha=0.35, freeze="full"))
    assert follow_batchnorm(backbone, TrainConfig(), steps_per_epoch=8) == pytest.approx(0.9)
    norms = [layer for layer in all_layers(backbone) if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 52 and [layer.momentum for layer in norms] == pytest.approx([0.9] * 52)  # inside the nested backbone too
    # a job: ResNet-18's BatchNorm (Keras' 0.99: 100 batches, 6-7 epochs of the demo set at batch 16) is saved
    # following about one epoch, and the log says so
    from core.train import run_job

    config = TrainConfig.from_dict(_config(epochs=1))
    run = create_run(replace(config, model=replace(config.model, name="resnet18")).to_dict(), tmp_path)
    assert run_job(run, verbose=0) == "completed"
    saved = [layer for layer in all_layers(keras.saving.load_model(run / "best.keras")) if isinstance(layer, keras.layers.BatchNormalization)]
    assert len({layer.momentum for layer in saved}) == 1 and 0.9 <= saved[0].momentum < 0.99  # kept: a resumed run keeps it
    assert f"(momentum {saved[0].momentum:.4f}, about 1 epoch)" in (run / "log.txt").read_text()


def test_a_run_configured_before_the_batchnorm_span_reads_as_trained_without_it(tmp_path: Path) -> None:
    """Runs made before `batchnorm_epochs` existed trained with the network's own momentum: their config reads it as 0,
    so Compare runs says they differ from a run of today (1), and a queued one trains as it was configured."""
    from core.runs import settings_that_differ

    new = TrainConfig().to_dict()
    assert TrainConfig.from_dict(new).batchnorm_epochs == 1.0
    older = {k: v for k, v in new.items() if k != "batchnorm_epochs"}
    assert TrainConfig.from_dict(older).batchnorm_epochs == 0.0
    runs = {}
    for name, config in (("older", older), ("new", new)):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        (runs[name] / "config.json").write_text(json.dumps(config))
    differ = settings_that_differ(runs)
    assert differ.loc["batchnorm_epochs"].tolist() == [0.0, 1.0]


def test_a_reproducible_training_gives_the_same_weights_twice_and_leaves_the_process_as_it_was(tmp_path: Path) -> None:
    """Without op determinism two same-seed SmallNet trainings here differed by up to 0.025 in a weight (the augmentation
    runs in parallel input stages that draw from one seed state): `deterministic` is what makes a seed name a model."""
    import keras
    import numpy as np
    from tensorflow.python.framework import config as tf_framework_config

    from core.train import run_job

    weights = []
    for _ in range(2):
        run = create_run(_config(epochs=2, size=48, seed=3, deterministic=True), tmp_path)
        assert run_job(run, verbose=0) == "completed", read_status(run)
        assert not tf_framework_config.is_op_determinism_enabled()  # the next job in this process is not slowed by it
        model = keras.saving.load_model(run / "last.keras", compile=False, safe_mode=False)
        weights.append(np.concatenate([w.ravel() for w in model.get_weights()]))
    assert np.array_equal(weights[0], weights[1]), f"largest difference {np.abs(weights[0] - weights[1]).max()}"


def test_sigkill_is_interrupted_and_resume_finishes(tmp_path: Path) -> None:
    run = create_run(_config(epochs=4, size=64, reduce_lr_patience=0), tmp_path)
    request(run, lr=3e-4)  # a learning rate set from the page must survive the crash
    jobs.start(run)
    status = _wait(run, lambda s: s.get("epoch", 0) >= 1 and s.get("state") == "running")
    os.kill(int(status["pid"]), signal.SIGKILL)
    deadline = time.time() + 10
    while effective_state(read_status(run)) != "interrupted" and time.time() < deadline:
        time.sleep(0.1)
    assert effective_state(read_status(run)) == "interrupted"
    assert list_runs(tmp_path).iloc[0]["state"] == "interrupted" and latest_run(tmp_path) == (run.name, "interrupted")
    json.loads((run / "status.json").read_text())  # nothing half-written
    resumed_from = json.loads((run / "last.json").read_text())["epoch"]
    assert resumed_from >= 1
    assert jobs.resume(run) == "running"
    status = _wait(run, _done)
    assert status["state"] == "completed" and status["epoch"] == 4
    assert read_metrics(run)["epoch"].tolist() == [1, 2, 3, 4]
    assert read_metrics(run)["lr"].tolist() == pytest.approx([3e-4] * 4)  # the optimizer state came back with last.keras
    assert f"epoch {resumed_from + 1}/4" in (run / "log.txt").read_text()
    for path in run.rglob("*"):  # no file in the run folder is corrupt
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".keras":
            assert zipfile.is_zipfile(path)


def test_extend_and_stop_after_epoch_requests(tmp_path: Path) -> None:
    extended = create_run(_config(epochs=2), tmp_path)
    request(extended, extend=1)
    jobs.start(extended)
    status = _wait(extended, _done)
    assert status["state"] == "completed" and status["epoch"] == 3 and status["epochs"] == 3

    stopped = create_run(_config(epochs=5), tmp_path)
    request(stopped, stop="after_epoch", lr=5e-4)
    jobs.start(stopped)
    status = _wait(stopped, _done)
    assert status["state"] == "stopped" and status["epoch"] == 1
    assert read_metrics(stopped)["lr"].iloc[0] == pytest.approx(5e-4)


def test_a_job_process_that_cannot_be_made_leaves_the_run_failed_and_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, the run stayed claimed and queued: no Resume (queued), and the queue skipped it (claimed), for ever."""
    from core.errors import MedImageError

    run = create_run(_config(epochs=1), tmp_path)
    queued = create_run(_config(epochs=1), tmp_path)

    def no_process(run: Path):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(jobs, "_spawn", no_process)
    with pytest.raises(MedImageError, match="could not be started .*Resource temporarily unavailable"):
        jobs.start(run)
    status = read_status(run)
    assert status["state"] == "failed" and "Resume the run" in status["message"] and not (run / ".claimed").exists()
    assert jobs.resume_refusal(run) == ""
    assert jobs.start_next_queued(tmp_path) is None  # a job handing its slot on is not broken by it
    assert read_status(queued)["state"] == "failed"
    started = []
    monkeypatch.setattr(jobs, "_spawn", started.append)  # processes again
    trained = create_run(_config(epochs=1), tmp_path)  # a model but no last.keras: refused, and no extension left pending
    (trained / "final.keras").write_bytes(b"")
    with pytest.raises(MedImageError, match="no last.keras"):
        jobs.resume(trained, extend=2)
    assert not (trained / "control.json").exists() and started == []
    assert jobs.resume(run) == "running" and started == [run] and read_status(run)["state"] == "queued"


def test_concurrent_starts_get_two_runs_and_the_queue_waits(tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: create_run(_config(epochs=2), tmp_path), range(2)))
    assert runs[0] != runs[1] and all((r / "config.json").exists() for r in runs)
    assert jobs.start(runs[0], max_running=1) == "running"
    assert jobs.start(runs[1], max_running=1) == "queued"
    assert read_status(runs[1])["state"] == "queued"
    _wait(runs[0], _done)
    status = _wait(runs[1], _done)  # the first job hands its slot to the queued one as it ends
    assert status["state"] == "completed"


def test_a_job_trains_and_resumes_on_two_replicas(tmp_path: Path) -> None:
    """The several-GPU path without GPUs: the CPU split into two logical devices and a MirroredStrategy
    over them (what distribution_strategy() returns with two GPUs). Build, compile, fit, checkpoint,
    and resume from last.keras inside the strategy's scope, with each batch split across replicas."""
    run = create_run(_config(epochs=1), tmp_path)
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
import core.train as train
from core.runs import request
train.distribution_strategy = lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
run = Path({str(run)!r})
print("STATE", train.run_job(run, verbose=0))
request(run, extend=1)
print("STATE", train.run_job(run, verbose=0))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert [line for line in result.stdout.splitlines() if line.startswith("STATE")] == ["STATE completed"] * 2, result.stderr[-3000:]
    status = read_status(run)
    assert status["replicas"] == 2 and status["epoch"] == 2
    assert read_metrics(run)["epoch"].tolist() == [1, 2]


def test_cli_train_and_runs_json(tmp_path: Path) -> None:
    env = {**os.environ, "MEDIMAGE_MODELS_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "core", "train", "--epochs", "1", "--image-size", "32", "--json"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["state"] == "completed" and Path(out["run"]).parent == tmp_path
    listed = subprocess.run([sys.executable, "-m", "core", "runs", "--json"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(listed.stdout)["runs"][0]["state"] == "completed"


def test_corrupt_status_is_listed_with_its_problem(tmp_path: Path) -> None:
    run = create_run(_config(), tmp_path)
    (run / "status.json").write_text('{"state": "runn')
    row = list_runs(tmp_path).iloc[0]
    assert row["state"] == "unknown" and "unreadable" in row["message"]
    (run / "metrics.csv").write_bytes(b'epoch,loss\n1,0.5\n2,"0.4\n\x00\x00')
    assert "metrics.csv is unreadable" in list_runs(tmp_path).iloc[0]["message"]
    (run / "config.json").write_text("{")
    assert "config.json is unreadable" in list_runs(tmp_path).iloc[0]["message"]


def test_disk_full_fails_the_job_with_a_clear_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from core import train

    def full(model, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train, "save_model_atomic", full)
    run = create_run(_config(epochs=1), tmp_path)
    assert train.run_job(run, verbose=0) == "failed"
    status = read_status(run)
    assert status["state"] == "failed" and "No space left on device" in status["message"]
    assert "No space left" in (run / "error.txt").read_text()


def test_unwritable_models_folder_is_a_clear_message(tmp_path: Path) -> None:
    from core.errors import MedImageError

    blocker = tmp_path / "models"
    blocker.write_text("a file where the models folder should be")
    with pytest.raises(MedImageError, match="Cannot create a run folder.*MEDIMAGE_MODELS_DIR"):
        create_run(_config(), blocker)


def test_default_recipe_learns_the_demo_set(tmp_path: Path) -> None:
    """The Train page's custom defaults (SmallNet, 128 px, augmentation, class weights) must learn the demo set."""
    from core.train import run_job

    config = TrainConfig(data="demo", epochs=12, early_stopping_patience=0)
    run = create_run(config.to_dict(), tmp_path)
    assert run_job(run, verbose=0) == "completed"
    assert read_metrics(run)["val_accuracy"].max() >= 0.9


def test_mixed_precision_job_keeps_float32_where_it_matters(tmp_path: Path) -> None:
    """"on" without a GPU trains in bfloat16 (emulated where the CPU lacks it: slower, same results); the
    equalisation and the output stay float32, the saved model loads and predicts, and the process's
    global policy is restored for whatever runs next (Evaluate, Predict, other tests)."""
    import keras
    import numpy as np

    from core.train import run_job

    config = TrainConfig.from_dict(_config(epochs=1, size=48, mixed_precision="on"))
    config = TrainConfig.from_dict({**config.to_dict(), "model": {**config.model.to_dict(), "name": "xraynet", "intensity": "equalize"}})
    run = create_run(config.to_dict(), tmp_path)
    assert run_job(run, verbose=0) == "completed", read_status(run)
    assert read_status(run)["precision"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    model = keras.saving.load_model(run / "best.keras", safe_mode=True)
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert policies["intensity"] == "float32" and policies["prediction"] == "float32"
    assert policies["conv1"] == "mixed_bfloat16"
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 1)).astype(np.float32)
    scores = model.predict(images, verbose=0)
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    from core.gradcam import GradCam

    explanation = GradCam(model).explain(images)  # Grad-CAM through bfloat16 features and gradients
    np.testing.assert_allclose(explanation.probabilities, scores, atol=1e-6)
    assert np.isfinite(explanation.heatmaps).all() and explanation.heatmaps.max() <= 1


def test_early_stopping_waits_for_its_start_epoch(tmp_path: Path) -> None:
    """With a zero learning rate val_loss never improves: patience 1 stops after epoch 2, unless early
    stopping only starts watching at epoch 4 (the recipe's guard against its jumpy first epochs)."""
    from core.train import run_job

    for start, epochs in ((0, [1, 2]), (3, [1, 2, 3, 4])):
        run = create_run(_config(epochs=4, learning_rate=0.0, early_stopping_patience=1, early_stopping_start=start,
                                 reduce_lr_patience=0), tmp_path)
        assert run_job(run, verbose=0) == "completed"
        assert read_metrics(run)["epoch"].tolist() == epochs, start


def test_weight_average_is_what_checkpoints_hold_and_survives_a_stop(tmp_path: Path) -> None:
    """With an average so slow it barely leaves the initial weights, every saved model must hold it, not the trained
    weights; and a run stopped after epoch 1 and resumed must go on averaging the raw weights (a resume that swapped
    wrongly would restart from the average and leave the epoch-1 weights as its 'average')."""
    import keras
    import numpy as np

    from core.models import build_model
    from core.train import TrainConfig, run_job

    def moved(run: Path, name: str) -> float:
        keras.utils.set_random_seed(0)  # the job's seed: the same initial weights
        start = build_model(TrainConfig.from_dict(_config()).model)
        saved = keras.saving.load_model(run / name)
        return max(float(np.abs(a - b).max()) for a, b in zip(saved.trainable_weights, start.trainable_weights, strict=True))

    plain = create_run(_config(epochs=1, mixed_precision="off", tensorboard=False), tmp_path)
    assert run_job(plain, verbose=0) == "completed"
    assert moved(plain, "best.keras") > 0.01
    averaged = create_run(_config(epochs=3, ema_epochs=1000, mixed_precision="off", tensorboard=False), tmp_path)
    request(averaged, stop="after_epoch")
    assert run_job(averaged, verbose=0) == "stopped"
    assert read_status(averaged)["epoch"] == 1
    assert run_job(averaged, verbose=0) == "completed"
    assert read_metrics(averaged)["epoch"].tolist() == [1, 2, 3]
    for name in ("best.keras", "last.keras", "final.keras"):
        assert moved(averaged, name) < 0.003, name


def test_stop_now_mid_epoch_keeps_the_work_but_not_the_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"Stop now" after batch 2 of epoch 2: the part epoch is checkpointed, but last.json, the status, metrics.csv and
    the external curves say 1 epoch, so Resume trains epoch 2 again in full (counted as done, the rest of its images
    would be skipped)."""
    import shutil

    from core import train
    from core.dataset import open_dataset
    from core.external import EXTERNAL_FILE
    from core.train import run_job

    site = tmp_path / "site"  # a few demo test images as another hospital's labelled folder
    for _, row in open_dataset("demo").table.query("split == 'test'").groupby("label").head(4).iterrows():
        (site / row["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(row["path"], site / row["label"])
    run = create_run(_config(epochs=3, tensorboard=False, external=(str(site),)), tmp_path / "runs")
    real = train.take_requests

    def stop_in_epoch_2(path: Path) -> dict:  # the page's request, sent as the job's status shows epoch 2's batch 2
        status = read_status(path)
        return {"stop": "now"} if (status.get("epoch"), status.get("batch")) == (1, 2) and status["steps"] > 2 else real(path)

    monkeypatch.setattr(train, "take_requests", stop_in_epoch_2)
    assert run_job(run, verbose=0) == "stopped"
    monkeypatch.setattr(train, "take_requests", real)
    status = read_status(run)
    assert status["epoch"] == 1 and json.loads((run / "last.json").read_text()) == {"epoch": 1}
    assert read_metrics(run)["epoch"].tolist() == [1] and set(read_metrics(run, EXTERNAL_FILE)["epoch"]) == {1}
    assert "stopped at batch 2/" in (run / "log.txt").read_text() and (run / "final.keras").exists()
    assert jobs.resume_refusal(run) == ""
    assert run_job(run, verbose=0) == "completed"
    metrics = read_metrics(run)
    assert metrics["epoch"].tolist() == [1, 2, 3] and read_status(run)["epoch"] == 3
    assert sorted(set(read_metrics(run, EXTERNAL_FILE)["epoch"])) == [1, 2, 3]


def test_stop_now_before_the_first_batch_leaves_a_run_that_resumes(tmp_path: Path) -> None:
    """A stop that reaches the job before it trained anything (pressed while the model was being built) stops it with
    no model written: an untrained final.keras would have made Resume refuse the run for holding a model."""
    from core.train import run_job

    run = create_run(_config(epochs=1, tensorboard=False), tmp_path)
    request(run, stop="now")
    assert run_job(run, verbose=0) == "stopped"
    assert not any((run / name).exists() for name in ("best.keras", "last.keras", "final.keras"))
    assert jobs.resume_refusal(run) == ""
    assert run_job(run, verbose=0) == "completed" and read_metrics(run)["epoch"].tolist() == [1]


def test_settings_that_differ_name_what_changed_between_runs(tmp_path: Path) -> None:
    """Only the settings the runs disagree on, nested ones by their path; an older run without a newer option counts
    as its default (off: no row), an adapted run's lineage shows, and a run without augmentation says "off" instead of
    a row per augmentation strength."""
    import json

    from core.runs import settings_that_differ

    plain = create_run(_config(), tmp_path)
    cosine = create_run(_config(cosine=True, learning_rate=1e-4, size=64), tmp_path)
    older = create_run(_config(), tmp_path)
    config = json.loads((older / "config.json").read_text())
    del config["cutmix"], config["model"]["crop"]
    config["augment"] = None
    config["adapted_from"] = plain.name
    (older / "config.json").write_text(json.dumps(config))
    table = settings_that_differ({"plain": plain, "cosine": cosine})
    assert set(table.index) == {"cosine", "learning_rate", "model.image_size", "pipeline.image_size"}
    assert table.loc["cosine"].tolist() == [False, True] and table.loc["learning_rate", "cosine"] == 1e-4
    table = settings_that_differ({"plain": plain, "older": older})
    assert "cutmix" not in table.index and "model.crop" not in table.index and "learning_rate" not in table.index
    assert table.loc["augment"].tolist() == ["", "off"] and table.loc["augment.rotation"].tolist() == [0.03, ""]
    assert table.loc["adapted_from"].tolist() == ["", plain.name]
    assert settings_that_differ({"plain": plain}).empty and settings_that_differ({}).empty


def test_runs_trained_alike_but_for_the_seed_are_summarised_over_seeds(tmp_path: Path) -> None:
    """Variants are compared by their mean over seeds with the seeds' spread beside it: runs differing in the seed
    alone form a group named by what sets it apart; a variant with one run has no spread and is left out."""
    import pandas as pd

    from core.runs import over_seeds, settings_that_differ

    runs = {"a0": _config(seed=0), "a1": _config(seed=1), "b0": _config(seed=0, cosine=True), "b1": _config(seed=1, cosine=True),
            "c0": _config(seed=0, mixup=0.2)}
    folders = {label: create_run(config, tmp_path) for label, config in runs.items()}
    differ = settings_that_differ(folders)
    scores = pd.DataFrame({"accuracy": [0.90, 0.94, 0.93, 0.93, 0.99], "auc": [0.96, 0.98, 0.97, 0.97, 0.99]}, index=list(runs))
    table = over_seeds(scores, differ)
    assert list(table.index) == ["cosine=False; mixup=0.0", "cosine=True; mixup=0.0"]
    plain = table.loc["cosine=False; mixup=0.0"]
    assert plain["runs"] == 2 and plain["seeds"] == "0, 1"
    assert plain["accuracy"] == "0.920 ± 0.028" and plain["auc"] == "0.970 ± 0.014"
    assert table.loc["cosine=True; mixup=0.0", "accuracy"] == "0.930 ± 0.000"
    # the same settings twice over (seed included), or one run each: nothing, or one group named so
    same = settings_that_differ({"a0": folders["a0"], "again": create_run(_config(seed=0), tmp_path)})
    assert over_seeds(scores.rename(index={"a1": "again"}), same).index.tolist() == ["same settings"]
    assert over_seeds(scores, settings_that_differ({"a0": folders["a0"], "c0": folders["c0"]})).empty


def test_dwell_and_step_decay_callbacks() -> None:
    import keras
    import numpy as np

    from core.train import Dwell, step_decay

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    dwell = Dwell(0.5)
    dwell.set_model(model)
    dwell.on_epoch_end(0, {"val_loss": 1.0})
    best = [w.copy() for w in model.get_weights()]
    model.set_weights([np.ones_like(w) for w in best])
    dwell.on_epoch_end(1, {"val_loss": 2.0})  # worse: back to the best weights, half the LR
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), best, strict=True))
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    schedule = step_decay(2, 0.1).schedule
    assert [schedule(e, 1.0) for e in range(5)] == [1.0, 1.0, pytest.approx(0.1), 1.0, pytest.approx(0.1)]


def test_kfold_in_one_job(tmp_path: Path) -> None:
    from core.train import run_job

    run = create_run(_config(epochs=1, folds=2), tmp_path)
    assert run_job(run, verbose=0) == "completed"
    for k in (1, 2):
        assert (run / f"fold-{k}" / "best.keras").exists()
        assert read_status(run / f"fold-{k}")["state"] == "completed"
    cv = read_metrics(run, "cv.csv")
    assert cv["fold"].tolist() == [1, 2] and "val_loss" in cv
    status = read_status(run)
    assert status["state"] == "completed" and "cv_val_loss" in status
    assert len(list_runs(tmp_path)) == 1  # folds live inside their parent run

    import numpy as np

    from core import novelty
    from core.dataset import open_dataset
    from core.evaluate import predict_table

    # the ensemble's check of unusual images reads its first fold's features (each fold's job measured its own)
    reference = novelty.load(run)
    assert reference is not None and novelty.path(run) == run / "fold-1" / novelty.FILE and "of fold 1" in reference.source
    test = open_dataset("demo").table.query("split == 'test'")
    checked = predict_table(run, test, "test")
    (run / "fold-1" / novelty.FILE).rename(tmp_path / novelty.FILE)
    plain = predict_table(run, test, "test-plain")  # unchecked: the ensemble's own average, every fold model
    assert "unusual" in checked and "unusual" not in plain
    assert np.allclose(checked["p_PNEUMONIA"], plain["p_PNEUMONIA"], atol=1e-6)  # the check changes no prediction


def test_overfit_preset_memorises_and_lr_sweep(tmp_path: Path) -> None:
    from core.train import create_run_with_rows, lr_sweep_configs, overfit_preset, run_job

    base = TrainConfig.from_dict(_config(size=48))
    config, rows = overfit_preset("demo", per_class=4, epochs=40, base=base)
    assert config.augment is None and len(rows) == 16 and set(rows["split"]) == {"train", "val"}
    run = create_run_with_rows(config, rows, tmp_path)
    assert run_job(run, verbose=0) == "completed"
    assert read_metrics(run)["accuracy"].max() == 1.0
    sweep = lr_sweep_configs(base)
    assert [c.learning_rate for c in sweep] == [0.1, 0.01, 0.001] and all(c.epochs == 3 for c in sweep)


def test_ordinal_head_trains(tmp_path: Path) -> None:
    from dataclasses import replace

    from core.train import run_job

    base = TrainConfig.from_dict(_config(epochs=1))
    config = replace(base, model=replace(base.model, head="ordinal"))
    run = create_run(config.to_dict(), tmp_path)
    assert run_job(run, verbose=0) == "completed", read_status(run)
    assert {"mae", "val_mae", "loss"} <= set(read_metrics(run).columns)


def test_make_config_matches_pipeline_to_model() -> None:
    from core.train import make_config

    scratch = make_config("demo", "smallnet", 96, weights="imagenet")
    assert scratch.model.channels == scratch.pipeline.channels == 1 and scratch.model.weights == "none"
    backbone = make_config("demo", "vgg16", 64, weights="imagenet", freeze="full", augment=False, folds=3)
    assert backbone.model.channels == backbone.pipeline.channels == 3 and backbone.model.weights == "imagenet"
    assert backbone.model.freeze == "full" and backbone.augment is None and backbone.folds == 3
    assert backbone.pipeline.image_size == backbone.model.image_size == 64


def test_a_fine_tuning_phase_is_refused_where_it_cannot_do_what_it_says(tmp_path: Path) -> None:
    """A second phase unfreezes a backbone after feature extraction: on a backbone trained whole it used to cut it back
    to its last layers at the switch, and on a scratch model it only changed the LR. Refused before a run exists, and by
    the job for a hand-edited config."""
    from core.errors import MedImageError
    from core.train import make_config, run_job

    lp_ft = make_config("demo", "mobilenetv2", 32, fine_tune_epochs=2, fine_tune_layers=0)
    assert lp_ft.model.freeze == "feature_extraction" and lp_ft.fine_tune_epochs == 2 and lp_ft.model.fine_tune_layers == 0
    with pytest.raises(MedImageError, match="Fine-tuning follows feature extraction"):
        make_config("demo", "mobilenetv2", 32, freeze="full", fine_tune_epochs=2)
    with pytest.raises(MedImageError, match="second phase for a pretrained backbone; smallnet"):
        make_config("demo", "smallnet", 32, fine_tune_epochs=2)
    with pytest.raises(MedImageError, match="must be 0 \\(all\\) or more"):
        make_config("demo", "mobilenetv2", 32, fine_tune_layers=-3)
    edited = lp_ft.to_dict()
    edited["model"]["freeze"] = "full"
    run = create_run(edited, tmp_path)
    assert run_job(run, verbose=0) == "failed" and "Fine-tuning follows feature extraction" in read_status(run)["message"]


def test_input_streams_from_disk_when_decoded_images_would_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import pipeline, train

    big = pipeline.cache_plan(100_000, PipelineConfig(image_size=224, channels=3), available=16 * 2**30)
    assert not big.in_memory and big.decoded_bytes == 100_000 * 224 * 224 * 3 and "streamed from disk" in big.message()
    small = pipeline.cache_plan(5_216, PipelineConfig(image_size=128, channels=1), available=16 * 2**30)
    assert small.in_memory and "kept in memory" in small.message()
    assert not pipeline.cache_plan(10, PipelineConfig(cache=False), available=16 * 2**30).in_memory  # the user's choice wins
    assert pipeline.available_memory() > 0

    made: list[bool] = []
    real = train.make_dataset

    def recording(table, classes, config, *args, **kwargs):
        made.append(config.cache)
        return real(table, classes, config, *args, **kwargs)

    monkeypatch.setattr(train, "make_dataset", recording)
    monkeypatch.setattr(pipeline, "available_memory", lambda: 2**10)  # 1 KiB free: nothing fits
    run = create_run(_config(epochs=1), tmp_path)
    assert train.run_job(run, verbose=0) == "completed"
    assert made == [False, False]  # train and validation both stream
    assert "input: streamed from disk every epoch" in (run / "log.txt").read_text()


@pytest.mark.parametrize(("kind", "name"), [("mixup", "Mixup"), ("cutmix", "CutMix")])
def test_blending_trains_a_binary_head_and_refuses_another(tmp_path: Path, kind: str, name: str) -> None:
    """A mixup or CutMix run trains and validates on whole images (val accuracy is a fraction of images, targets 0/1); a
    head whose targets cannot be blended, or both blends at once, fail with a message, not a traceback."""
    from core.train import run_job

    run = create_run(_config(epochs=1, **{kind: 0.2}, mixed_precision="off", tensorboard=False), tmp_path)
    assert run_job(run, verbose=0) == "completed", read_status(run)
    metrics = read_metrics(run)
    assert metrics["loss"].notna().all() and 0.0 <= float(metrics["val_accuracy"].iloc[0]) <= 1.0
    config = _config(epochs=1, **{kind: 0.2}, tensorboard=False)
    config["model"]["head"] = "ordinal"
    ordinal = create_run(config, tmp_path)
    assert run_job(ordinal, verbose=0) == "failed"
    assert f"{name} is for a binary head" in read_status(ordinal)["message"]
    both = create_run(_config(epochs=1, mixup=0.2, cutmix=1.0, tensorboard=False), tmp_path)
    assert run_job(both, verbose=0) == "failed"
    assert "Choose mixup or CutMix, not both" in read_status(both)["message"]


def test_a_cosine_run_trains_along_the_curve_instead_of_the_plateau_halving(tmp_path: Path) -> None:
    """The job wires the schedule in: 3 epochs at LR 1e-3 record 1e-3, 7.5e-4, 2.5e-4, with the plateau halving (patience
    1, which would fire on any stalled epoch) and a step decay left out, and its log says how it trains."""
    from core.train import run_job

    run = create_run(_config(epochs=3, cosine=True, reduce_lr_patience=1, step_decay_every=1, early_stopping_patience=0,
                             tensorboard=False), tmp_path)
    assert run_job(run, verbose=0) == "completed", read_status(run)
    assert read_metrics(run)["lr"].tolist() == pytest.approx([1e-3, 7.5e-4, 2.5e-4], rel=1e-5)  # nor the step decay
    assert "training: Adam, learning rate 0.001 (following half a cosine down over the epochs)" in (run / "log.txt").read_text()


def test_cosine_schedule_follows_the_curve_and_what_the_page_does_to_the_run() -> None:
    """The LR slides along half a cosine over the planned epochs; a LR typed mid-run is where the curve continues from,
    an extension stretches the rest, and a resumed run (its LR restored with the optimizer) picks up where it was."""
    import math

    import keras

    from core.train import CosineDecay

    class Plan:  # the recorder's planned epochs, which "extend" raises
        epochs = 4

    def run_epochs(callback: CosineDecay, epochs: range, lr: float | None = None) -> list[float]:
        if lr is not None:
            callback.model.optimizer.learning_rate.assign(lr)
        seen = []
        for epoch in epochs:
            callback.on_epoch_begin(epoch)
            seen.append(float(callback.model.optimizer.learning_rate))
        return seen

    def fresh() -> CosineDecay:
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        callback = CosineDecay(Plan)
        callback.set_model(model)
        return callback

    Plan.epochs = 4
    curve = [1e-3 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert run_epochs(fresh(), range(4)) == pytest.approx(curve)
    resumed = run_epochs(fresh(), range(2, 4), lr=curve[1])  # crashed after epoch 2: last.keras holds epoch 2's LR
    assert resumed == pytest.approx(curve[2:])
    typed = fresh()
    run_epochs(typed, range(2))
    assert run_epochs(typed, range(2, 4), lr=1e-2)[-1] == pytest.approx(1e-2 * curve[3] / curve[1])  # 10x typed: 10x the rest
    Plan.epochs = 8  # extended after epoch 2 to 8 epochs: the rest follows the longer curve, never reaching 0 early
    stretched = run_epochs(fresh(), range(2, 8), lr=curve[1])
    assert all(a > b > 0 for a, b in zip(stretched[:-1], stretched[1:], strict=True)) and stretched[-1] < 0.05 * curve[1]


def test_a_checkpoint_whose_head_cannot_learn_the_classes_is_not_resumed(tmp_path: Path) -> None:
    """A run checkpointed with one sigmoid unit on a 3-class dataset (before heads were fitted to the classes) must
    not be resumed as if it were a softmax: its status says to start a new run, and the checkpoint stays."""
    import keras

    from core.train import run_job
    from tests.conftest import make_separable_classes

    data = make_separable_classes(tmp_path / "ds", {"a": 40, "b": 120, "c": 200})
    config = _config(epochs=2, tensorboard=False)
    config["data"] = str(data)
    run = create_run(config, tmp_path / "runs")
    inputs = keras.Input((32, 32, 1))
    keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs))).save(run / "last.keras")
    assert run_job(run, verbose=0) == "failed"
    assert "cannot learn this dataset's 3 classes" in read_status(run)["message"]
    assert (run / "last.keras").exists() and json.loads((run / "config.json").read_text())["model"]["head"] == "binary"


def test_a_run_with_a_model_but_nothing_to_continue_is_not_resumed(tmp_path: Path) -> None:
    """Resuming a run without last.keras starts a fresh model at epoch 0 and overwrites best.keras: an adapted run (made
    by `adapt`, never trained) and a run whose last checkpoint is gone are refused, the folder untouched."""
    from core.errors import MedImageError

    adapted = create_run(_config(epochs=2), tmp_path)
    write_status(adapted, state="completed", parent="20260101-000000-smallnet-abcd", epoch=2, epochs=2)
    (adapted / "best.keras").write_bytes(b"the adapted model")
    lost = create_run(_config(epochs=2), tmp_path)
    write_status(lost, state="stopped", epoch=1, epochs=2)
    (lost / "best.keras").write_bytes(b"a trained model")
    fresh = create_run(_config(epochs=2), tmp_path)
    assert "made by adapting 20260101-000000-smallnet-abcd" in jobs.resume_refusal(adapted)
    assert "no last.keras to continue from" in jobs.resume_refusal(lost)
    assert jobs.resume_refusal(fresh) == ""  # nothing to overwrite: a stopped run before its first epoch starts over
    for run in (adapted, lost):
        before, model = read_status(run), (run / "best.keras").read_bytes()
        with pytest.raises(MedImageError):
            jobs.resume(run)
        assert read_status(run) == before and (run / "best.keras").read_bytes() == model and not (run / ".claimed").exists()
