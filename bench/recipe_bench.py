"""The default X-ray recipe end to end, and its ablation (issue 7).

Usage:
  python bench/recipe_bench.py [--data DIR] [--recipe xray|xray-scratch] [--seed 0] [--test-dir DIR]
      trains the recipe on DIR (default ../shared/data/chest_xray/train) with its patient-grouped
      split, leaves a normal run folder in models/ (the dashboard opens it), prints validation
      figures, training minutes and peak memory, and evaluates the final model on --test-dir (a folder
      of class folders; default chest_xray/external-dev when present) at the threshold saved with the
      run, with the gap to validation. bench/generalisation_bench.py does this over seeds, with adapt.
  python bench/recipe_bench.py --ablation [--size 96] [--epochs 6] [--seeds 0 1] [--variants WORD ...]
      trains the scratch recipe (xray-scratch, the default of issue 7) and variants that each drop one choice, at a reduced size, and prints a
      table of validation AUC / accuracy on the grouped validation split and on a "shifted"
      validation (the same images under other exposures: gamma 0.6 and 1.6, contrast 0.6, blur),
      mean +/- sd over seeds.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "train"
EXTERNAL_DEV = DEFAULT.parent / "external-dev"  # another hospital: measured here, never read by a recipe


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def external_report(run: Path, test_dir: str) -> dict:
    from core.dataset import open_dataset
    from core.evaluate import binary_summary, predict_table
    from core.runs import read_status

    status = read_status(run)
    table = open_dataset(test_dir).table
    predictions = predict_table(run, table, "external")
    return binary_summary(predictions, status["classes"], float(status.get("threshold", 0.5)))


def shifted_scores(run: Path, rows) -> dict[str, float]:
    """Validation AUC and accuracy (at the run's threshold) on clean and exposure-shifted copies."""
    import numpy as np
    import tensorflow as tf
    from sklearn import metrics as skm

    from core.evaluate import load_run_model
    from core.pipeline import PipelineConfig, make_dataset
    from core.runs import read_json, read_status

    config, status = read_json(run / "config.json"), read_status(run)
    classes, threshold = status["classes"], float(status.get("threshold", 0.5))
    model = load_run_model(run)
    tta = bool(config.get("tta"))
    shifts = {
        "clean": lambda x: x,
        "gamma0.6": lambda x: 255.0 * (x / 255.0) ** 0.6,
        "gamma1.6": lambda x: 255.0 * (x / 255.0) ** 1.6,
        "contrast0.6": lambda x: tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True) * 0.4 + 0.6 * x,
        "blur": lambda x: tf.nn.avg_pool2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], "SYMMETRIC"), 3, 1, "VALID"),
    }
    data = make_dataset(rows, classes, PipelineConfig(**{**config["pipeline"], "cache": True}))
    y = rows["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    out = {}
    for name, shift in shifts.items():
        scores = []
        for images, _ in data:
            images = tf.clip_by_value(shift(images), 0, 255)
            p = model.predict_on_batch(images)[:, 0]
            if tta:
                p = (p + model.predict_on_batch(images[:, :, ::-1, :])[:, 0]) / 2
            scores.append(np.asarray(p))
        p = np.concatenate(scores)
        out[f"{name}_auc"] = float(skm.roc_auc_score(y, p))
        out[f"{name}_acc"] = float(skm.accuracy_score(y, p >= threshold))
    out["shifted_auc"] = float(np.mean([v for k, v in out.items() if k.endswith("_auc") and not k.startswith("clean")]))
    out["shifted_acc"] = float(np.mean([v for k, v in out.items() if k.endswith("_acc") and not k.startswith("clean")]))
    return out


def ablation(args: argparse.Namespace) -> None:
    import numpy as np
    import pandas as pd

    from core.augment import AugmentConfig
    from core.dataset import open_dataset
    from core.recipes import create_recipe_run
    from core.runs import read_status
    from core.splits import grouped_split
    from core.train import run_job

    table = open_dataset(args.data).table
    runs_dir = Path(tempfile.mkdtemp(prefix="recipe-ablation-"))
    variants = {
        "recipe": {},
        "no equalisation (x/255)": {"model": {"intensity": "rescale"}},
        "strong exposure augmentation": {"augment": AugmentConfig(translation=0.06, zoom=0.12, contrast=0.3, brightness=0.2,
                                                                 gamma=0.4, noise=0.03)},
        "no label smoothing": {"label_smoothing": 0.0},
        "no class weights": {"class_weighting": False},
        "no TTA (same model)": "tta",
        "float32 (no mixed precision)": {"mixed_precision": "off"},
    }
    if args.variants:
        variants = {k: v for k, v in variants.items() if k == "recipe" or any(w in k for w in args.variants)}
    rows = []
    for seed in args.seeds:
        val = grouped_split(table, seed=seed)
        val = val[val["split"] == "val"]
        base_run = None
        for name, change in variants.items():
            started = time.time()
            if change == "tta":
                import shutil

                run = runs_dir / f"{base_run.name}-nott"
                shutil.copytree(base_run, run)
                cfg = json.loads((run / "config.json").read_text())
                (run / "config.json").write_text(json.dumps({**cfg, "tta": False}))
            else:
                overrides = {k: v for k, v in change.items() if k != "model"}
                run = create_recipe_run("xray-scratch", args.data, seed=seed, runs_dir=runs_dir, epochs=args.epochs, tensorboard=False,
                                        **overrides)
                cfg = json.loads((run / "config.json").read_text())
                cfg["model"].update({"image_size": args.size, **change.get("model", {})})
                cfg["pipeline"]["image_size"] = args.size
                (run / "config.json").write_text(json.dumps(cfg))
                (run / ".claimed").touch()
                state = run_job(run, verbose=0)
                if state != "completed":
                    print(name, seed, state, read_status(run).get("message"), flush=True)
                    continue
                if name == "recipe":
                    base_run = run
            result = {"variant": name, "seed": seed, **shifted_scores(run, val), "minutes": (time.time() - started) / 60}
            rows.append(result)
            print(json.dumps(result), flush=True)
    frame = pd.DataFrame(rows)
    cols = ["clean_auc", "clean_acc", "shifted_auc", "shifted_acc", "minutes"]
    summary = frame.groupby("variant", sort=False)[cols].agg(["mean", "std"])
    print(f"\nAblation: {args.size}px, {args.epochs} epochs, seeds {args.seeds}, patient-grouped validation "
          f"({len(val)} images); shifted = mean over gamma 0.6/1.6, contrast 0.6, 3x3 blur")
    print("| variant | val AUC | val acc | shifted AUC | shifted acc | min |")
    print("|---|---|---|---|---|---|")
    for variant, r in summary.iterrows():
        cells = [f"{r[(c, 'mean')]:.3f} ± {0 if np.isnan(r[(c, 'std')]) else r[(c, 'std')]:.3f}" for c in cols[:4]]
        print(f"| {variant} | " + " | ".join(cells) + f" | {r[('minutes', 'mean')]:.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT))
    parser.add_argument("--recipe", default="xray", choices=("xray", "xray-scratch"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--test-dir", default=str(EXTERNAL_DEV) if EXTERNAL_DEV.is_dir() else None,
                        help="a folder of class folders from another source (default: ../shared/data/chest_xray/external-dev)")
    parser.add_argument("--runs-dir", default=None, help="default: the dashboard's models/ folder")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--size", type=int, default=96, help="ablation image size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="ablation seeds")
    parser.add_argument("--variants", nargs="+", default=None, help="ablate only variants whose name contains one of these words")
    args = parser.parse_args()
    if not Path(args.data).exists():
        print(f"No data at {args.data}; pass --data DIR (a folder of class folders).")
        return 2
    if args.ablation:
        args.epochs = args.epochs or 6
        ablation(args)
        return 0

    from core.evaluate import binary_summary
    from core.recipes import create_recipe_run
    from core.runs import read_metrics, read_status
    from core.train import run_job

    overrides = {"epochs": args.epochs} if args.epochs else {}
    run = create_recipe_run(args.recipe, args.data, seed=args.seed, runs_dir=Path(args.runs_dir) if args.runs_dir else None, **overrides)
    (run / ".claimed").touch()
    started = time.time()
    state = run_job(run, verbose=2)
    minutes = (time.time() - started) / 60
    status = read_status(run)
    print(f"\nrun: {run}\nstate: {state} {status.get('message', '')}\ntraining minutes (incl. threshold tuning): {minutes:.1f}")
    if state != "completed":
        return 1
    metrics = read_metrics(run)
    best = metrics.loc[metrics["val_auc"].idxmax()]
    print(f"epochs: {len(metrics)}; best val AUC {best['val_auc']:.4f} at epoch {int(best['epoch'])}")
    import pandas as pd

    val = pd.read_csv(run / "predictions-val.csv")
    threshold = float(status.get("threshold", 0.5))
    print(f"threshold (saved with the run): {threshold:.4f} ({status.get('threshold_source', 'default')})")
    print("validation (patient-grouped):", json.dumps(binary_summary(val, status["classes"], threshold, n_boot=200), default=float))
    if args.test_dir:
        report = external_report(run, args.test_dir)
        print("\nexternal test set", args.test_dir)
        for key in ("n", "accuracy", "auc", "sensitivity", "specificity", "f1", "accuracy_ci95", "auc_ci95", "confusion_matrix"):
            print(f"  {key}: {report[key]}")
        internal = binary_summary(val, status["classes"], threshold, n_boot=200)
        print(f"  gap (validation - external): accuracy {internal['accuracy'] - report['accuracy']:.3f}, "
              f"AUC {internal['auc'] - report['auc']:.3f}")
    print(f"peak memory: {peak_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
