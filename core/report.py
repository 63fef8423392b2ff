"""The evaluation report of a run: one self-contained HTML file (plotly inlined, opens offline).

It states what was evaluated and how far to trust it: dataset and split counts, the training
config and curves, metrics with bootstrap intervals, confusion matrix, ROC, calibration, the
threshold and where it came from, and the limitations (not for clinical use, class balance,
whether the data came from another source than the training images).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.io as pio

from core import charts, metrics, novelty
from core.evaluate import threshold_source
from core.generalisation import external_sets, gap_display, gap_sentences, gap_table
from core.model_card import training_procedure
from core.runs import now_iso, read_json, read_metrics, read_status


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.4f}"
    return html.escape(str(value))


def _threshold_words(run: Path, status: dict[str, Any], summary: dict[str, Any]) -> str:
    """Where the report's threshold came from: the run's saved one, or the Evaluate page's slider moved off it."""
    saved = float(status.get("threshold", 0.5))
    if abs(float(summary.get("threshold", saved)) - saved) > 5e-4:  # the slider shows 3 decimals of the saved value
        return "set on the Evaluate page for this report, not saved with the run"
    return threshold_source(run, status)


def _table(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows) + "</table>"


def _metric_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = []
    for key in (
        "accuracy",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "f1",
        "auc",
        "average_precision",
        "kappa",
        "kappa_rounding",
        "auc_macro_ovr",
        "f1_macro",
        "brier",
        "ece",
        "mae",
    ):
        if key in summary:
            ci = summary.get(f"{key}_ci95")
            text = _fmt(summary[key]) + (f" (95% CI {_fmt(ci[0])} to {_fmt(ci[1])})" if ci else "")
            rows.append((key.replace("_", " "), text))
    return rows


def _gap_html(gap: pd.DataFrame) -> str:
    """The Evaluate page's generalisation-gap panel as HTML: each set with its intervals, and the sentences."""
    sentences = "".join(f"<li>{html.escape(line)}</li>" for line in gap_sentences(gap))
    return f"<h2>Generalisation gap</h2>{gap_display(gap).to_html(index=False, border=0)}<ul>{sentences}</ul>"


def build_report(run: Path, name: str, predictions: pd.DataFrame, summary: dict[str, Any], split_counts: pd.DataFrame | None = None) -> str:
    """The HTML report of `run` evaluated on predictions `name` (e.g. 'test', 'external-...')."""
    run = Path(run)
    config, status = read_json(run / "config.json"), read_status(run)
    classes = status.get("classes", [])
    figures = []
    history = read_metrics(run)
    if len(history):
        figures.append(("Training curves", charts.training_curves_figure(history)))
    figures.append(("Confusion matrix", charts.confusion_figure(summary["confusion_matrix"], classes)))
    if summary.get("head") == "binary":
        y = (predictions["label"] == classes[1]).to_numpy(int)
        p = predictions[f"p_{classes[1]}"].to_numpy(float)
        if len(np.unique(y)) == 2:
            figures.append(("ROC", charts.roc_figure({run.name: (y, p)}, summary["threshold"])))
        figures.append(("Calibration", charts.reliability_figure(*metrics.calibration(y, p)[1:], summary["ece"])))
    parts = []
    for i, (title, fig) in enumerate(figures):
        parts.append(f"<h3>{html.escape(title)}</h3>" + pio.to_html(fig, include_plotlyjs=i == 0, full_html=False))
    counts = predictions["label"].value_counts().reindex(classes, fill_value=0)
    balance = ", ".join(f"{c}: {n} ({n / max(len(predictions), 1):.0%})" for c, n in counts.items())
    external = name.startswith("external")
    others = len(external_sets(run))
    gap = gap_table(run) if others else pd.DataFrame()  # the run's test split against every external set (binary heads)
    if external:
        validation = "these images came from a source other than the training set."
    elif others:
        validation = (f"these images are a split of the training source, which flatters the model; the run was also scored on "
                      f"{others} set(s) from elsewhere" + (": see 'Generalisation gap'." if len(gap) > 1 else "."))
    else:
        validation = ("not done. These images are a split of the training source, which flatters the model; "
                      "evaluate on data from another hospital before trusting these numbers.")
    limitations = [
        "Not for clinical use. This is a research and teaching tool; no result here is a diagnosis.",
        f"Class balance of the evaluated images: {balance}. Accuracy depends on it; sensitivity, specificity and AUC do not.",
        "External validation: " + validation,
        f"Decision threshold {_fmt(summary.get('threshold', 'n/a'))} ({_threshold_words(run, status, summary)})."
        if summary.get("head") == "binary"
        else "",
    ]
    reference = novelty.load(run) if "unusual" in predictions else None  # predicted with the check of unusual images
    if reference is not None:
        limitations.append("Unusual images: " + novelty.site_summary(reference, predictions["unusual"].to_numpy(bool)))
    model = config.get("model", {})
    config_rows = [
        ("data", config.get("data")),
        ("model", model.get("name")),
        ("weights", model.get("weights")),
        ("image size", model.get("image_size")),
        ("channels", model.get("channels")),
        ("epochs trained", status.get("epoch")),
    ]
    procedure = "".join(f"<li>{html.escape(line)}</li>" for line in training_procedure(config))
    split_html = f"<h2>Dataset</h2>{split_counts.to_html()}" if split_counts is not None else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Report {html.escape(run.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}}table{{border-collapse:collapse;margin:.5em 0}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.warn{{background:#fff3cd;padding:.7em;border-radius:6px}}</style></head><body>
<h1>Evaluation report: {html.escape(run.name)}</h1>
<p>Evaluated on <b>{html.escape(name)}</b> ({len(predictions)} images), {now_iso()}.</p>
<div class="warn"><ul>{"".join(f"<li>{html.escape(x)}</li>" for x in limitations if x)}</ul></div>
{split_html}<h2>Configuration</h2>{_table(config_rows)}<h3>Training procedure</h3><ul>{procedure}</ul>
<h2>Metrics</h2>{_table(_metric_rows(summary))}
{_gap_html(gap) if not gap.empty else ""}
<h2>Figures</h2>{"".join(parts)}
</body></html>"""
