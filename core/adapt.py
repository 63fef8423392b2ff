"""Adapt a trained run to a new site from that site's unlabeled images.

Up to three steps, none of which reads a label or trains a weight:
1. BatchNorm statistics (AdaBN, Li et al. 2016): the moving mean and variance of the BatchNormalization
   layers whose statistics were learned on the training images (all of a scratch model's; of a backbone
   trained in full, the shallow ones: feature maps at >= 1/4 of the input's resolution) are moved from
   the training images' statistics to the site's (see `adabn`). A backbone's deep layers keep theirs:
   their statistics also follow the site's class mix, so moving them moved the decision (see `learned_norms`).
2. Class mix (Saerens, Latinne & Decaestecker 2002): the site's class proportions are estimated by EM
   on the adapted model's probabilities and recorded. Moving decisions by the estimate is the caller's
   choice (`class_mix=True`; off by default) because EM trusts the adapted model's probabilities to be
   calibrated at the site, and they are not: on the demo's dark site (12 trainings) it cost accuracy
   when the site's mix was the training's (never gained), lost 0.029 on average at 25% disease (down
   to 0.576 -> 0.373) and gained 0.021 at 75%; on another hospital's X-rays it said 67% (truth 63%)
   for one run and 91% for another (accuracy 0.893 -> 0.689). When asked, the Bayes decisions move:
   multi-class argmax (per-class weights on the probabilities, applied by Evaluate and Predict) and an
   untuned binary 0.5; an estimate at the edge (a class under 2%) moves nothing (`prior_is_usable`). A
   binary threshold the run tuned by Youden's J or a target sensitivity always stays: those criteria do
   not depend on the class mix (moving one by the estimate cost 5-20 points on another hospital).
3. A binary threshold from the site's own scores (the default; `threshold_from_site=False` keeps the parent's; see
   `site_threshold`): where the adapted model's scores on the site's images part into two clusters, which needs neither
   labels nor calibrated scores. The threshold a run tuned on its own validation split is where its own hospital's
   classes part; on another hospital's X-rays (the X-ray recipe, 4 seeds) the site's own took accuracy after adaptation
   from 0.906-0.931 to 0.931-0.947 (specificity up 6-16 points, sensitivity down 1-4.5), and on the runs' own test
   splits it moved accuracy by -0.016 to +0.008. When the scores are not clearly two clusters (one class, or a model the
   site has broken) the parent's threshold stays. When they are, the clusters' shares are the class-mix estimate
   recorded (EM's is kept beside it): on those runs 62-66% pneumonia, truth 63%, where EM said 77-89%.

The result is a new run folder that records its parent (config `adapted_from`, status `parent`):
Evaluate, Predict and export treat it like any run. Images are taken in the order of their content
hashes, so a folder of class folders and the same files in one flat folder give the same model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import pandas as pd

from core.errors import MedImageError
from core.runs import create_run, now_iso, read_json, read_status, run_rows, write_status

if TYPE_CHECKING:
    from core.models import ModelConfig

MIN_IMAGES = 16
# BatchNorm layers whose feature maps are at least this fraction of the input's width are re-measured (see learned_norms).
SHALLOW_FRACTION = 0.25
Progress = Callable[[str, float], None]


def site_images(folder: str | Path) -> pd.DataFrame:
    """Every readable image under the folder (any depth; folder names ignored), in content-hash order, with the
    facts the pipeline needs. No label is read: class folders and a flat folder list the same images."""
    from core.image_reader import is_image_name
    from core.scan import scan_files

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise MedImageError(f"{root} is not a folder. Give a folder of the new site's images (any layout; labels are not used).")
    hidden = lambda d: any(part.startswith(".") or part == "__MACOSX" for part in Path(d).relative_to(root).parts)  # noqa: E731
    paths = [Path(d) / f for d, _, files in os.walk(root) if not hidden(d) for f in files if not f.startswith(".") and is_image_name(f)]
    facts, _ = scan_files(paths)
    if len(facts) < MIN_IMAGES:
        raise MedImageError(f"{root} has {len(facts)} readable images; adaptation needs at least {MIN_IMAGES} of the new site.")
    facts["digest"] = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in facts["path"]]
    return facts.sort_values(["digest", "path"], kind="stable").drop_duplicates("digest").reset_index(drop=True)


def training_sample(run: Path, config: dict[str, Any], n: int = 512) -> pd.DataFrame:
    """Up to n images (seeded) of the domain the run's BatchNorm statistics describe, measured as the source: its
    training images, or for a run that was itself adapted, the site it was adapted on. Measuring an adapted run's
    source on the training images applied the site's shift a second time (adapting a run to the site it had already
    been adapted to moved a demo model's healthy scores from logit -6 to +2)."""
    from core.dataset_store import open_source

    if config.get("adapted_from"):
        site = Path(str(config.get("adapted_on", "")))
        if not site.is_dir():
            raise MedImageError(f"{run.name} was adapted on {site}, which is gone, and its statistics describe those images: "
                                f"adapt the run it came from ({config['adapted_from']}) instead.")
        images = site_images(site)
        return images.sample(n, random_state=0) if len(images) > n else images
    table = run_rows(run, config, open_source(config["data"]).table)
    train = table[table["split"] == "train"]
    return train.sample(min(n, len(train)), random_state=0) if len(train) else train


def _batches(run: Path, table: pd.DataFrame, classes: list[str], batch_size: int = 64):
    from core.pipeline import PipelineConfig, make_dataset

    config = read_json(run / "config.json")
    pipeline = PipelineConfig(**{**config.get("pipeline", {}), "cache": False, "batch_size": batch_size})
    return make_dataset(table.assign(label=classes[0]), classes, pipeline)  # a placeholder label: never used


def statistics_source(config: dict[str, Any]) -> ModelConfig:
    """A run's model config as its BatchNorm statistics know it: a backbone fine-tuned whole after feature extraction
    (fine_tune_layers 0, LP-FT) learned them on the training images like one trained whole from the start."""
    from dataclasses import replace

    from core.models import ModelConfig

    model = ModelConfig.from_dict(config["model"])
    return replace(model, freeze="full") if model.fine_tune_layers == 0 and config.get("fine_tune_epochs") else model


def learned_norms(model: keras.Model, config) -> list[keras.layers.Layer]:
    """The BatchNormalization layers adaptation re-measures: those whose statistics were learned on the training
    images; inside an ImageNet backbone, only the shallow ones (feature maps >= SHALLOW_FRACTION of the input's width).

    Learned: all of a scratch model's, a backbone's only when it trained in full. A frozen ImageNet backbone keeps
    ImageNet statistics, which its head learned to read; moving them measured worse on another hospital's images (two
    MobileNetV2 runs: accuracy 0.881 -> 0.868 and 0.893 -> 0.871 at the run's threshold).
    Shallow, in a backbone: on two whole-network MobileNetV2 runs, re-measuring all 52 layers on another hospital's
    images cost accuracy (0.937 -> 0.915, 0.918 -> 0.890) and AUC (0.968 -> 0.954): deep features differ between sites
    also because the class mix differs (37% healthy there, 26% in training), and centring them on the site's mean moved
    healthy children towards pneumonia. The 10 layers at >= 1/4 resolution (acquisition: exposure, contrast, noise)
    gave 0.937 -> 0.940 and 0.918 -> 0.921, AUC +0.001 on both.
    All, in a scratch model: its few layers all carry the acquisition shift. Re-measuring all of xraynet's took the
    scratch recipe on another hospital from 0.855 to 0.862. On the demo set under a synthetic scanner shift (6
    trainings x 3 strengths, unadapted accuracy 0.50-0.86, mean 0.58), its shallow 3 of 5 gave 0.50-0.89 (mean 0.61,
    below the unadapted model in 4 of 18 cases) and all 5 gave 0.59-0.98 (mean 0.77, below it in 1)."""
    from core.models import all_layers, backbone_of

    base = backbone_of(model)
    inside = {id(layer) for layer in all_layers(base)} if base is not None else set()
    width = (base if base is not None else model).input_shape[2]  # what the backbone sees: after any border crop

    def chosen(layer: keras.layers.Layer) -> bool:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer.output.shape) != 4:
            return False
        if id(layer) not in inside:
            return base is None  # a scratch model's own layers; a transfer head's are deep
        return config.freeze == "full" and layer.output.shape[2] >= width * SHALLOW_FRACTION

    return [layer for layer in all_layers(model) if chosen(layer)]


def _domain_statistics(twin: keras.Model, norms: list, batches, say: Callable[[int], None]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per BatchNormalization layer, the mean over batches of its inputs' per-batch mean and variance, with the twin
    in training mode (each layer normalising by the domain's own batch statistics, as AdaBN does)."""
    saved = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in norms]
    done = 0
    for k, (images, _) in enumerate(batches):
        for layer in norms:
            layer.momentum = k / (k + 1)  # moving = running mean of the per-batch statistics
        twin(images, training=True)
        done += len(images)
        say(done)
    stats = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in norms]
    for layer, (mean, var) in zip(norms, saved, strict=True):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)
    return stats


def adabn(model: keras.Model, config: dict[str, Any], source, target, progress: Progress | None = None,
          counts: tuple[int, int] = (1, 1)) -> tuple[keras.Model, int]:
    """The model with every BatchNormalization's statistics moved from the source domain to the target's.

    Plain AdaBN replaces the moving statistics by the target's. That is right for layers whose statistics were
    learned on the training images, but wrong for a frozen ImageNet backbone, whose statistics are ImageNet's: its
    head learned on X-ray features normalised by ImageNet statistics (measured: plain AdaBN took a MobileNetV2
    transfer run's external AUC from 0.964 to 0.885). So both domains are measured the same way (source: training
    images; target: the site's) and each channel's moving mean m and deviation s become
        s' = s * sd_target / sd_source,   m' = mean_target - s' * (mean_source - m) / s,
    which maps target features to where source features were; when m, s were learned on the source it is plain
    AdaBN. Measured on a float32 twin (backbone callable in training mode, no dropout) given the model's weights."""
    from dataclasses import replace

    from core.models import ModelConfig, build_model

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model_config = ModelConfig.from_dict({**config["model"], "weights": "none"})
        twin = build_model(replace(model_config, freeze="full", dropout=0.0))
        twin.set_weights(model.get_weights())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    norms = [layer for layer in learned_norms(twin, statistics_source(config)) if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return model, 0
    for layer in norms:
        layer.trainable = True  # a frozen BatchNormalization ignores training=True
    say = progress or (lambda message, fraction: None)
    source_stats = _domain_statistics(twin, norms, source, lambda n: say(f"measuring the training images: {n}/{counts[0]}",
                                                                           0.05 + 0.3 * n / max(counts[0], 1)))
    target_stats = _domain_statistics(twin, norms, target, lambda n: say(f"measuring the site's images: {n}/{counts[1]}",
                                                                           0.35 + 0.35 * n / max(counts[1], 1)))
    for layer, (mean_s, var_s), (mean_t, var_t) in zip(norms, source_stats, target_stats, strict=True):
        m, v = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        s = np.sqrt(v + layer.epsilon)
        s_new = s * np.sqrt(var_t + layer.epsilon) / np.sqrt(var_s + layer.epsilon)
        layer.moving_mean.assign(mean_t - s_new * (mean_s - m) / s)
        layer.moving_variance.assign(np.maximum(s_new**2 - layer.epsilon, 0.0))
    model.set_weights(twin.get_weights())
    return model, len(norms)


def em_prior(probabilities: np.ndarray, source_prior: np.ndarray, iterations: int = 200, tol: float = 1e-6) -> np.ndarray:
    """Saerens et al. (2002): the target class prior by EM from posteriors computed under the source prior."""
    p = np.asarray(probabilities, float)
    source = np.asarray(source_prior, float)
    prior = source.copy()
    for _ in range(iterations):
        weighted = p * (prior / source)
        new = (weighted / weighted.sum(axis=1, keepdims=True)).mean(axis=0)
        if np.max(np.abs(new - prior)) < tol:
            return new
        prior = new
    return prior


def prior_is_usable(prior: np.ndarray, floor: float = 0.02) -> bool:
    """Whether an EM estimate can steer a decision. EM runs to a corner (a class at ~0%) when the model's scores at the
    site are far from calibrated: whole-network MobileNetV2 runs, whose Youden thresholds sit at 0.79-0.86, put the
    other hospital at 94-100% pneumonia (truth 63%). Moving a decision by such an estimate would call everyone ill."""
    return bool(np.min(prior) >= floor)


def bayes_threshold(source_prior: np.ndarray, target_prior: np.ndarray) -> float:
    """Binary: the score above which the prior-corrected posterior of class 1 is at least 0.5, the Bayes decision
    for the site's class mix: p >= r0 / (r0 + r1) with r = target / source (Saerens et al. 2002)."""
    r0, r1 = target_prior[0] / source_prior[0], target_prior[1] / source_prior[1]
    return float(r0 / (r0 + r1))


# A site's scores are two clusters the threshold can be put between only when they are clearly two: Ashman's D (the
# distance of the means in pooled standard deviations) above 2 is the usual bound for a clean separation, and neither
# cluster may be a sliver (one class alone, scores with a tail, gives D 1.2-1.6 and a small second cluster).
MIN_SEPARATION = 2.0
MIN_CLUSTER_SHARE = 0.05


def site_threshold(scores: np.ndarray, seed: int = 0) -> tuple[float | None, dict[str, Any]]:
    """Binary: the decision boundary between the two clusters of a site's scores, or None when they are not clearly two.

    Why: the threshold a run tunes on its validation split is where *its own* hospital's classes part, and at another
    hospital the classes part elsewhere (whole-network MobileNetV2 runs rank the other hospital's X-rays at AUC 0.95-0.98
    and call 20-47% of its healthy children pneumonia at their validation threshold, because those children score
    high). EM re-estimates only the class mix and trusts the scores to be calibrated there, which they are not. A
    two-component Gaussian mixture on the logits of the site's own scores finds where its classes part without a label
    and without calibration: the threshold is the score at which the mixture's upper component becomes the likelier one.
    Details (means, spreads, shares, separation) are returned for the run's record either way."""
    from sklearn.mixture import GaussianMixture

    p = np.clip(np.asarray(scores, float).ravel(), 1e-6, 1 - 1e-6)
    z = np.log(p / (1 - p)).reshape(-1, 1)
    if len(z) < MIN_IMAGES or np.ptp(z) < 1e-6:
        return None, {"reason": f"{len(z)} scores, {'all the same' if len(z) else 'none'}: nothing to separate"}
    # converged tightly (1-D and a few thousand scores at most: cheap), so the threshold is a function of the scores, not of EM's path
    mixture = GaussianMixture(2, n_init=3, tol=1e-7, max_iter=2000, random_state=seed).fit(z)
    means, sds, shares = mixture.means_.ravel(), np.sqrt(mixture.covariances_.ravel()), mixture.weights_
    low, high = np.argsort(means)
    separation = float((means[high] - means[low]) / np.sqrt((sds[low] ** 2 + sds[high] ** 2) / 2))
    details = {"logit_means": [round(float(means[low]), 3), round(float(means[high]), 3)],
               "logit_sds": [round(float(sds[low]), 3), round(float(sds[high]), 3)],
               "upper_share": round(float(shares[high]), 4), "separation": round(separation, 2)}
    grid = np.linspace(means[low], means[high], 2001)
    upper = mixture.predict_proba(grid.reshape(-1, 1))[:, high]
    short = [f"separation {separation:.1f}, needs {MIN_SEPARATION:g}"] if separation < MIN_SEPARATION else []
    short += [f"smaller cluster {min(shares):.0%}, needs {MIN_CLUSTER_SHARE:.0%}"] if min(shares) < MIN_CLUSTER_SHARE else []
    # a small, narrow upper cluster inside a broad lower one is never the likelier between the two means: no boundary there
    short += ["the upper cluster is nowhere the likelier between the two"] if upper[-1] < 0.5 else []
    if short:
        details["reason"] = (f"the site's scores are not clearly two clusters ({'; '.join(short)}): one class, or a model that "
                             "cannot tell them apart there")
        return None, details
    boundary = grid[int(np.argmax(upper >= 0.5))]
    return float(1 / (1 + np.exp(-boundary))), details


def adaptation_summary(name: str, status: dict[str, Any]) -> str:
    """What adaptation made, in words for the page: the new run, what was re-measured, the class-mix estimate, and what
    the run decides with (its threshold, where it came from, or why the site's could not be found)."""
    info = status.get("adaptation", {})
    mix = ", ".join(f"{label} {share:.0%}" for label, share in info.get("site_prior", {}).items())
    parts = [f"Created {name} from {status.get('parent')}: {info.get('images')} images, {info.get('batchnorm_layers')} BatchNorm "
             f"layers re-measured, estimated class mix {mix}" + (f" ({info['prior_note']})." if info.get("prior_note") else ".")]
    if "threshold" in status:
        parts.append(f"Threshold {float(status['threshold']):.3f} ({status.get('threshold_source', 'the parent run')}).")
    if info.get("threshold_note"):
        parts.append(info["threshold_note"][0].upper() + info["threshold_note"][1:] + ".")
    return " ".join(parts)


def source_prior(run: Path, config: dict[str, Any], classes: list[str]) -> np.ndarray:
    """The class mix the model's outputs are posteriors for: uniform under class-balanced weights, else the training mix."""
    if config.get("class_weighting", True):
        return np.full(len(classes), 1 / len(classes))
    from core.dataset_store import open_source

    table = run_rows(run, config, open_source(config["data"]).table)
    counts = table[table["split"] == "train"]["label"].value_counts()
    return np.array([counts.get(c, 0) for c in classes], float) / max(int(counts.sum()), 1)


def _scores(run: Path, model: keras.Model, table: pd.DataFrame, classes: list[str], tta: bool) -> np.ndarray:
    views = [lambda x: x, lambda x: x[:, :, ::-1, :]] if tta else [lambda x: x]
    return np.mean([np.concatenate([np.asarray(model.predict_on_batch(view(x)), float) for x, _ in _batches(run, table, classes)])
                    for view in views], axis=0)


def _decisions(status: dict[str, Any], classes: list[str], head: str, scores: np.ndarray, source: np.ndarray, target: np.ndarray,
               n_images: int, class_mix: bool, threshold_from_site: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the adapted run decides with (status fields: threshold, its source, multi-class prior weights) and what the
    adaptation record says about it. In order: the site threshold for a binary run (the default), else the class mix
    when asked (never over a tuned threshold, nor from an estimate at the edge), else the parent's decisions."""
    decided: dict[str, Any] = {}
    noted: dict[str, Any] = {"class_mix_applied": False}
    if "threshold" in status:
        decided.update(threshold=float(status["threshold"]), threshold_source=status.get("threshold_source", "the parent's"))
    moved = None
    if threshold_from_site and head == "binary":
        moved, noted["site_threshold"] = site_threshold(scores[:, 0])
        if moved is None:
            noted["threshold_note"] = f"the threshold stays the parent's: {noted['site_threshold']['reason']}"
    if moved is not None:
        parent = f"{float(status['threshold']):.3f}" if "threshold" in status else "0.5"
        decided.update(threshold=moved, threshold_source=(f"where the site's scores part: the boundary of a two-cluster mixture "
                                                          f"fitted to {n_images} unlabeled images; the parent's threshold was {parent}"))
        # the clusters' shares are the class-mix estimate: EM reads the scores as calibrated at the site and ran to 77-89%
        # pneumonia on another hospital's X-rays (truth 63%), where the shares said 62-66% (4 recipe runs)
        share = noted["site_threshold"]["upper_share"]
        noted["em_prior"] = dict(zip(classes, target.round(4).tolist(), strict=True))
        noted["site_prior"] = {classes[0]: round(1 - share, 4), classes[1]: share}
        noted["prior_note"] = (f"the shares of the site's two score clusters; EM, which trusts the scores to be calibrated "
                               f"there, said {classes[1]} {target[1]:.0%}")
    elif not class_mix:
        noted["prior_note"] = ("recorded, not applied: every decision stays the parent's (apply it with --class-mix or the page's "
                               "class-mix option)")
    elif head == "binary" and "threshold" in status:
        decided["threshold_source"] = (f"the parent's ({status.get('threshold_source', 'tuned')}); a class-mix-free choice, so the "
                                       f"site's estimated {classes[1]} share {target[1]:.2f} leaves it where it is")
    elif not prior_is_usable(target):
        noted["prior_note"] = (f"the estimate ran to the edge ({classes[int(np.argmin(target))]} at {np.min(target):.0%}): the "
                               "model's scores at this site are too far from calibrated to estimate its class mix, so no "
                               "decision was moved by it")
    elif head == "binary":
        noted["class_mix_applied"] = True
        decided.update(threshold=bayes_threshold(source, target), threshold_source=(
            f"Bayes decision for the site's estimated {classes[1]} share {target[1]:.2f} (EM on {n_images} unlabeled images)"))
    else:
        noted["class_mix_applied"] = True
        decided["prior_weights"] = (target / source).tolist()
    return decided, noted


def adapt_run(run: Path, images: str | Path, runs_dir: Path | None = None, progress: Progress | None = None,
              class_mix: bool = False, threshold_from_site: bool = True) -> Path:
    """A new run folder: RUN adapted to the site of IMAGES (unlabeled); with class_mix, its Bayes decisions also move to
    the site's estimated class mix; with threshold_from_site (the default), a binary threshold moves to where the site's
    own scores part (`site_threshold`), and without it stays the parent's. See the module docstring."""
    from core.evaluate import load_run_models
    from core.train import save_model_atomic

    run = Path(run)
    say = progress or (lambda message, fraction: None)
    if not (run / "config.json").exists():
        raise MedImageError(f"{run} is not a run folder (no config.json).")
    config, status = read_json(run / "config.json"), read_status(run)
    classes = status.get("classes")
    if not classes:
        raise MedImageError(f"{run.name} has no trained model yet.")
    head = config.get("model", {}).get("head", "binary")
    if head == "ordinal":
        raise MedImageError("Adaptation re-estimates class proportions, which an ordinal (regression) head does not have.")
    models = load_run_models(run)
    if len(models) > 1:
        raise MedImageError(f"{run.name} is a K-fold ensemble: adapt one fold's run (fold-k) instead.")
    say("listing the site's images", 0.0)
    table = site_images(images)
    source_table = training_sample(run, config)
    model, n_norms = adabn(models[0], config, _batches(run, source_table, classes), _batches(run, table, classes), say,
                           (len(source_table), len(table)))
    say("estimating the site's class proportions", 0.75)
    scores = _scores(run, model, table, classes, bool(config.get("tta")))
    probabilities = np.column_stack([1 - scores[:, 0], scores[:, 0]]) if head == "binary" else scores
    source = source_prior(run, config, classes)
    target = em_prior(probabilities, source)
    say("writing the adapted run", 0.9)
    child = create_run({**config, "adapted_from": run.name, "adapted_on": str(Path(images).expanduser())}, runs_dir or run.parent)
    for name in ("rows.csv", "metrics.csv"):
        if (run / name).exists():
            shutil.copyfile(run / name, child / name)
    save_model_atomic(model, child / "best.keras")
    changes: dict[str, Any] = {
        "state": "completed", "classes": classes, "finished": now_iso(), "epoch": status.get("epoch"),
        "epochs": status.get("epochs"), "precision": status.get("precision"), "parent": run.name,
        "adaptation": {"images": int(len(table)), "folder": str(Path(images).expanduser()), "batchnorm_layers": n_norms,
                       "training_images_measured": int(len(source_table)),
                       "source_prior": dict(zip(classes, source.round(4).tolist(), strict=True)),
                       "site_prior": dict(zip(classes, target.round(4).tolist(), strict=True)), "labels_used": False},
    }
    decided, noted = _decisions(status, classes, head, scores, source, target, len(table), class_mix, threshold_from_site)
    changes.update(decided)
    changes["adaptation"].update(noted)
    write_status(child, **changes)
    from core.novelty import measure_if_possible

    measure_if_possible(child, lambda message, fraction: say(message, 0.9 + 0.1 * fraction))  # what is usual at the site
    say("done", 1.0)
    return child
