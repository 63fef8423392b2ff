"""The generalisation gap: the run's own test split against every external set it was scored on.

From the stored predictions tables (predictions-test.csv, predictions-external-*.csv), at the run's
saved threshold, with bootstrap 95% intervals; and a plain sentence per external set saying whether
the drop is larger than the intervals (they do not overlap) or within them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.evaluate import load_predictions, stored_predictions, summarize

INTERNAL = "test"
INTERNAL_LABEL = "internal test split"  # its row in the table
# each with its 95% interval: another hospital's loss often shows in one of the two rates (healthy children called sick)
# while the AUC barely moves
GAP_METRICS = {"accuracy": "accuracy", "auc": "AUC", "sensitivity": "sensitivity", "specificity": "specificity"}


def external_sets(run: Path) -> list[str]:
    """The external sets the run was scored on: the names of its stored predictions ('external-...')."""
    return [name for name in stored_predictions(run) if name.startswith("external-") and not name.endswith(("-tta", "-notta"))]


def gap_table(run: Path, n_boot: int = 1000) -> pd.DataFrame:
    """One row per set (internal test first) of a binary head: n and each of GAP_METRICS with its interval (_lo, _hi)."""
    run = Path(run)
    names = [INTERNAL, *external_sets(run)]
    rows = []
    for name in names:
        predictions = load_predictions(run, name)
        if predictions is None or predictions.empty:
            continue
        s = summarize(run, predictions, n_boot=n_boot)
        if s["head"] != "binary":
            continue
        row = {"set": INTERNAL_LABEL if name == INTERNAL else name, "n": s["n"]}
        for metric in GAP_METRICS:
            row.update({metric: s[metric], f"{metric}_lo": s[f"{metric}_ci95"][0], f"{metric}_hi": s[f"{metric}_ci95"][1]})
        rows.append(row)
    return pd.DataFrame(rows)


def gap_display(table: pd.DataFrame) -> pd.DataFrame:
    """gap_table as people read it: one column per metric, "0.925 (0.896-0.953)", for the page and the report."""
    out = table[["set", "n"]].copy()
    for metric, label in GAP_METRICS.items():
        out[f"{label} (95% CI)"] = [f"{r[metric]:.3f} ({r[f'{metric}_lo']:.3f}-{r[f'{metric}_hi']:.3f})" for _, r in table.iterrows()]
    return out


def gap_sentences(table: pd.DataFrame) -> list[str]:
    """Per external set and metric: the gap, and whether the intervals say it is more than chance."""
    if table.empty or table.iloc[0]["set"] != INTERNAL_LABEL:
        return []
    internal = table.iloc[0]
    out = []
    for _, ext in table.iloc[1:].iterrows():
        for metric, label in GAP_METRICS.items():
            i, e = internal[metric], ext[metric]
            text = (f"{ext['set']}: {label} {e:.3f} ({ext[f'{metric}_lo']:.3f}-{ext[f'{metric}_hi']:.3f}) against "
                    f"{i:.3f} ({internal[f'{metric}_lo']:.3f}-{internal[f'{metric}_hi']:.3f}) on the internal test split")
            if ext[f"{metric}_hi"] < internal[f"{metric}_lo"]:
                out.append(f"{text}: the intervals do not overlap, so the model is worse on these images than on its own "
                           f"test split by more than chance explains (gap {i - e:.3f}).")
            elif ext[f"{metric}_lo"] > internal[f"{metric}_hi"]:
                out.append(f"{text}: better on these images, beyond the intervals.")
            else:
                out.append(f"{text}: the difference is within the intervals, so these images give no evidence of a gap.")
    return out
