"""Recipes judged on another hospital (issue 13): trained on chest_xray/train only, scored on external-dev.

For each variant and seed: train the recipe (patient-grouped split; external-dev watched every epoch,
monitor only: nothing in the recipe reads it), then report at the run's own saved threshold the
patient-grouped validation and external-dev accuracy and AUC (bootstrap 95% intervals), the gap, and
the same after `adapt` on external-dev's images (no labels). Every variant run is printed, so the
number of looks at external-dev is visible; the README lists them all.

    python bench/generalisation_bench.py [--variants xray xray-scratch xray-imagenet xray-decay xray-0.5 xray-ema xray-geo
                                         xray-mixup xray-crop xray-cosine xray-cutmix xray-lpft xray-float32
                                         xray-bfloat16 xray-own-bn xray-equalize]
                                         [--seeds 0 1] [--epochs N]
    python bench/generalisation_bench.py --runs RUN [RUN ...]    # score runs trained before, without training
    python bench/generalisation_bench.py --split-half RUN [RUN ...]    # adapt on one half of the site, score the other
    python bench/generalisation_bench.py --borderline RUN [RUN ...]    # are Predict's borderline calls the wrong ones?

Each run is adapted twice and scored both ways: with the parent's threshold (`adapt --keep-threshold`) and with the
site threshold (the boundary between the two clusters of the adapted model's scores on the site's images, adapt's
default since the rule below); and, reading no external image, the same mixture is fitted to the run's own internal
test split, to see what it does at the training hospital (nothing to correct).
Rule for the site threshold, fixed before its first result on external-dev: adapt's default for binary runs becomes the
site threshold if, on the recipe's seeds 0 and 1, external-dev accuracy after adapt at the site threshold beats the
same adapted model at the parent's threshold (today's default) on both seeds and by >= 0.010 on average (3 of 318
images), and on each run's own internal test split the mixture costs no more than 0.010 accuracy against the saved
threshold (or finds no two clusters and moves nothing). Otherwise it stays an option (--site-threshold, the Evaluate
tab's checkbox). The AUC cannot move: only the threshold does. Result: +0.031 and +0.013 (0.906 -> 0.937, 0.931 ->
0.943), own test split -0.006 and +0.002, so it is adapt's default (`--keep-threshold` keeps the parent's). With the
mixture converged tightly since (the same runs scored again): +0.031 and +0.016.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
TRAIN, EXTERNAL = SHARED / "chest_xray" / "train", SHARED / "chest_xray" / "external-dev"


# Variants measured here that are not recipes (any more): a recipe plus changes to its config, applied before training.
# Kept so that every look at external-dev listed in the README can be rerun.
BENCH_VARIANTS = {
    # the ImageNet recipe until issue 13's last session: 3 epochs of feature extraction (LR 1e-3), then the last 40 layers
    # fine-tuned at LR 1e-4 with ImageNet's BatchNorm statistics frozen
    "xray-imagenet": ("xray", {"model": {"freeze": "feature_extraction", "fine_tune_layers": 40}, "learning_rate": 1e-3, "epochs": 3,
                               "fine_tune_epochs": 11, "fine_tune_lr": 1e-4, "step_decay_every": 0, "reduce_lr_patience": 2}),
    # the whole network with the LR halved every 3 epochs for 12 (measured with BatchNorm momentum 0.99, commit 6ec6f5c)
    "xray-decay": ("xray", {"epochs": 12, "step_decay_every": 3, "step_decay_factor": 0.5, "reduce_lr_patience": 0}),
    # the wider MobileNetV2 (alpha 0.5: 706k backbone parameters against 410k, ~1.5x the time an epoch), 8 epochs to stay
    # inside 30 minutes
    "xray-0.5": ("xray", {"model": {"alpha": 0.5}, "epochs": 8}),
    # the recipe with its weights averaged over ~3 epochs (EMA, momentum 0.9977 at 147 steps an epoch: 3.5% of the initial
    # weights left after 10 epochs); validation, checkpoints and the threshold use the average
    "xray-ema": ("xray", {"ema_epochs": 3}),
    # stronger geometry, random-resized-crop style: rotation up to +/-18 degrees (the recipe's 0.03: 11), shifts 10% (5%),
    # zoom 20% (10%); fixed in the session before it ran
    "xray-geo": ("xray", {"augment": {"rotation": 0.05, "translation": 0.10, "zoom": 0.20}}),
    # mixup at Beta(0.2, 0.2) (the paper's ImageNet setting, Keras' default), on top of the recipe's label smoothing;
    # fixed before it ran, the one value tried
    "xray-mixup": ("xray", {"mixup": 0.2}),
    # a border crop inside the model: 10% of each side cut (the central 180 of 224 px: the lung fields, without most
    # side markers and collimation edges, judged on training images only); fixed before it ran, the one value tried
    "xray-crop": ("xray", {"model": {"crop": 0.1}}),
    # a longer cosine schedule: 12 epochs (the recipe's 10 + 20%, the most that stays inside 30 minutes), the LR sliding from
    # 1e-4 along half a cosine instead of halving on a val-loss plateau; fixed before it ran, the one setting tried
    "xray-cosine": ("xray", {"epochs": 12, "cosine": True}),
    # CutMix at Keras' default factor 1.0 (the paper's Beta(1, 1) is its upper end), on top of the recipe's label smoothing;
    # fixed before it ran, the one value tried
    "xray-cutmix": ("xray", {"cutmix": 1.0}),
    # LP-FT (Kumar et al. 2022, "Fine-tuning can distort pretrained features and underperform out-of-distribution"): 2
    # epochs of feature extraction (the head alone at LR 1e-3, ImageNet's BatchNorm statistics), then the recipe's 10
    # epochs of the whole network, BatchNorm included, at 1e-4 (halved on a val-loss plateau); the head the recipe trains
    # from random weights together with the backbone is the distortion LP-FT avoids. Fixed before it ran, the one setting
    # tried (a feature-extraction epoch costs about a quarter of a whole-network one)
    "xray-lpft": ("xray", {"model": {"freeze": "feature_extraction", "fine_tune_layers": 0}, "learning_rate": 1e-3, "epochs": 2,
                           "fine_tune_epochs": 10, "fine_tune_lr": 1e-4}),
    # the recipe in float32 instead of bfloat16: on this CPU bfloat16 makes MobileNetV2's depthwise convolutions slower
    # (a steady epoch 131 s -> 106 s in float32), so "auto" now trains depthwise networks in float32 on CPUs; measured
    # to show what the recipe's command now produces, not to choose it (adopted for speed unless it falls short of the
    # bfloat16 runs on the same seeds by more than the recipe's spread over seeds)
    "xray-float32": ("xray", {"mixed_precision": "off"}),
    # the recipe in bfloat16 ("on" is bfloat16 on this CPU), as it trained before "auto" changed, on a 4th seed (3) beside
    # the recipe itself (float32) on the same seed, both run side by side: float32 scored lower accuracy than bfloat16 on
    # each of seeds 0-2. Rule fixed before it ran: if bfloat16 is again higher in accuracy on seed 3 (4 of 4 seeds: 1 in
    # 16 by chance) and its AUC is not lower by more than 0.01, the recipe pins bfloat16 on CPUs that have it; otherwise
    # float32 stays
    "xray-bfloat16": ("xray", {"mixed_precision": "on"}),
    # the recipe as measured until BatchNorm's moving statistics were made to span about one epoch (batchnorm_epochs 1):
    # MobileNetV2's own momentum 0.999, 1,000 batches, 7.6 epochs of the chest X-rays. The change was made for validation's
    # sake (on the demo set the old statistics stayed 95% ImageNet's and validation accuracy at 0.53-0.57). The recipe
    # with it (seeds 0 and 1) is measured once. Rule, fixed before its first result: the recipe keeps the one-epoch span
    # unless its mean external-dev accuracy on seeds 0 and 1 falls below the old recipe's on the same seeds (float32:
    # 0.921, 0.906, mean 0.9135) by more than the recipe's spread over 4 seeds (0.019), or its mean AUC (0.955, 0.974:
    # 0.9645) by more than 0.008; then the recipe alone spans 7.6 epochs (1,000 batches of this set, MobileNetV2's 0.999,
    # and the same share of a run on any set), and other trainings keep one epoch
    "xray-own-bn": ("xray", {"batchnorm_epochs": 0}),
    # per-image histogram equalisation before the backbone (grayscale pipeline, the equalised image copied to RGB and
    # scaled back to 0-255 for MobileNetV2's own preprocessing): any monotone change of exposure or processing curve at
    # another hospital gives the network the same image. The scratch recipe has it; the ImageNet recipe never had (the
    # setting applied to scratch models only). Not among the ideas, chosen because the recipe's remaining loss is
    # the other hospital's healthy children scoring high, and a site's processing curve is the commonest difference
    # between sites. Fixed before it ran, the one setting tried. Rule, fixed before its first result: adopted only if on
    # seeds 0 and 1 its mean external-dev accuracy beats the recipe's (0.899, 0.912: 0.906) by more than the recipe's
    # spread over 4 seeds (0.018), i.e. >= 0.924, and its mean AUC is not below the recipe's (0.973) by more than its
    # 4-seed spread (0.010): accuracy at the saved threshold is the goal the recipe misses, its AUC meets it
    "xray-equalize": ("xray", {"model": {"intensity": "equalize", "channels": 1}, "pipeline": {"channels": 1}}),
}


def _create(variant: str, seed: int, runs_dir: Path, **kwargs) -> Path:
    from core.atomic import write_json
    from core.recipes import create_recipe_run
    from core.runs import read_json

    recipe, changes = BENCH_VARIANTS.get(variant, (variant, {}))
    run = create_recipe_run(recipe, str(TRAIN), seed=seed, runs_dir=runs_dir, **kwargs)
    if changes:
        config = read_json(run / "config.json")
        for key, value in changes.items():
            config[key] = {**config[key], **value} if isinstance(value, dict) else value
        write_json(run / "config.json", config)
    return run


def _own_test_check(run: Path) -> dict:
    """The site threshold on the run's own internal test split (its training hospital: nothing to correct), against the
    saved threshold: a development check that reads no external image."""
    from core.adapt import site_threshold
    from core.dataset_store import open_source
    from core.evaluate import binary_summary, predict_table
    from core.runs import read_json, read_status, run_rows

    config, status = read_json(run / "config.json"), read_status(run)
    table = run_rows(run, config, open_source(config["data"]).table)
    test = predict_table(run, table[table["split"] == "test"], "test")
    classes, saved = status["classes"], float(status.get("threshold", 0.5))
    moved, details = site_threshold(test[f"p_{classes[1]}"].to_numpy(float))
    at = lambda t: binary_summary(test, classes, t, n_boot=10)["accuracy"]  # noqa: E731
    return {"own_test_acc_saved": at(saved), "own_test_site_threshold": moved,
            "own_test_acc_site": at(moved) if moved is not None else None, "own_test_mixture": details}


def _score(run: Path, variant: str, seed: int, minutes: float | None, external) -> dict:
    """Validation and external-dev at the run's saved threshold, then external-dev after `adapt` on its images, with the
    parent's threshold (`--keep-threshold`) and with the site's own (adapt's default)."""
    from core.adapt import adapt_run
    from core.evaluate import binary_summary, load_predictions, predict_table
    from core.external import external_name
    from core.runs import read_status

    status = read_status(run)
    classes, threshold = status["classes"], float(status.get("threshold", 0.5))
    val = binary_summary(load_predictions(run, "val"), classes, threshold, n_boot=1000)
    stored = load_predictions(run, external_name(str(EXTERNAL)))  # None for a run trained without watching it
    stored = predict_table(run, external, external_name(str(EXTERNAL))) if stored is None else stored
    ext = binary_summary(stored, classes, threshold, n_boot=1000)
    row = {"variant": variant, "seed": seed, "minutes": minutes, "threshold": round(threshold, 3),
           "val_acc": val["accuracy"], "val_auc": val["auc"], "ext_acc": ext["accuracy"], "ext_acc_ci": ext["accuracy_ci95"],
           "ext_auc": ext["auc"], "ext_auc_ci": ext["auc_ci95"], "ext_sens": ext["sensitivity"], "ext_spec": ext["specificity"],
           "run": str(run), **_own_test_check(run)}
    for key, site in (("adapted", False), ("site", True)):
        child = adapt_run(run, EXTERNAL, threshold_from_site=site)
        child_status = read_status(child)
        adapted = binary_summary(predict_table(child, external, f"external-dev-{key}"), classes, float(child_status["threshold"]),
                                 n_boot=1000)
        row.update({f"{key}_threshold": round(float(child_status["threshold"]), 3), f"{key}_acc": adapted["accuracy"],
                    f"{key}_acc_ci": adapted["accuracy_ci95"], f"{key}_auc": adapted["auc"], f"{key}_sens": adapted["sensitivity"],
                    f"{key}_spec": adapted["specificity"], f"{key}_run": str(child)})
        row["site_prior"] = child_status["adaptation"]["site_prior"]
        if site:
            row["site_mixture"] = child_status["adaptation"].get("site_threshold")
    return row


def _split_half(run: Path, external) -> dict:
    """Adaptation judged on images it did not see. Issue 13's acceptance adapts on external-dev and scores the hidden
    half: other images of the same site. The tables above adapt on external-dev and score the same images (no label
    read, but the site threshold is fitted to those very scores). Here external-dev's distinct images are split in two
    by content hash (every other one in digest order: label-blind, duplicates on one side), the run is adapted on each
    half (a flat folder of links: no class folder to read) and scored on the other; beside it the run unadapted and the
    run adapted on all of external-dev, on the same halves."""
    import hashlib

    from core.adapt import adapt_run
    from core.evaluate import binary_summary, predict_table
    from core.runs import read_json, read_status

    classes, saved = read_status(run)["classes"], float(read_status(run).get("threshold", 0.5))
    digests = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in external["path"]]
    half_of = {d: i % 2 for i, d in enumerate(sorted(set(digests)))}
    halves = [external[[half_of[d] == h for d in digests]] for h in (0, 1)]
    everything = adapt_run(run, EXTERNAL)
    row: dict = {"run": str(run), "seed": int(read_json(run / "config.json").get("seed", 0)), "halves": [len(h) for h in halves],
                 "half_pneumonia": [float((h["label"] == classes[1]).mean()) for h in halves]}
    pooled: dict[str, list] = {"unadapted": [], "adapted_on_all": [], "adapted_on_other_half": []}
    with tempfile.TemporaryDirectory(prefix="site-half-") as tmp:
        for h in (0, 1):
            folder = Path(tmp) / f"half{1 - h}"
            folder.mkdir()
            for i, path in enumerate(halves[1 - h]["path"]):
                (folder / f"{i:04d}{Path(path).suffix}").symlink_to(Path(path).resolve())
            other = adapt_run(run, folder)
            for key, model, threshold in (("unadapted", run, saved),
                                          ("adapted_on_all", everything, float(read_status(everything).get("threshold", 0.5))),
                                          ("adapted_on_other_half", other, float(read_status(other).get("threshold", 0.5)))):
                table = predict_table(model, halves[h], f"external-dev-half{h}")
                summary = binary_summary(table, classes, threshold, n_boot=10)
                row[f"half{h}_{key}"] = {"threshold": round(threshold, 3), "acc": summary["accuracy"],
                                         "sens": summary["sensitivity"], "spec": summary["specificity"]}
                pooled[key].append((table, threshold))
    for key, parts in pooled.items():  # every image once, each at its own model's threshold
        correct = np.concatenate([(t[f"p_{classes[1]}"].to_numpy(float) >= thr) == (t["label"] == classes[1]).to_numpy()
                                  for t, thr in parts])
        row[f"{key}_acc"] = float(correct.mean())
    return row


def _borderline(run: Path, external) -> dict:
    """Predict's borderline flag (core.similar_scores: the validation images scored nearest a call were not clearly more
    often of its class) on the run's internal test split and on external-dev: how many calls it flags, and how often the
    flagged and the other calls were right, at the run's saved threshold. Its k and its 50% rule were fixed before this
    was first run; nothing here changes them."""
    from core.evaluate import load_predictions, predict_table, split_rows
    from core.external import external_name
    from core.runs import read_status
    from core.similar_scores import similar_scores, validation_table

    classes, threshold = read_status(run)["classes"], float(read_status(run).get("threshold", 0.5))
    val = validation_table(run)
    if val is None:
        val = predict_table(run, split_rows(run, "val"), "val")
    row: dict = {"run": str(run), "threshold": round(threshold, 3), "val": len(val)}
    for name, rows in (("test", lambda: split_rows(run, "test")), (external_name(str(EXTERNAL)), lambda: external)):
        table = load_predictions(run, name)
        table = predict_table(run, rows(), name) if table is None else table
        p = table[f"p_{classes[1]}"].to_numpy(float)
        called = np.where(p >= threshold, classes[1], classes[0])
        right = called == table["label"].to_numpy()
        flagged = np.array([similar_scores(val, classes, "binary", np.array([s]), c).borderline for s, c in zip(p, called, strict=True)])
        row[name] = {"n": len(table), "borderline": int(flagged.sum()),
                     "acc_borderline": float(right[flagged].mean()) if flagged.any() else None,
                     "acc_other": float(right[~flagged].mean()), "errors_flagged": int((~right & flagged).sum()),
                     "errors": int((~right).sum())}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["xray"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--split-half", nargs="+", default=None, metavar="RUN",
                        help="adapt these trained runs on each half of external-dev and score them on the other half")
    parser.add_argument("--borderline", nargs="+", default=None, metavar="RUN",
                        help="how often Predict's borderline calls of these runs were right, on their test split and external-dev")
    parser.add_argument("--runs", nargs="+", default=None, metavar="RUN",
                        help="score these trained runs (a variant's runs made before) instead of training new ones")
    args = parser.parse_args()
    if not (TRAIN.is_dir() and EXTERNAL.is_dir()):
        sys.exit(f"needs {TRAIN} and {EXTERNAL}")
    os.environ.setdefault("MEDIMAGE_WEIGHTS_DIR", str(SHARED / "imagenet-weights"))
    from core.dataset import open_dataset
    from core.runs import read_json, read_status
    from core.train import run_job

    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="generalisation-"))
    external = open_dataset(str(EXTERNAL)).table
    if args.split_half:
        for run in map(Path, args.split_half):
            print(json.dumps(_split_half(run, external), default=float), flush=True)
        return
    if args.borderline:
        for run in map(Path, args.borderline):
            print(json.dumps(_borderline(run, external), default=float), flush=True)
        return
    rows = []
    for run in map(Path, args.runs or []):
        rows.append(_score(run, "given", int(read_json(run / "config.json").get("seed", 0)), None, external))
        print(json.dumps(rows[-1], default=float), flush=True)
    for variant in [] if args.runs else args.variants:
        for seed in args.seeds:
            overrides = {"epochs": args.epochs} if args.epochs else {}
            run = _create(variant, seed, runs_dir, external=(str(EXTERNAL),), tensorboard=False, **overrides)
            started = time.perf_counter()
            state = run_job(run, verbose=0)
            minutes = round((time.perf_counter() - started) / 60, 1)
            if state != "completed":
                print(json.dumps({"variant": variant, "seed": seed, "state": state, "message": read_status(run).get("message")}), flush=True)
                continue
            rows.append(_score(run, variant, seed, minutes, external))
            print(json.dumps(rows[-1], default=float), flush=True)
    print("\n| variant | seed | min | threshold | val acc / AUC | external-dev acc (95% CI) | AUC (95% CI) | sens / spec | gap (acc) "
          "| adapted acc (95% CI) / AUC | site threshold | adapted at it: acc (95% CI) | sens / spec |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['seed']} | {r['minutes']} | {r['threshold']} | {r['val_acc']:.3f} / {r['val_auc']:.3f} | "
              f"{r['ext_acc']:.3f} ({r['ext_acc_ci'][0]:.3f}-{r['ext_acc_ci'][1]:.3f}) | "
              f"{r['ext_auc']:.3f} ({r['ext_auc_ci'][0]:.3f}-{r['ext_auc_ci'][1]:.3f}) | {r['ext_sens']:.2f} / {r['ext_spec']:.2f} | "
              f"{r['val_acc'] - r['ext_acc']:.3f} | {r['adapted_acc']:.3f} ({r['adapted_acc_ci'][0]:.3f}-{r['adapted_acc_ci'][1]:.3f}) "
              f"/ {r['adapted_auc']:.3f} | {r['site_threshold']} | {r['site_acc']:.3f} ({r['site_acc_ci'][0]:.3f}-{r['site_acc_ci'][1]:.3f}) "
              f"| {r['site_sens']:.2f} / {r['site_spec']:.2f} |")


if __name__ == "__main__":
    main()
