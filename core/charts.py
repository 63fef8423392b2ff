"""Plotly figures shared by the pages: one place for chart styling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SPLIT_COLORS = {"train": "#0B6E99", "val": "#F39C12", "test": "#7D3C98"}
TEMPLATE = "plotly_white"


def class_counts_figure(counts: pd.DataFrame) -> go.Figure:
    """Grouped bars of images per class and split, from `dataset.class_counts` output."""
    body = counts.drop(index="total", errors="ignore").drop(columns="total", errors="ignore")
    long = body.reset_index().melt(id_vars="label", var_name="split", value_name="images")
    fig = px.bar(
        long, x="label", y="images", color="split", barmode="group", text="images",
        color_discrete_map=SPLIT_COLORS, template=TEMPLATE,
    )
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), legend_title_text="split", xaxis_title=None)
    return fig


def histogram_figure(before, after, bins: int = 64) -> go.Figure:
    """Pixel histograms of an image before and after a transform, side by side (own x ranges)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("before", "after"))
    for col, values in ((1, before), (2, after)):
        counts, edges = np.histogram(np.asarray(values, dtype=np.float64).ravel(), bins=bins)
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, marker_color="#0B6E99", showlegend=False), row=1, col=col)
    fig.update_layout(template=TEMPLATE, height=260, margin=dict(l=10, r=10, t=30, b=10), bargap=0)
    return fig


POINTS_MAX = 5_000  # above this many images, charts plot aggregates: 100k markers stall a browser tab


def size_scatter_figure(table: pd.DataFrame) -> go.Figure:
    """Width x height, coloured by class (outliers and mixed sources stand out): one marker per image
    with its path up to POINTS_MAX images, else one per distinct size and class, sized by its count."""
    layout = dict(height=340, margin=dict(l=10, r=10, t=30, b=10), legend_title_text="class")
    if len(table) <= POINTS_MAX:
        fig = px.scatter(table, x="width", y="height", color="label", opacity=0.6, template=TEMPLATE,
                         hover_data={"path": True}, render_mode="webgl")
        return fig.update_layout(**layout)
    sizes = table.groupby(["width", "height", "label"], observed=True).size().rename("images").reset_index()
    fig = px.scatter(sizes, x="width", y="height", color="label", size=np.sqrt(sizes["images"]), opacity=0.6,
                     template=TEMPLATE, hover_data={"images": True}, render_mode="webgl")
    return fig.update_layout(**layout, title=dict(text=f"{len(table):,} images at {len(sizes):,} distinct sizes", font_size=12))


def size_histograms_figure(table: pd.DataFrame, bins: int = 30) -> go.Figure:
    """Histograms of width, height, aspect ratio and file size (KB), per class, binned here: the
    browser gets 30 bars a class, not one value per image."""
    facts = {
        "width (px)": table["width"], "height (px)": table["height"],
        "aspect (w/h)": table["width"] / table["height"], "file size (KB)": table["bytes"] / 1024,
    }
    fig = make_subplots(rows=1, cols=4, subplot_titles=list(facts))
    colors = px.colors.qualitative.Plotly
    labels = table["label"].to_numpy()
    for col, values in enumerate(facts.values(), 1):
        values = values.to_numpy(float)
        edges = np.histogram_bin_edges(values, bins=bins) if np.ptp(values) > 0 else np.array([values[0] - 0.5, values[0] + 0.5])
        for k, label in enumerate(sorted(set(labels), key=str)):
            counts, _ = np.histogram(values[labels == label], bins=edges)
            fig.add_trace(
                go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), name=str(label), legendgroup=str(label),
                       showlegend=col == 1, marker_color=colors[k % len(colors)], opacity=0.7),
                row=1, col=col,
            )
    fig.update_layout(template=TEMPLATE, barmode="overlay", height=280, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def with_f1(metrics: pd.DataFrame) -> pd.DataFrame:
    """Add f1 (and val_f1) columns from the logged precision and recall: F1 = 2PR / (P + R)."""
    out = metrics.copy()
    for prefix in ("", "val_"):
        p, r = prefix + "precision", prefix + "recall"
        if p in out and r in out:
            out[prefix + "f1"] = (2 * out[p] * out[r] / (out[p] + out[r])).fillna(0.0)
    return out


def training_curves_figure(metrics: pd.DataFrame) -> go.Figure:
    """Per-epoch curves: loss, accuracy/AUC/F1 (train and validation) and the learning rate."""
    metrics = with_f1(metrics)
    panels = [("loss", "loss"), ("accuracy", "accuracy"), ("auc", "AUC"), ("f1", "F1"), ("mae", "MAE")]
    panels = [(key, title) for key, title in panels if key in metrics]
    titles = [title for _, title in panels] + (["learning rate"] if "lr" in metrics else [])
    fig = make_subplots(rows=1, cols=max(len(titles), 1), subplot_titles=titles)
    for col, (key, _) in enumerate(panels, 1):
        for prefix, color, name in (("", SPLIT_COLORS["train"], "train"), ("val_", SPLIT_COLORS["val"], "validation")):
            if prefix + key in metrics:
                fig.add_trace(go.Scatter(x=metrics["epoch"], y=metrics[prefix + key], mode="lines+markers", name=name,
                                         line_color=color, legendgroup=name, showlegend=col == 1), row=1, col=col)
    if "lr" in metrics:
        fig.add_trace(go.Scatter(x=metrics["epoch"], y=metrics["lr"], mode="lines+markers", name="lr", line_color="#555",
                                 showlegend=False), row=1, col=len(titles))
        fig.update_yaxes(type="log", tickformat=".0e", row=1, col=len(titles))  # 1e-04, not SI "100μ"
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(template=TEMPLATE, height=300, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def batch_curves_figure(batches: pd.DataFrame) -> go.Figure:
    """Training loss (and accuracy) every N batches, on a continuous epoch axis."""
    batches = with_f1(batches)
    steps = batches["epoch"] - 1 + batches["batch"] / batches.groupby("epoch")["batch"].transform("max")
    fig = go.Figure()
    for key, color in (("loss", SPLIT_COLORS["train"]), ("accuracy", SPLIT_COLORS["test"]), ("f1", SPLIT_COLORS["val"])):
        if key in batches:
            fig.add_trace(go.Scatter(x=steps, y=batches[key], mode="lines", name=f"batch {key}", line_color=color))
    fig.update_layout(template=TEMPLATE, height=240, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="epoch")
    return fig


def runs_overlay_figure(metrics_by_run: dict[str, pd.DataFrame]) -> go.Figure:
    """Validation (or training) loss per epoch of several runs on one chart."""
    fig = go.Figure()
    for name, metrics in metrics_by_run.items():
        key = "val_loss" if "val_loss" in metrics else "loss"
        fig.add_trace(go.Scatter(x=metrics["epoch"], y=metrics[key], mode="lines+markers", name=f"{name} ({key})"))
    fig.update_layout(template=TEMPLATE, height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="epoch", yaxis_title="loss")
    return fig


def confusion_figure(matrix, labels: list[str], normalise: bool = False) -> go.Figure:
    """Confusion heatmap, rows = true class; counts, or each row as a share of that class."""
    counts = np.asarray(matrix, dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise else counts
    text = [[f"{v:.1%}" if normalise else f"{int(v)}" for v in row] for row in values]
    fig = go.Figure(go.Heatmap(z=values, x=labels, y=labels, text=text, texttemplate="%{text}", colorscale="Blues",
                               showscale=False, hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=360, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="predicted",
                      yaxis_title="true", yaxis_autorange="reversed")
    return fig


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float | None = None) -> go.Figure:
    """ROC curves (name -> (y_true 0/1, score)) with AUC in the legend; the operating point of the
    first curve at `threshold` marked."""
    from sklearn import metrics as skm

    fig = go.Figure()
    for name, (y, p) in curves.items():
        fpr, tpr, _ = skm.roc_curve(y, p)
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {skm.roc_auc_score(y, p):.3f})"))
    if threshold is not None and curves:
        y, p = next(iter(curves.values()))
        y, p = np.asarray(y), np.asarray(p)
        tpr = ((p >= threshold) & (y == 1)).sum() / max((y == 1).sum(), 1)
        fpr = ((p >= threshold) & (y == 0)).sum() / max((y == 0).sum(), 1)
        fig.add_trace(go.Scatter(x=[fpr], y=[tpr], mode="markers", marker=dict(size=12, color="#C0392B"),
                                 name=f"threshold {threshold:.3f}"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="#999"), showlegend=False))
    fig.update_layout(template=TEMPLATE, height=380, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="1 - specificity",
                      yaxis_title="sensitivity", legend=dict(x=0.35, y=0.05))
    return fig


def pr_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> go.Figure:
    """Precision-recall curves with average precision in the legend."""
    from sklearn import metrics as skm

    fig = go.Figure()
    for name, (y, p) in curves.items():
        precision, recall, _ = skm.precision_recall_curve(y, p)
        fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines",
                                 name=f"{name} (AP {skm.average_precision_score(y, p):.3f})"))
    fig.update_layout(template=TEMPLATE, height=380, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="recall (sensitivity)",
                      yaxis_title="precision", legend=dict(x=0.05, y=0.05), yaxis_range=[0, 1.02])
    return fig


def reliability_figure(predicted: np.ndarray, observed: np.ndarray, counts: np.ndarray, ece: float) -> go.Figure:
    """Reliability diagram: observed rate against mean predicted probability per bin (size = images)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="#999"), name="perfect"))
    sizes = 8 + 22 * np.sqrt(np.asarray(counts) / max(np.max(counts), 1))
    fig.add_trace(go.Scatter(x=predicted, y=observed, mode="lines+markers", marker=dict(size=sizes), name=f"model (ECE {ece:.3f})",
                             text=[f"{int(c)} images" for c in counts], hovertemplate="%{x:.2f} -> %{y:.2f}<br>%{text}<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=380, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="mean predicted probability",
                      yaxis_title="observed positive rate", xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig


def threshold_figure(table: pd.DataFrame, threshold: float) -> go.Figure:
    """Sensitivity, specificity, F1 and accuracy against the decision threshold, the chosen one marked."""
    fig = go.Figure()
    for key in ("sensitivity", "specificity", "f1", "accuracy"):
        fig.add_trace(go.Scatter(x=table["threshold"], y=table[key], mode="lines", name=key))
    fig.add_vline(x=threshold, line_dash="dash", line_color="#C0392B")
    fig.update_layout(template=TEMPLATE, height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="threshold", yaxis_range=[0, 1.02])
    return fig


def per_class_figure(report: dict) -> go.Figure:
    """Precision, recall and F1 per class from a scikit-learn classification report dict."""
    rows = [(label, m) for label, m in report.items() if isinstance(m, dict) and label not in ("macro avg", "weighted avg")]
    fig = go.Figure()
    for key in ("precision", "recall", "f1-score"):
        fig.add_trace(go.Bar(x=[label for label, _ in rows], y=[m[key] for _, m in rows], name=key))
    fig.update_layout(template=TEMPLATE, height=320, margin=dict(l=10, r=10, t=30, b=10), barmode="group", yaxis_range=[0, 1.02])
    return fig


def kappa_matrices_figure(observed, expected, weights, labels: list[str]) -> go.Figure:
    """The three matrices quadratic kappa is made of, side by side."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("observed O", "expected E", "weights W"))
    for col, matrix in enumerate((observed, expected, weights), 1):
        values = np.asarray(matrix, float)
        fig.add_trace(go.Heatmap(z=values, x=labels, y=labels, text=np.round(values, 2), texttemplate="%{text}",
                                 colorscale="Blues", showscale=False), row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(template=TEMPLATE, height=320, margin=dict(l=10, r=10, t=40, b=10))
    return fig


EXTERNAL_COLORS = ("#C0392B", "#16A085", "#8E44AD", "#2C3E50")


def generalisation_curves_figure(external: pd.DataFrame) -> go.Figure:
    """Validation and each external set per epoch (external.csv): loss, AUC, and accuracy, sensitivity and specificity
    at the run's threshold (the rates of a binary run: another hospital's loss often shows in one of them), all computed
    the same way, so a widening gap between the lines is the generalisation gap."""
    panels = [("loss", "loss (cross-entropy)"), ("auc", "AUC"), ("accuracy", "accuracy at the threshold"),
              ("sensitivity", "sensitivity"), ("specificity", "specificity")]
    panels = [(key, title) for key, title in panels if key in external and external[key].notna().any()]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels])
    names = list(dict.fromkeys(external["set"]))
    for i, name in enumerate(names):
        rows = external[external["set"] == name]
        color = SPLIT_COLORS["val"] if name == "validation" else EXTERNAL_COLORS[(i - 1) % len(EXTERNAL_COLORS)]
        for col, (key, _) in enumerate(panels, 1):
            fig.add_trace(go.Scatter(x=rows["epoch"], y=rows[key], mode="lines+markers", name=name, line_color=color,
                                     line_dash="solid" if name == "validation" else "dash", legendgroup=name,
                                     showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(template=TEMPLATE, height=300, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def gap_figure(table: pd.DataFrame, metric: str = "accuracy") -> go.Figure:
    """A metric with its 95% interval for the internal test split and each external set (generalisation.gap_table)."""
    fig = go.Figure(go.Scatter(
        x=table[metric], y=table["set"], mode="markers", marker=dict(size=11, color=SPLIT_COLORS["test"]),
        error_x=dict(type="data", symmetric=False, array=table[f"{metric}_hi"] - table[metric],
                     arrayminus=table[metric] - table[f"{metric}_lo"]),
    ))
    fig.update_layout(template=TEMPLATE, height=80 + 45 * len(table), margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title=f"{metric} (95% bootstrap interval)", yaxis_autorange="reversed")
    return fig
