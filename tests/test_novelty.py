"""The check of unusual images (core.novelty): distances in the model's own features, against its validation images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from core import novelty
from core.errors import MedImageError

ROOT = Path(__file__).resolve().parents[1]


def test_a_reference_flags_what_lies_outside_and_keeps_the_share_it_promises() -> None:
    rng = np.random.default_rng(0)
    means = np.zeros((2, 16))
    means[1, :4] = 3.0

    def draw(n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n)
        return means[labels] + rng.normal(0, 1, (n, 16)) + shift, labels

    fit_x, fit_y = draw(600)
    compare, _ = draw(300)
    reference = novelty.fit(fit_x, np.array(["A", "B"])[fit_y], compare, "its own validation images")
    assert reference.means.shape == (2, 16) and np.all(np.diff(reference.compare) >= 0)
    same, _ = draw(4000)
    flagged = reference.unusual(reference.distances(same)).mean()
    assert flagged == pytest.approx(reference.expected_share, abs=0.01)  # ~1% of images like the validation images
    far, _ = draw(200, shift=2.0)
    assert reference.unusual(reference.distances(far)).mean() > 0.9
    shares = reference.share_as_far(reference.distances(far))
    assert np.all((shares > 0) & (shares <= 1))
    assert "more than chance gives: these images differ" in novelty.site_summary(reference, reference.unusual(reference.distances(far)))
    assert "no more than chance" in novelty.site_summary(reference, reference.unusual(reference.distances(same[:300])))
    assert novelty.caution(reference, float(reference.compare[0])) == ""
    words = novelty.caution(reference, float(reference.distances(far[:1])[0] + 100))
    assert words.startswith("Unusual for this model") and "its own validation images" in words
    with pytest.raises(MedImageError, match="Too few images"):
        novelty.fit(fit_x[:1], np.array(["A"]), compare, "")


def test_a_small_reference_does_not_call_images_from_its_own_source_shifted() -> None:
    """With few comparison images the cutoff itself is uncertain: the site test must hold its 1% for sets drawn like
    them (a binomial test at the expected share called 15% of such sets shifted) and still see a real shift."""
    rng = np.random.default_rng(1)
    reference = novelty.Reference(np.zeros((1, 1)), np.eye(1), np.zeros(1), "its own validation images")
    alarms = 0
    for _ in range(300):
        reference.compare = np.sort(np.abs(rng.normal(size=44)))  # a small set's 44 validation images
        alarms += novelty.site_shifted(reference, np.abs(rng.normal(size=300)) > reference.cutoff)
    assert alarms / 300 <= 0.02, alarms
    assert novelty.site_shifted(reference, np.abs(rng.normal(size=300)) + 1.5 > reference.cutoff)
    assert not novelty.site_shifted(reference, np.zeros(0, bool))


def test_a_share_above_chance_that_too_few_images_cannot_confirm_is_not_called_usual() -> None:
    """6 of 44 images unusual where ~2% is expected: chance gives that in about 1.3% of same-source sets, so the test does
    not call the set shifted, but neither is it "no more than chance" (what the sentence said before). 1 of 44 (chance:
    50%) is."""
    reference = novelty.Reference(np.zeros((1, 1)), np.eye(1), np.linspace(0.0, 1.0, 44), "its own validation images")
    unusual = np.arange(44) < 6
    p_value = novelty.site_p_value(reference, unusual)
    assert p_value == pytest.approx(0.0130, abs=5e-4) and not novelty.site_shifted(reference, unusual)
    words = novelty.site_summary(reference, unusual)
    assert "no more than chance" not in words and "too few to tell from chance" in words and "1.3%" in words, words
    assert novelty.site_shifted(reference, np.arange(44) < 7)  # one more and chance gives it 0.6% of the time
    for count, size in ((1, 45), (1, 44), (3, 44)):  # at or near the ~2% expected: chance gives it often (>= 12%)
        assert "no more than chance" in novelty.site_summary(reference, np.arange(size) < count), (count, size)
    assert novelty.site_p_value(reference, np.zeros(10, bool)) == 1.0


def test_a_model_without_a_final_dense_layer_has_no_features_to_measure() -> None:
    import keras

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs)))
    with pytest.raises(MedImageError, match="Dense"):
        novelty.feature_model(model)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.runs import create_run
    from core.train import make_config, run_job

    config = make_config("demo", "xraynet", image_size=96, epochs=8, tensorboard=False)
    run = create_run(config.to_dict(), tmp_path_factory.mktemp("novelty-runs"))
    assert run_job(run, verbose=0) == "completed"
    return run


@pytest.mark.slow
def test_a_finished_run_knows_its_own_images_from_another_scanners(trained: Path, tmp_path: Path) -> None:
    """The job measures the reference when it finishes; the test split (same hospital, unseen) is usual, a shifted
    scanner's images are not, and Evaluate's table and Predict's rows say which."""
    from test_external_adapt import _shifted_site

    from core.dataset import open_dataset
    from core.evaluate import predict_table
    from core.predict import from_run, predict_files

    assert (trained / novelty.FILE).exists() and not list(trained.glob(".novelty*"))  # written by the job, atomically
    reference = novelty.load(trained)
    assert reference is not None and reference.source == "its own validation images"
    table = open_dataset("demo").table
    test = predict_table(trained, table[table["split"] == "test"], "test")
    # 30 unseen images exchangeable with 44 validation ones: 4+ above all 44 happens 2.4% of the time, 7+ 0.11%
    assert test["unusual"].mean() <= 0.2, test["unusual"].mean()
    (trained / novelty.FILE).rename(tmp_path / novelty.FILE)  # the same split unchecked: the same probabilities
    plain = predict_table(trained, table[table["split"] == "test"], "test-plain")
    (tmp_path / novelty.FILE).rename(trained / novelty.FILE)
    assert "unusual" not in plain and np.allclose(plain.filter(like="p_"), test.filter(like="p_"), atol=1e-6)
    labelled, flat = _shifted_site(tmp_path / "dark", contrast=0.5, offset=0)
    site = predict_table(trained, open_dataset(str(labelled)).table, "external-dark")
    assert site["unusual"].mean() >= 0.8, site["unusual"].mean()
    assert "more than chance gives: these images differ" in novelty.site_summary(reference, site["unusual"].to_numpy())

    flagged = sorted(Path(path).name for path in site.loc[site["unusual"], "path"])[:3]  # >= 80% are, not each one
    files = [flat / name for name in flagged] + [Path(table[table["split"] == "test"]["path"].iloc[0])]
    predictor, calls = from_run(trained), []
    plain_pass = predictor.model.predict_on_batch
    predictor.model.predict_on_batch = lambda batch: calls.append(len(batch)) or plain_pass(batch)
    rows = predict_files(predictor, [(p.name, str(p)) for p in files], novelty=reference)
    assert len(calls) == int(predictor.tta)  # the check's pass gives the scores too; only a mirror view needs another
    assert rows["unusual"].tolist()[:3] == [True, True, True], "Predict and Evaluate disagree on the same images"
    assert rows["caution"].iloc[0].startswith("Unusual for this model")
    unchecked = predict_files(from_run(trained), [(p.name, str(p)) for p in files])  # the check changes no prediction
    assert np.allclose(rows.iloc[:, 2:4].to_numpy(float), unchecked.iloc[:, 2:4].to_numpy(float)) and "unusual" not in unchecked

    (trained / "damaged" / novelty.FILE).parent.mkdir()
    (trained / "damaged" / novelty.FILE).write_bytes(b"not an npz")
    assert novelty.load(trained / "damaged") is None  # a damaged file: unmeasured, not a crash
    os.utime(trained / "best.keras")  # the run trained on (a resume): the stored reference describes an older model
    assert novelty.load(trained) is None
    assert novelty.measure_if_possible(trained) == "" and novelty.load(trained) is not None
    fresh, point = novelty.measure_run(trained), reference.means[:1] + 1.0
    assert np.allclose(novelty.load(trained).distances(point), fresh.distances(point), rtol=1e-5)  # stored in float32


@pytest.mark.slow
def test_an_adapted_runs_usual_is_its_site_and_reads_no_label(trained: Path, tmp_path: Path) -> None:
    from test_external_adapt import _shifted_site

    from core.adapt import adapt_run
    from core.dataset import open_dataset
    from core.evaluate import predict_table

    labelled, flat = _shifted_site(tmp_path / "dark", contrast=0.5, offset=0)
    child = adapt_run(trained, flat, runs_dir=tmp_path / "runs")
    reference = novelty.load(child)
    assert reference is not None and reference.source == "held-out images of the site it was adapted to"
    site = predict_table(child, open_dataset(str(labelled)).table, "external-dark")
    assert site["unusual"].mean() <= 0.1  # the site it was adapted to is now what is usual
    twin = adapt_run(trained, labelled, runs_dir=tmp_path / "runs")  # the same images in class folders: labels unread
    again = novelty.load(twin)
    assert np.allclose(again.means, reference.means) and np.allclose(again.compare, reference.compare)


@pytest.mark.slow
def test_check_tells_a_shifted_site_from_the_training_hospital_from_the_command_line(trained: Path, tmp_path: Path, capsys) -> None:
    import json

    from test_external_adapt import _shifted_site

    from core.cli import main

    _, dark = _shifted_site(tmp_path / "dark", contrast=0.5, offset=0)
    assert main(["check", str(trained), "--images", str(dark), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 88 and result["shifted"] is True and result["unusual"] >= 70
    assert len(result["unusual_files"]) == result["unusual"] and "more than chance gives" in result["summary"]
    _, mild = _shifted_site(tmp_path / "mild", contrast=0.97, offset=3)  # nearly the training scanner
    assert main(["check", str(trained), "--images", str(mild), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["shifted"] is False and result["share"] <= 0.1, result["summary"]
    assert main(["check", str(trained), "--images", str(tmp_path / "nowhere"), "--json"]) == 2
    assert "is not a folder" in json.loads(capsys.readouterr().out)["error"]
