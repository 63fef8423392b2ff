"""Plotly figures shared by the pages: one place for chart styling."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

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
