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
