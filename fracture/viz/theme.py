"""One look for every chart: template, colours, titles and the error for bad input.

Colours are the Okabe-Ito palette (distinguishable with the common colour
vision deficiencies). Negative/positive and train/val keep the same colour on
every page.
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd
import plotly.graph_objects as go

from fracture.errors import FractureError

TEMPLATE = "plotly_white"
FONT_FAMILY = "Inter, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
SERIES_COLORS = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # green
    "#D55E00",  # vermillion
    "#CC79A7",  # purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)
CLASS_COLORS = {"negative": "#56B4E9", "positive": "#D55E00"}
SPLIT_COLORS = {"train": "#0072B2", "val": "#E69F00", "test": "#009E73"}
NEUTRAL_COLOR = "#888888"
TOOLBAR_ROW_PX = 32
"""Height kept free above a chart's title for plotly's toolbar."""
SPLIT_ORDER = ("train", "val", "test")


class ChartDataError(FractureError, ValueError):
    """A chart was given a table without the columns (or values) it draws."""


def series_color(index: int) -> str:
    """The colour of the ``index``-th series (model, run, channel), cycling."""
    return SERIES_COLORS[index % len(SERIES_COLORS)]


def chart_title(what: str, *, split: str | None = None, level: str | None = None) -> str:
    """``"ROC curve — test split, image level"``: every metric chart says what data it shows."""
    parts = []
    if split:
        parts.append(f"{split} split")
    if level:
        parts.append(f"{level} level")
    return f"{what} — {', '.join(parts)}" if parts else what


def style_figure(fig: go.Figure, title: str, *, height: int | None = None,
                 legend_below: bool = False) -> go.Figure:
    """Apply the shared template, title and legend placement; returns ``fig``.

    The legend sits above the plot, right of the title, unless
    ``legend_below``: figures with panel titles (``make_subplots``) need
    that space for the titles, and a legend there would cover them.
    """
    if legend_below:
        legend = {"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "center", "x": 0.5}
        margin = {"l": 60, "r": 20, "t": 90, "b": 100}
    else:
        legend = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1.0}
        margin = {"l": 60, "r": 20, "t": 96, "b": 50}
    fig.update_layout(
        template=TEMPLATE,
        # The title starts below the plotly toolbar's row (top right, ~30 px), so the
        # toolbar never covers it however narrow the column; the legend sits under both.
        title={"text": title, "x": 0.0, "xanchor": "left", "xref": "container",
               "y": 1.0, "yref": "container", "yanchor": "top", "pad": {"t": TOOLBAR_ROW_PX, "l": 4}},
        font={"family": FONT_FAMILY, "size": 13},
        margin=margin,
        legend={**legend, "title": {"text": ""}},
        hoverlabel={"namelength": -1},
    )
    if height is not None:
        fig.update_layout(height=height)
    return fig


def empty_figure(title: str, message: str, *, height: int | None = None) -> go.Figure:
    """A figure with no traces and a centred note (e.g. "no finished epochs yet")."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper",
                       showarrow=False, font={"size": 14, "color": NEUTRAL_COLOR})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style_figure(fig, title, height=height)


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise :class:`ChartDataError` naming the missing columns of a chart's table."""
    if not isinstance(frame, pd.DataFrame):
        raise ChartDataError(f"{what} needs a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ChartDataError(
            f"{what} needs column(s) {missing}; the table has {list(frame.columns)}"
        )


def ordered_splits(values: Iterable[str]) -> list[str]:
    """Splits in train/val/test order, unknown names after them alphabetically."""
    present = {str(v) for v in values}
    known = [s for s in SPLIT_ORDER if s in present]
    return known + sorted(present - set(SPLIT_ORDER))
