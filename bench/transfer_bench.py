"""Transfer learning from genuine ImageNet weights against the same network from scratch (issue 14).

Trains on ../shared/data/chest_xray/train with the recipe's patient-grouped split; each pretrained
variant does feature extraction (backbone frozen, LR 1e-3) then fine-tunes its last layers at LR
1e-4, as the seeds do; its from-scratch twin trains every layer for the same number of epochs. The
threshold is chosen on validation (Youden). Prints validation and external-dev (another hospital's
images, never used for any choice) accuracy at that threshold and AUC, minutes per run.

    python bench/transfer_bench.py [--size 224] [--fe-epochs 3] [--ft-epochs 3] [--only mobilenetv2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
TRAIN, EXTERNAL, WEIGHTS = SHARED / "chest_xray" / "train", SHARED / "chest_xray" / "external-dev", SHARED / "imagenet-weights"

VARIANTS = [  # (label, model, alpha, weights)
    ("MobileNetV2 0.35, ImageNet", "mobilenetv2", 0.35, "imagenet"),
    ("MobileNetV2 0.35, from scratch", "mobilenetv2", 0.35, "none"),
    ("MobileNet 0.25, ImageNet", "mobilenet", 0.25, "imagenet"),
    ("MobileNet 0.25, from scratch", "mobilenet", 0.25, "none"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fe-epochs", type=int, default=3)
    parser.add_argument("--ft-epochs", type=int, default=3)
    parser.add_argument("--fine-tune-layers", type=int, default=30)
    parser.add_argument("--only", default="", help="run the variants whose model name contains this")
    parser.add_argument("--runs-dir", default=None)
    args = parser.parse_args()
    if not TRAIN.is_dir():
        sys.exit(f"{TRAIN} is not here")
    os.environ.setdefault("MEDIMAGE_WEIGHTS_DIR", str(WEIGHTS))

    from core.dataset import open_dataset
    from core.evaluate import binary_summary, load_predictions, predict_table
    from core.runs import read_status
    from core.splits import grouped_split
    from core.train import create_run_with_rows, make_config, run_job

    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="transfer-bench-"))
    rows = grouped_split(open_dataset(str(TRAIN)).table, seed=0)
    external = open_dataset(str(EXTERNAL)).table if EXTERNAL.is_dir() else None
    results = []
    for label, model, alpha, weights in VARIANTS:
        if args.only and args.only != model:
            continue
        epochs = args.fe_epochs + args.ft_epochs
        config = make_config(str(TRAIN), model, args.size, epochs, 32, weights, channels=3, alpha=alpha, tensorboard=False,
                             tune_threshold=True, early_stopping_patience=0, reduce_lr_patience=0, dense=(), dropout=0.2)
        if weights == "imagenet":
            config = replace(config, epochs=args.fe_epochs, fine_tune_epochs=args.ft_epochs, fine_tune_lr=1e-4,
                             model=replace(config.model, freeze="feature_extraction", fine_tune_layers=args.fine_tune_layers))
        else:
            config = replace(config, model=replace(config.model, freeze="full"))
        run = create_run_with_rows(config, rows, runs_dir)
        started = time.perf_counter()
        state = run_job(run, verbose=0)
        minutes = (time.perf_counter() - started) / 60
        status = read_status(run)
        classes, threshold = status["classes"], float(status.get("threshold", 0.5))
        val = binary_summary(load_predictions(run, "val"), classes, threshold, n_boot=200)
        row = {"variant": label, "state": state, "minutes": round(minutes, 1), "threshold": round(threshold, 3),
               "val_acc": val["accuracy"], "val_auc": val["auc"], "run": str(run)}
        if external is not None:
            ext = binary_summary(predict_table(run, external, "external-dev"), classes, threshold, n_boot=1000)
            row.update(ext_acc=ext["accuracy"], ext_acc_ci=ext["accuracy_ci95"], ext_auc=ext["auc"], ext_auc_ci=ext["auc_ci95"],
                       ext_sens=ext["sensitivity"], ext_spec=ext["specificity"])
        results.append(row)
        print(json.dumps(row, default=float), flush=True)
    print("\n| variant | epochs | minutes | val acc | val AUC | external-dev acc (95% CI) | external-dev AUC | sens / spec |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        ext = (f"{r['ext_acc']:.3f} ({r['ext_acc_ci'][0]:.3f}-{r['ext_acc_ci'][1]:.3f}) | {r['ext_auc']:.3f} | "
               f"{r['ext_sens']:.2f} / {r['ext_spec']:.2f}") if "ext_acc" in r else "n/a | n/a | n/a"
        print(f"| {r['variant']} | {args.fe_epochs}+{args.ft_epochs} | {r['minutes']} | {r['val_acc']:.3f} | {r['val_auc']:.3f} | {ext} |")


if __name__ == "__main__":
    main()
