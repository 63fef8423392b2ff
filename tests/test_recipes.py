"""The default X-ray recipe (issue 7): patient-grouped split, in-model intensity normalisation,
exposure augmentation, threshold tuned on validation and saved, mirror test-time augmentation."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from core.augment import AugmentConfig, build_augmentation
from core.dataset import DEMO, open_dataset
from core.evaluate import predict_table
from core.models import IntensityNorm, ModelConfig, build_model
from core.recipes import RECIPES, create_recipe_run, recipe_config
from core.runs import read_json, read_status
from core.splits import assign_split, grouped_split, has_patient_ids, patient_id, patients_across
from core.train import TrainConfig, run_job
from tests.conftest import CHEST_XRAY


def test_patient_ids_from_kermany_names() -> None:
    assert patient_id("/x/person1000_bacteria_2931.jpeg") == "person1000"
    assert patient_id("person1000_virus_1681.jpeg") == "person1000"
    assert patient_id("IM-0115-0001.jpeg") == "IM-0115"
    assert patient_id("NORMAL2-IM-0927-0001.jpeg") == "NORMAL2-IM-0927"
    assert patient_id("scan_7.png") == "scan_7.png"  # no id: each file is its own group


def test_grouped_split_keeps_patients_together_and_stratifies() -> None:
    rows = [(f"person{p}_bacteria_{i}.jpeg", "PNEUMONIA") for p in range(60) for i in range(p % 4 + 1)]
    rows += [(f"IM-{p:04d}-000{i}.jpeg", "NORMAL") for p in range(50) for i in range(1, 3)]
    table = pd.DataFrame(rows, columns=["path", "label"])
    out = grouped_split(table, seed=3)
    groups = out.assign(group=out["path"].map(patient_id)).groupby("group")["split"].nunique()
    assert (groups == 1).all()
    share = out.groupby("label")["split"].value_counts(normalize=True).unstack()
    assert share["train"].between(0.7, 0.9).all() and share["val"].between(0.04, 0.18).all()
    assert out["split"].tolist() == grouped_split(table, seed=3)["split"].tolist()  # seeded


@pytest.mark.skipif(not CHEST_XRAY.exists(), reason="../shared/data/chest_xray is not here")
def test_chest_xray_default_split_keeps_each_patient_on_one_side() -> None:
    """The public set's file names carry patient ids, so opening it splits by patient: the split by image it used to get
    shared hundreds of patients between train and val (a validation score partly on children it had trained on)."""
    table = open_dataset(str(CHEST_XRAY)).table
    assert has_patient_ids(table) and patients_across(table) == {"train_test": 0, "train_val": 0}
    share = table["split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.70) < 0.02 and abs(share["test"] - 0.15) < 0.02
    by_image = table.assign(split=np.random.default_rng(0).choice(["train", "val", "test"], len(table), p=[0.7, 0.15, 0.15]))
    assert patients_across(by_image)["train_val"] > 100


def test_k_folds_keep_each_patient_in_one_fold() -> None:
    """K-fold CV groups by patient where the names carry ids (StratifiedGroupKFold), and is plain stratified otherwise."""
    from core.splits import fold_indices

    rows = [(f"person{p}_bacteria_{i}.jpeg", "PNEUMONIA") for p in range(60) for i in range(p % 4 + 1)]
    rows += [(f"IM-{p:04d}-000{i}.jpeg", "NORMAL") for p in range(50) for i in range(1, 3)]
    pool = pd.DataFrame(rows, columns=["path", "label"])
    parts = fold_indices(pool, 5, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(pool)))  # every row validated exactly once
    fold_of = pd.Series(0, index=pool.index)
    for k, part in enumerate(parts):
        fold_of.iloc[part] = k
    assert (fold_of.groupby(pool["path"].map(patient_id)).nunique() == 1).all()
    plain = pd.DataFrame({"path": [f"scan_{i}.png" for i in range(50)], "label": ["a", "b"] * 25})
    assert [len(part) for part in fold_indices(plain, 5)] == [10] * 5


def test_only_names_with_shared_patient_ids_group_the_split() -> None:
    """Names without ids (the demo set's) or with one image per id split by image, as before: every class in every split."""
    single = pd.DataFrame({"path": [f"person{i}_virus_1.jpeg" for i in range(30)], "label": ["a", "b", "c"] * 10})
    assert not has_patient_ids(single) and not has_patient_ids(open_dataset(DEMO).table)
    assert (single.pipe(assign_split).groupby("label")["split"].nunique() == 3).all()
    twice = pd.DataFrame({"path": [f"person{i // 2}_virus_{i}.jpeg" for i in range(40)], "label": ["a"] * 20 + ["b"] * 20})
    out = assign_split(twice, seed=1)
    assert has_patient_ids(twice) and patients_across(out) == {"train_test": 0, "train_val": 0}


def test_equalize_is_invariant_to_exposure_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 16, 16, 1)).astype("float32")
    layer = IntensityNorm("equalize")
    brighter = 255.0 * (image / 255.0) ** 0.5  # monotone: same ranks
    a, b = np.asarray(layer(image)), np.asarray(layer(brighter))
    assert np.allclose(a, b) and a.min() > 0 and a.max() == 1.0
    # each pixel -> the share of its image's pixels at or below it, ties included (few grey levels: many ties)
    coarse = np.concatenate([rng.integers(0, 4, (1, 16, 16, 1)), rng.integers(0, 256, (1, 16, 16, 1))]).astype("float32")
    expected = [(row[:, None] >= row[None, :]).mean(axis=1) for row in coarse.reshape(2, -1)]
    assert np.array_equal(np.asarray(layer(coarse)).reshape(2, -1), np.asarray(expected, "float32"))
    standard = np.asarray(IntensityNorm("standardize")(image))
    assert abs(standard.mean()) < 1e-4 and abs(standard.std() - 1) < 1e-2
    with pytest.raises(ValueError):
        IntensityNorm("nonsense")


def test_xraynet_with_equalize_saves_and_loads_in_safe_mode(tmp_path: Path) -> None:
    model = build_model(ModelConfig(name="xraynet", image_size=32, intensity="equalize", dense=()))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 1)).astype("float32")
    assert np.allclose(model.predict_on_batch(x), loaded.predict_on_batch(x), atol=1e-5)


def test_a_backbone_can_equalise_each_image_and_then_ignores_exposure(tmp_path: Path) -> None:
    """A transfer backbone honours the intensity setting (it used to apply only to scratch models): equalised, a
    monotone exposure change gives the same prediction; with the backbone's own preprocessing it does not."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (2, 64, 64, 1)).astype("float32")
    brighter = 255.0 * (image / 255.0) ** 0.5
    outputs = {}
    for intensity in ("rescale", "equalize", "standardize"):
        keras.utils.set_random_seed(0)
        model = build_model(ModelConfig(name="mobilenetv2", image_size=64, channels=1, alpha=0.35, dense=(), intensity=intensity))
        backbone_input = keras.Model(model.inputs, model.get_layer("preprocess").output)  # the head starts at 0.5 for all
        outputs[intensity] = [np.asarray(backbone_input.predict_on_batch(x)) for x in (image, brighter)]
        assert outputs[intensity][0].shape == (2, 64, 64, 3) and -1 <= outputs[intensity][0].min() < outputs[intensity][0].max() <= 1
        if intensity == "equalize":
            model.save(tmp_path / "m.keras")
            loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
            assert np.allclose(loaded.predict_on_batch(brighter), model.predict_on_batch(brighter), atol=1e-5)
    assert np.allclose(*outputs["equalize"], atol=1e-5)
    assert not np.allclose(*outputs["rescale"], atol=1e-3)
    assert not np.allclose(outputs["standardize"][0], outputs["rescale"][0], atol=1e-3)


def test_exposure_augmentation_changes_midtones_within_range() -> None:
    layers = build_augmentation(AugmentConfig(flip="none", rotation=0, translation=0, zoom=0, contrast=0, brightness=0,
                                              gamma=0.5, noise=0.05), seed=0)
    x = np.full((4, 8, 8, 1), 128.0, "float32")
    out = np.asarray(layers(x, training=True))
    assert out.min() >= 0 and out.max() <= 255 and out.std() > 2
    assert np.array_equal(np.asarray(layers(x, training=False)), x)


def test_recipe_configs() -> None:
    assert RECIPES == ("xray", "xray-scratch")
    scratch = recipe_config("xray-scratch", "demo")
    assert scratch.model.name == "xraynet" and scratch.model.weights == "none" and scratch.model.channels == 1
    assert scratch.model.intensity == "equalize" and scratch.tta and scratch.tune_threshold and scratch.label_smoothing == 0.1
    assert scratch.monitor == "val_loss" and scratch.class_weighting and scratch.augment.flip == "horizontal"
    assert TrainConfig.from_dict(scratch.to_dict()) == scratch
    # early stopping cannot end the default run early: it watches from epoch 9 with patience 5
    assert scratch.early_stopping_start + scratch.early_stopping_patience >= scratch.epochs - 1
    default = recipe_config("xray", "demo")  # the whole ImageNet network trains, BatchNorm statistics included
    assert default.model.name == "mobilenetv2" and default.model.weights == "imagenet" and default.model.channels == 3
    assert default.model.freeze == "full" and default.model.image_size == 224 and default.fine_tune_epochs == 0
    assert default.learning_rate == 1e-4 and not default.step_decay_every and default.reduce_lr_patience == 2
    assert default.tta and default.tune_threshold and default.monitor == "val_loss" and default.epochs == 10
    assert default.early_stopping_start + default.early_stopping_patience >= default.epochs - 1
    assert TrainConfig.from_dict(default.to_dict()) == default
    with pytest.raises(ValueError):
        recipe_config("nope", "demo")


@pytest.mark.slow
def test_recipe_run_saves_a_validation_threshold_used_by_predictions(tmp_path: Path) -> None:
    run = create_recipe_run("xray-scratch", "demo", runs_dir=tmp_path, epochs=2, tensorboard=False)
    config = read_json(run / "config.json")
    config["model"]["image_size"] = config["pipeline"]["image_size"] = 48
    (run / "config.json").write_text(__import__("json").dumps(config))
    assert run_job(run, verbose=0) == "completed"
    status = read_status(run)
    assert 0.0 <= status["threshold"] <= 1.0 and "Youden" in status["threshold_source"]
    assert (run / "predictions-val.csv").exists()
    test = open_dataset(DEMO).table.query("split == 'test'")
    with_tta = predict_table(run, test, "t1")
    without = predict_table(run, test, "t2", tta=False)
    assert not np.allclose(with_tta["p_PNEUMONIA"], without["p_PNEUMONIA"])  # the mirror image was averaged in
    expected = np.where(with_tta["p_PNEUMONIA"] >= status["threshold"], "PNEUMONIA", "NORMAL")
    assert (with_tta["predicted"] == expected).all()
