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


def size_scatter_figure(table: pd.DataFrame) -> go.Figure:
    """Width x height of every image, coloured by class (outliers and mixed sources stand out)."""
    fig = px.scatter(
        table, x="width", y="height", color="label", opacity=0.6, template=TEMPLATE,
        hover_data={"path": True}, render_mode="webgl",
    )
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=30, b=10), legend_title_text="class")
    return fig


def size_histograms_figure(table: pd.DataFrame) -> go.Figure:
    """Histograms of width, height, aspect ratio and file size (KB), per class."""
    facts = {
        "width (px)": table["width"], "height (px)": table["height"],
        "aspect (w/h)": table["width"] / table["height"], "file size (KB)": table["bytes"] / 1024,
    }
    fig = make_subplots(rows=1, cols=4, subplot_titles=list(facts))
    colors = px.colors.qualitative.Plotly
    for k, label in enumerate(sorted(table["label"].unique(), key=str)):
        mask = table["label"] == label
        for col, values in enumerate(facts.values(), 1):
            fig.add_trace(
                go.Histogram(x=values[mask], name=str(label), legendgroup=str(label), showlegend=col == 1,
                             marker_color=colors[k % len(colors)], opacity=0.7, nbinsx=30),
                row=1, col=col,
            )
    fig.update_layout(template=TEMPLATE, barmode="overlay", height=280, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def training_curves_figure(metrics: pd.DataFrame) -> go.Figure:
    """Per-epoch curves: loss, accuracy/AUC (train and validation) and the learning rate."""
    panels = [("loss", "loss"), ("accuracy", "accuracy"), ("auc", "AUC"), ("mae", "MAE")]
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
        fig.update_yaxes(type="log", row=1, col=len(titles))
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(template=TEMPLATE, height=300, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def batch_curves_figure(batches: pd.DataFrame) -> go.Figure:
    """Training loss (and accuracy) every N batches, on a continuous epoch axis."""
    steps = batches["epoch"] - 1 + batches["batch"] / batches.groupby("epoch")["batch"].transform("max")
    fig = go.Figure()
    for key, color in (("loss", SPLIT_COLORS["train"]), ("accuracy", SPLIT_COLORS["test"])):
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
