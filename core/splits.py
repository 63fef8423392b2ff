"""Split, trim and weigh a dataset table (columns path, label, split, ...)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.errors import DatasetError

DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


def assign_split(table: pd.DataFrame, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0) -> pd.DataFrame:
    """Stratified, seeded train/val/test split (a copy of the table with `split` filled).

    Each class is shuffled and cut by the fractions on its own, so every class keeps its share in
    every split and even a class of three images lands in train, val and test (sklearn's
    stratified splitter refuses such small classes).
    """
    train_f, val_f, test_f = (float(f) for f in fractions)
    if min(train_f, val_f, test_f) < 0 or train_f <= 0 or abs(train_f + val_f + test_f - 1) > 1e-6:
        raise DatasetError(f"Split fractions must be >= 0, train > 0, and add up to 1; got {fractions}.")
    counts = table["label"].value_counts()
    needed = 1 + (val_f > 0) + (test_f > 0)
    small = counts[counts < needed]
    if len(small):
        raise DatasetError(
            "Too few images to split: " + ", ".join(f"{k} has {v}" for k, v in small.items())
            + f". Each class needs at least {needed} images, or give the split yourself."
        )
    out = table.copy()
    out["split"] = "train"
    rng = np.random.default_rng(seed)
    for label in sorted(counts.index, key=str):
        index = out.index[out["label"] == label].to_numpy()
        index = index[rng.permutation(len(index))]
        n_test = max(int(round(len(index) * test_f)), 1 if test_f > 0 else 0)
        n_val = max(int(round(len(index) * val_f)), 1 if val_f > 0 else 0)
        out.loc[index[:n_test], "split"] = "test"
        out.loc[index[n_test : n_test + n_val], "split"] = "val"
    return out


def trim(
    table: pd.DataFrame, max_per_class: int | None = None, min_per_class: int | None = None, seed: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """Sample each class down to max_per_class; drop classes under min_per_class.

    Returns the trimmed table and the names of dropped classes (so the page can say what went).
    """
    counts = table["label"].value_counts()
    dropped = sorted(counts[counts < min_per_class].index) if min_per_class else []
    kept = table[~table["label"].isin(dropped)]
    if max_per_class:
        kept = pd.concat(
            g.sample(n=min(len(g), max_per_class), random_state=seed) for _, g in kept.groupby("label", sort=False)
        )
    return kept.sort_index(), dropped


def class_weights(labels: pd.Series | np.ndarray) -> dict[str, float]:
    """Inverse-frequency weights, n_samples / (n_classes * count): the balanced loss weighting."""
    from sklearn.utils.class_weight import compute_class_weight  # here: sklearn costs ~1 s to import, and Home never needs it

    labels = np.asarray(labels)
    classes = np.unique(labels)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {str(c): float(w) for c, w in zip(classes, weights, strict=True)}
