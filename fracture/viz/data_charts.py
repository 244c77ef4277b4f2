"""Charts of a dataset and of single images (Data Explorer, Preprocessing Lab)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fracture.viz.theme import (
    CLASS_COLORS,
    SPLIT_COLORS,
    ChartDataError,
    empty_figure,
    ordered_splits,
    require_columns,
    series_color,
    style_figure,
)

INTENSITY_LEVELS = 256
_MAX_SCATTER_POINTS = 5000
COUNT_COLUMN_NAMES = ("count", "images")  # what the count column of a table may be called


def _count_column(frame: pd.DataFrame) -> str | None:
    return next((c for c in COUNT_COLUMN_NAMES if c in frame.columns), None)


def _label_counts(counts_df: pd.DataFrame) -> pd.DataFrame:
    """Negatives and positives per (split, body_part), from any of the accepted shapes."""
    if {"negatives", "positives"} <= set(counts_df.columns):
        require_columns(counts_df, ("split", "body_part"), "label_balance_chart")
        wide = counts_df.groupby(["split", "body_part"])[["negatives", "positives"]].sum()
        return wide.reset_index()
    require_columns(counts_df, ("split", "body_part", "label"), "label_balance_chart")
    count_column = _count_column(counts_df)
    if count_column:
        long = counts_df.groupby(["split", "body_part", "label"])[count_column].sum()
    else:  # one row per image (a manifest)
        long = counts_df.groupby(["split", "body_part", "label"]).size()
    wide = long.unstack("label", fill_value=0)
    unknown = set(wide.columns) - {0, 1}
    if unknown:
        raise ChartDataError(f"label_balance_chart: labels must be 0/1; found {sorted(unknown)}")
    wide = wide.reindex(columns=[0, 1], fill_value=0)
    wide.columns = ["negatives", "positives"]
    return wide.reset_index()


def label_balance_chart(
    counts_df: pd.DataFrame,
    *,
    class_names: tuple[str, str] = ("negative", "positive"),
    unit: str = "images",
    title: str | None = None,
) -> go.Figure:
    """Stacked negative/positive bars per body part, one panel per split.

    Args:
        counts_df: either a manifest (one row per image with ``split,
            body_part, label``), or counts with ``split, body_part, label,
            count`` (or ``images``, as ``dataset_stats`` names it), or wide counts with ``split, body_part, negatives,
            positives``.
        class_names: legend names of label 0 and label 1.
        unit: what is counted, for the axis title.
        title: overrides the default title.

    Returns:
        A figure with two traces (negatives, positives) per split.

    Raises:
        ChartDataError: missing columns or labels other than 0/1.
    """
    counts = _label_counts(counts_df)
    title = title or f"Label balance by body part and split ({unit})"
    if counts.empty:
        return empty_figure(title, "no images")
    splits = ordered_splits(counts["split"])
    parts = sorted(counts["body_part"].astype(str).unique())
    fig = make_subplots(rows=1, cols=len(splits), shared_yaxes=True,
                        subplot_titles=[f"{s} split" for s in splits], horizontal_spacing=0.04)
    for col, split in enumerate(splits, start=1):
        rows = (counts[counts["split"] == split].set_index("body_part")[["negatives", "positives"]]
                .reindex(parts, fill_value=0))
        total = rows["negatives"] + rows["positives"]
        share = np.where(total > 0, rows["positives"] / total.where(total > 0, 1), 0.0)
        for column, name, color in (
            ("negatives", class_names[0], CLASS_COLORS["negative"]),
            ("positives", class_names[1], CLASS_COLORS["positive"]),
        ):
            fig.add_trace(
                go.Bar(
                    x=parts, y=rows[column].to_numpy(), name=name, legendgroup=column,
                    showlegend=col == 1, marker_color=color,
                    customdata=np.stack([total.to_numpy(), share * 100], axis=1),
                    hovertemplate=(
                        f"{split} · %{{x}}<br>{name}: %{{y}} {unit}<br>"
                        "total %{customdata[0]}, positive %{customdata[1]:.1f}%<extra></extra>"
                    ),
                ),
                row=1, col=col,
            )
        fig.update_xaxes(title_text="body part", row=1, col=col)
    fig.update_yaxes(title_text=unit, row=1, col=1)
    fig.update_layout(barmode="stack")
    return style_figure(fig, title, legend_below=True)


def size_distribution_chart(
    sizes_df: pd.DataFrame,
    *,
    title: str | None = None,
    max_points: int = _MAX_SCATTER_POINTS,
    seed: int = 0,
) -> go.Figure:
    """Image widths and heights: overlaid histograms and a width-height scatter.

    Args:
        sizes_df: one row per image with ``width`` and ``height`` in pixels
            (from image headers; optional ``split`` colours nothing, it is
            only shown on hover when present).
        title: overrides the default title.
        max_points: the scatter shows a seeded random sample of at most this
            many images (histograms use all of them) to keep the page fast.
        seed: seed of that sample.

    Returns:
        A figure with three traces: width histogram, height histogram, scatter.

    Raises:
        ChartDataError: ``width``/``height`` missing.
    """
    require_columns(sizes_df, ("width", "height"), "size_distribution_chart")
    title = title or "Image size distribution (all splits)"
    if sizes_df.empty:
        return empty_figure(title, "no images")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("width and height", "height vs width"),
                        horizontal_spacing=0.1)
    for column, color in (("width", series_color(0)), ("height", series_color(1))):
        fig.add_trace(go.Histogram(x=sizes_df[column], name=column, marker_color=color,
                                   opacity=0.65, nbinsx=50), row=1, col=1)
    sample = sizes_df
    if len(sizes_df) > max_points:
        sample = sizes_df.sample(n=max_points, random_state=seed)
    fig.add_trace(
        go.Scattergl(x=sample["width"], y=sample["height"], mode="markers", name="images",
                     marker={"size": 4, "opacity": 0.4, "color": series_color(2)},
                     hovertemplate="%{x} × %{y} px<extra></extra>"),
        row=1, col=2,
    )
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="pixels", row=1, col=1)
    fig.update_yaxes(title_text="images", row=1, col=1)
    fig.update_xaxes(title_text="width (px)", row=1, col=2)
    fig.update_yaxes(title_text="height (px)", row=1, col=2)
    return style_figure(fig, title, legend_below=True)


def mode_chart(modes_df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Images per pixel mode (L, RGB, I;16, DICOM ...), one bar series per file format.

    Args:
        modes_df: either one row per image with ``mode`` (and optional
            ``format``), or counts with ``mode, count`` (or ``images``) and
            optional ``format``.
        title: overrides the default title.

    Returns:
        A figure with one bar trace per format (one trace when there is no
        ``format`` column).

    Raises:
        ChartDataError: ``mode`` missing.
    """
    require_columns(modes_df, ("mode",), "mode_chart")
    title = title or "Pixel modes and file formats (all splits)"
    if modes_df.empty:
        return empty_figure(title, "no images")
    keys = ["format", "mode"] if "format" in modes_df.columns else ["mode"]
    count_column = _count_column(modes_df)
    if count_column:
        counts = modes_df.groupby(keys)[count_column].sum()
    else:
        counts = modes_df.groupby(keys).size()
    counts = counts.rename("count").reset_index()
    modes = counts.groupby("mode")["count"].sum().sort_values(ascending=False).index.astype(str)
    fig = go.Figure()
    groups = counts.groupby("format") if "format" in counts.columns else [("images", counts)]
    for index, (name, group) in enumerate(groups):
        group = group.groupby(group["mode"].astype(str))["count"].sum().reindex(modes)
        fig.add_trace(go.Bar(x=list(modes), y=group.fillna(0).to_numpy(), name=str(name),
                             marker_color=series_color(index), text=group.fillna(0).astype(int).to_numpy(),
                             textposition="inside",
                             hovertemplate="%{x}, %{fullData.name}: %{y} images<extra></extra>"))
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="pixel mode")
    fig.update_yaxes(title_text="images")
    fig = style_figure(fig, title)
    if "format" in counts.columns:  # one format is still a format: say which (plotly hides a lone legend)
        fig.update_layout(showlegend=True, legend_title_text="file format")
    return fig


def _as_histogram(counts: Any, name: str) -> np.ndarray:
    values = np.asarray(counts, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ChartDataError(
            f"intensity histogram {name!r} must be a 1-D array of counts per level; "
            f"got shape {values.shape}"
        )
    if not np.isfinite(values).all() or (values < 0).any():
        raise ChartDataError(f"intensity histogram {name!r} has negative or non-finite counts")
    return values


def intensity_histogram_chart(
    hist: Any,
    *,
    title: str | None = None,
) -> go.Figure:
    """Pixel intensity distribution(s), each normalised to a fraction of its pixels.

    Args:
        hist: counts per intensity level (usually 256), or ``{name: counts}``
            to compare groups (e.g. fractured vs not fractured, or splits).
            Normalising each series lets groups of different sizes be compared.
        title: overrides the default title.

    Returns:
        A figure with one line per series.

    Raises:
        ChartDataError: a series that is not a 1-D array of non-negative counts.
    """
    series = dict(hist) if isinstance(hist, Mapping) else {"all images": hist}
    title = title or "Pixel intensity distribution"
    fig = go.Figure()
    for index, (name, counts) in enumerate(series.items()):
        values = _as_histogram(counts, str(name))
        total = values.sum()
        fraction = values / total if total > 0 else values
        color = SPLIT_COLORS.get(str(name), series_color(index))
        fig.add_trace(go.Scatter(x=np.arange(len(values)), y=fraction, mode="lines",
                                 name=str(name), line={"color": color, "width": 1.5},
                                 hovertemplate="level %{x}: %{y:.3%}<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(title_text=f"intensity (0–{INTENSITY_LEVELS - 1})",
                     range=[0, INTENSITY_LEVELS - 1])
    fig.update_yaxes(title_text="fraction of pixels", tickformat=".1%")
    return style_figure(fig, title)


#: Tallest bin over the second tallest above which a histogram is drawn on a log axis.
SPIKY_HISTOGRAM_RATIO = 10.0


def image_histogram_chart(img_uint8: np.ndarray, name: str, *, height: int = 220,
                          log_counts: bool | None = None, font_size: int = 13) -> go.Figure:
    """A small intensity histogram of one image (Preprocessing Lab, before/after).

    Args:
        img_uint8: uint8 array, (H, W) or (H, W, C); one line per channel.
        name: what the image is (e.g. "original", "after CLAHE"), for the title.
        height: figure height in pixels.
        log_counts: pixel counts on a log axis; None decides from the data:
            a spiky histogram (a Canny edge map is almost all 0 with a few
            255, letterbox padding is one tall bin) hides everything else on
            a linear axis.
        font_size: base type size in px (larger for a projector).

    Returns:
        A figure with one filled line per channel.

    Raises:
        ChartDataError: not a uint8 2-D or 3-D array.
    """
    img = np.asarray(img_uint8)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ChartDataError(
            f"image_histogram_chart needs a uint8 (H, W) or (H, W, C) array; "
            f"got {img.dtype} with shape {img.shape}"
        )
    channels = [img] if img.ndim == 2 else [img[..., c] for c in range(img.shape[2])]
    all_counts = [np.bincount(channel.ravel(), minlength=INTENSITY_LEVELS) for channel in channels]
    if log_counts is None:
        log_counts = any(_is_spiky(counts) for counts in all_counts)
    fig = go.Figure()
    levels = np.arange(INTENSITY_LEVELS)
    for index, counts in enumerate(all_counts):
        series = "gray" if len(channels) == 1 else f"channel {index}"
        hover = "level %{x}: %{y} px<extra></extra>"
        if log_counts:  # bars: a filled line has nothing to draw between empty bins on a log axis
            few = int((counts > 0).sum()) <= 16  # an edge map: two bins, drawn wide enough to see
            fig.add_trace(go.Bar(x=levels, y=counts, name=series, marker_color=series_color(index),
                                 marker_line_width=0, opacity=0.8, hovertemplate=hover,
                                 width=8 if few else None))
        else:
            fig.add_trace(go.Scatter(x=levels, y=counts, mode="lines", fill="tozeroy", name=series,
                                     line={"color": series_color(index), "width": 1}, hovertemplate=hover))
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_yaxes(title_text="pixels (log)" if log_counts else "pixels", type="log" if log_counts else "linear")
    note = None
    if log_counts:  # one label per decade: 1, 10, 100, 1k, 10k (not plotly's "2, 100k, 5")
        fig.update_yaxes(dtick=1, tickformat="~s", minor={"showgrid": False})
    else:
        note = _clip_spike(fig, all_counts)
    fig.update_xaxes(title_text="intensity", range=[-2, INTENSITY_LEVELS + 1])
    fig = style_figure(fig, f"Histogram — {name}", height=height)
    # The cut-off note is the title's second line: never over the bars, never cut by a narrow axis.
    top = 3 * font_size + (int(1.6 * font_size) if note else 0)
    fig.update_layout(margin={"l": 4 * font_size, "r": 10, "t": top, "b": 3 * font_size + 6},
                      showlegend=len(channels) > 1, font={"size": font_size},
                      title={"pad": {"t": 8, "l": 4}, "font": {"size": font_size + 1},
                             "subtitle": {"text": note or "", "font": {"size": font_size - 1}}})
    return fig


#: A linear histogram's y axis stops at this many times the median occupied bin; taller bins
#: (an X-ray's dark background, letterbox padding) are cut there and labelled.
CLIP_MEDIAN_FACTOR = 4.0


def _clip_spike(fig: go.Figure, all_counts: list[np.ndarray]) -> str | None:
    """Cap the y axis above the body of the histogram so a background peak does not flatten it;
    return the note saying how much of the image the cut-off bins hold (None: nothing cut)."""
    counts = np.max(np.stack(all_counts), axis=0).astype(np.float64)
    occupied = counts[counts > 0]
    if occupied.size < 8:
        return None
    cap = CLIP_MEDIAN_FACTOR * float(np.median(occupied))
    over = counts > cap
    if not over.any() or counts.max() <= 1.5 * cap:
        return None
    fig.update_yaxes(range=[0, cap * 1.05])
    share = float(all_counts[0][over].sum()) / max(float(all_counts[0].sum()), 1.0)
    peak = int(np.argmax(counts))
    return f"peak cut: {share:.0%} of pixels near level {peak}"


def _is_spiky(counts: np.ndarray) -> bool:
    """Whether one bin towers over every other (see :data:`SPIKY_HISTOGRAM_RATIO`)."""
    occupied = np.sort(counts[counts > 0])
    if occupied.size < 2:
        return False
    return float(occupied[-1]) > SPIKY_HISTOGRAM_RATIO * float(occupied[-2])
