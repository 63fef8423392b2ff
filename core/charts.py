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
