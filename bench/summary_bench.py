"""Evaluation summary speed: the bootstrap intervals from counts and ranks vs scikit-learn's metrics per resample (naive).

Usage: python bench/summary_bench.py [--cases 624 5000] [--boot 1000]
For each size, binary predictions like an independent test split's (624 is the public chest X-ray set's), the
summary the Evaluate page, the report and the generalisation gap show: `binary_summary` as it is, and the same
bootstrap with scikit-learn's accuracy, ROC AUC, F1, kappa, sensitivity, specificity, PPV, NPV and balanced
accuracy on every resample (the way before), in the same run.
It checks that both give the same intervals and prints the times and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[624, 5000])
    parser.add_argument("--boot", type=int, default=1000)
    args = parser.parse_args()
    from core import metrics
    from core.evaluate import binary_summary

    classes, threshold = ["NORMAL", "PNEUMONIA"], 0.5
    naive_metrics = {
        "accuracy": lambda a, b: skm.accuracy_score(a, b >= threshold),
        "auc": skm.roc_auc_score,
        "f1": lambda a, b: skm.f1_score(a, b >= threshold, zero_division=0),
        "kappa": lambda a, b: skm.cohen_kappa_score(a, b >= threshold, weights="quadratic"),
        "sensitivity": lambda a, b: skm.recall_score(a, b >= threshold),
        "specificity": lambda a, b: skm.recall_score(a, b >= threshold, pos_label=0),
        "ppv": lambda a, b: skm.precision_score(a, b >= threshold, zero_division=0),
        "npv": lambda a, b: skm.precision_score(a, b >= threshold, pos_label=0, zero_division=0),
        "balanced_accuracy": lambda a, b: skm.balanced_accuracy_score(a, b >= threshold),
    }
    for n in args.cases:
        rng = np.random.default_rng(0)
        y = (rng.random(n) < 0.63).astype(int)
        p = np.clip(0.35 * y + rng.normal(0.4, 0.2, n), 0, 1).round(3)
        table = pd.DataFrame({"label": np.array(classes)[y], f"p_{classes[1]}": p})
        start = time.perf_counter()
        summary = binary_summary(table, classes, threshold, n_boot=args.boot)
        fast = time.perf_counter() - start
        start = time.perf_counter()
        values: dict[str, list[float]] = {key: [] for key in naive_metrics}
        for counts in metrics.resample_counts(n, args.boot, seed=0):  # the same resamples, as copied cases
            drawn = np.repeat(np.arange(n), counts)
            for key, fn in naive_metrics.items():
                values[key].append(fn(y[drawn], p[drawn]))
        naive = {key: np.percentile(found, [2.5, 97.5]) for key, found in values.items()}
        slow = time.perf_counter() - start
        same = all(np.allclose(summary[f"{key}_ci95"], naive[key]) for key in naive)
        print(f"{n:6,} cases, {args.boot} resamples: scikit-learn per resample {slow:6.2f} s · binary_summary {fast:5.2f} s "
              f"· {slow / fast:5.1f}x faster · same intervals: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
