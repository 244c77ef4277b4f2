"""The Reader Study's ROC figure: the model's curve and one distinct point per reader.

A class of 30 on one chart needs more than colour: every reader gets a
colour and a marker shape, cycled with co-prime periods (7 colours, 11
shapes), so no two of the first 77 readers look alike. Black is left out of
the readers' colours and the model's curve is a light grey: the app's theme is
dark, and the chart goes on a projector (larger type than the other charts).
"""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from fracture.viz.theme import NEUTRAL_COLOR, SERIES_COLORS, style_figure

MARKERS = ("circle", "square", "diamond", "triangle-up", "triangle-down", "star", "cross", "x", "pentagon",
           "hexagon", "triangle-left")
#: The palette without black (invisible on the app's dark background).
READER_COLORS = tuple(c for c in SERIES_COLORS if c.lower() != "#000000")
MODEL_COLOR = "#B0B0B0"
FONT_SIZE = 15


def reader_style(index: int) -> tuple[str, str]:
    """(colour, marker symbol) of the ``index``-th reader."""
    return READER_COLORS[index % len(READER_COLORS)], MARKERS[index % len(MARKERS)]


def readers_roc(model: dict | None, points: Sequence[tuple[str, float, float]], title: str,
                height: int = 460) -> go.Figure:
    """The model's ROC curve on the session's cases with each reader's (1 - specificity, sensitivity).

    Args:
        model: :func:`fracture.reader_study.summary.model_metrics` (its ``roc``, ``auc`` and ``roc_point``) or None.
        points: ``(reader, fpr, tpr)`` per reader with both classes answered.
        title: says which cases (the session's code).
    """
    fig = go.Figure()
    if model and model.get("roc"):
        fpr, tpr = zip(*model["roc"])
        auc = model.get("auc")
        fig.add_trace(go.Scatter(x=list(fpr), y=list(tpr), mode="lines", line={"color": MODEL_COLOR, "width": 3},
                                 name=f"model (AUC {auc:.3f})" if auc is not None else "model",
                                 hovertemplate="FPR %{x:.3f}<br>TPR %{y:.3f}<extra>model</extra>"))
        if model.get("roc_point"):
            fig.add_trace(go.Scatter(x=[model["roc_point"][0]], y=[model["roc_point"][1]], mode="markers",
                                     name="model at its threshold",
                                     marker={"color": MODEL_COLOR, "size": 13, "symbol": "star-open",
                                             "line": {"width": 2}}))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", hoverinfo="skip",
                             line={"color": NEUTRAL_COLOR, "dash": "dot", "width": 1}))
    for index, (name, fpr, tpr) in enumerate(points):
        colour, symbol = reader_style(index)
        fig.add_trace(go.Scatter(
            x=[fpr], y=[tpr], mode="markers", name=name,
            marker={"color": colour, "symbol": symbol, "size": 14, "line": {"width": 1, "color": "#222222"}},
            hovertemplate=f"{name}<br>sensitivity %{{y:.3f}}<br>1 − specificity %{{x:.3f}}<extra></extra>",
        ))
    fig.update_xaxes(title_text="false positive rate (1 − specificity)", range=[-0.02, 1.02], constrain="domain")
    fig.update_yaxes(title_text="true positive rate (sensitivity)", range=[-0.02, 1.02], scaleanchor="x",
                     scaleratio=1)
    fig = style_figure(fig, title, height=height, legend_below=len(points) > 4)
    fig.update_layout(font={"size": FONT_SIZE}, title_font={"size": FONT_SIZE + 3})
    return fig
