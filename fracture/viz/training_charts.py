"""Charts of training runs (Train page while a run goes, Compare page after)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fracture.viz.theme import (
    NEUTRAL_COLOR,
    SPLIT_COLORS,
    ChartDataError,
    empty_figure,
    require_columns,
    series_color,
    style_figure,
)

METRIC_LABELS = {
    "loss": "loss",
    "accuracy": "accuracy",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "f1": "F1",
    "cohen_kappa": "Cohen's kappa",
    "kappa": "Cohen's kappa",
    "precision": "precision",
    "recall": "recall (sensitivity)",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "lr": "learning rate",
    "body_part_accuracy": "body-part accuracy",
}


EPOCH_TICKS = {"tickmode": "linear", "tick0": 1, "dtick": 1, "tickformat": "d"}
"""Epochs are whole numbers counted from 1 (the event log's ``epoch`` is 0-based; charts add 1)."""


def epoch_axis(last_epoch: int) -> dict:
    """x-axis settings for epochs 1..``last_epoch``: the range hugs them (not 0..21 for 20 epochs) and
    at most ~10 whole-number ticks (1, 2, 3 ... for a few epochs; 1, 5, 10 ... for many)."""
    last = max(1, int(last_epoch))
    step = next((d for d in (1, 2, 5, 10, 20, 50, 100) if last / d <= 10), 200)
    ticks = sorted({1, *range(step, last + 1, step)}) if step > 1 else list(range(1, last + 1))
    return {"tickmode": "array", "tickvals": ticks, "ticktext": [str(t) for t in ticks],
            "range": [0.6, last + 0.4], "tickformat": "d"}


def _last_epoch(frame: pd.DataFrame) -> int:
    """The run's planned epochs (the events' ``epochs``) or, without it, the last logged one (1-based)."""
    logged = int(frame["epoch"].max()) + 1
    planned = pd.to_numeric(frame["epochs"], errors="coerce").max() if "epochs" in frame else None
    return max(logged, int(planned)) if planned is not None and pd.notna(planned) else logged


def metric_label(name: str) -> str:
    """Readable axis label of a metric or column name (``val_roc_auc`` -> ``val ROC AUC``)."""
    for prefix in ("train_", "val_", "test_"):
        if name.startswith(prefix):
            base = name[len(prefix):]
            return f"{prefix[:-1]} {METRIC_LABELS.get(base, base.replace('_', ' '))}"
    return METRIC_LABELS.get(name, name.replace("_", " "))


def training_curves_chart(
    epochs_df: pd.DataFrame,
    metrics: Sequence[str] = ("loss", "accuracy", "roc_auc"),
    *,
    title: str | None = None,
) -> go.Figure:
    """Train vs validation curves per epoch, one panel per metric.

    Args:
        epochs_df: one row per finished epoch with ``epoch`` and columns named
            ``train_<metric>`` / ``val_<metric>`` (e.g. ``train_loss,
            val_loss, val_roc_auc, lr``). A metric with only one of the two
            columns gets one line; a metric with neither is left out.
        metrics: metric names without the split prefix, in panel order.
        title: overrides the default title.

    Returns:
        A figure with one panel per metric present and one trace per present
        column; a figure without traces and a note when nothing is there yet.

    Raises:
        ChartDataError: ``epoch`` missing while there are rows.
    """
    title = title or "Training curves — train and val splits, image level"
    if epochs_df is None or len(epochs_df) == 0:
        return empty_figure(title, "no finished epochs yet")
    require_columns(epochs_df, ("epoch",), "training_curves_chart")
    present = [m for m in metrics if f"train_{m}" in epochs_df or f"val_{m}" in epochs_df]
    if not present:
        wanted = [f"train_{m}/val_{m}" for m in metrics]
        return empty_figure(title, f"no columns {', '.join(wanted)} in the epoch log")
    frame = epochs_df.sort_values("epoch")
    fig = make_subplots(rows=1, cols=len(present), subplot_titles=[metric_label(m) for m in present],
                        horizontal_spacing=0.08)
    shown: set[str] = set()
    for col, metric in enumerate(present, start=1):
        for split, dash in (("train", "solid"), ("val", "dash")):
            column = f"{split}_{metric}"
            if column not in frame:
                continue
            fig.add_trace(
                go.Scatter(
                    x=frame["epoch"] + 1, y=frame[column], mode="lines+markers", name=split,
                    legendgroup=split, showlegend=split not in shown,
                    line={"color": SPLIT_COLORS[split], "dash": dash},
                    hovertemplate=f"epoch %{{x}}<br>{split} {metric_label(metric)}: %{{y:.4f}}"
                                  "<extra></extra>",
                ),
                row=1, col=col,
            )
            shown.add(split)
        fig.update_xaxes(title_text="epoch", row=1, col=col, **epoch_axis(_last_epoch(frame)))
        fig.update_yaxes(title_text=metric_label(metric), row=1, col=col)
    return style_figure(fig, title, legend_below=True)


def _step_axis(steps_df: pd.DataFrame, steps_per_epoch: int | None) -> tuple[np.ndarray, str]:
    """x values of step events: global step, fractional epoch, or event order."""
    if "global_step" in steps_df:
        return steps_df["global_step"].to_numpy(dtype=np.float64), "step"
    if "epoch" in steps_df and "step" in steps_df:
        per_epoch = steps_per_epoch
        if not per_epoch and "steps_per_epoch" in steps_df and steps_df["steps_per_epoch"].notna().any():
            per_epoch = int(steps_df["steps_per_epoch"].max())
        per_epoch = per_epoch or int(steps_df["step"].max()) + 1
        x = steps_df["epoch"].to_numpy(np.float64) + steps_df["step"].to_numpy(np.float64) / per_epoch
        return x, "epoch"
    if "step" in steps_df:
        return steps_df["step"].to_numpy(dtype=np.float64), "step"
    return np.arange(len(steps_df), dtype=np.float64), "logged step"


def step_loss_chart(
    steps_df: pd.DataFrame,
    *,
    smoothing: float = 0.9,
    steps_per_epoch: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """Training loss per logged step, raw and exponentially smoothed.

    Args:
        steps_df: one row per ``step`` event with ``loss`` and either
            ``global_step``, or ``epoch`` and ``step`` within the epoch (then
            the x axis is the fractional epoch), or neither (event order).
        smoothing: TensorBoard-style smoothing weight in [0, 1); 0 draws the
            raw loss twice.
        steps_per_epoch: steps in one epoch, for the fractional epoch (else
            the events' ``steps_per_epoch`` column, else the largest logged
            ``step`` + 1).
        title: overrides the default title.

    Returns:
        A figure with two traces, raw and smoothed loss (none and a note when
        no steps were logged yet).

    Raises:
        ChartDataError: ``loss`` missing, or smoothing outside [0, 1).
    """
    title = title or "Training loss per step — train split"
    if not 0.0 <= smoothing < 1.0:
        raise ChartDataError(f"step_loss_chart: smoothing must be in [0, 1); got {smoothing}")
    if steps_df is None or len(steps_df) == 0:
        return empty_figure(title, "no steps logged yet")
    require_columns(steps_df, ("loss",), "step_loss_chart")
    x, x_title = _step_axis(steps_df, steps_per_epoch)
    order = np.argsort(x, kind="stable")
    x = x[order]
    loss = steps_df["loss"].to_numpy(dtype=np.float64)[order]
    smoothed = pd.Series(loss).ewm(alpha=1.0 - smoothing, adjust=True).mean().to_numpy()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=loss, mode="lines", name="loss",
                             line={"color": NEUTRAL_COLOR, "width": 1}, opacity=0.5))
    fig.add_trace(go.Scatter(x=x, y=smoothed, mode="lines", name=f"smoothed ({smoothing:g})",
                             line={"color": SPLIT_COLORS["train"], "width": 2}))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text="loss")
    return style_figure(fig, title)


def _resolve_metric_column(frame: pd.DataFrame, metric: str) -> str | None:
    if metric in frame:
        return metric
    if f"val_{metric}" in frame:
        return f"val_{metric}"
    return None


def overlay_training_curves_chart(
    runs: Mapping[str, pd.DataFrame],
    metric: str,
    *,
    title: str | None = None,
) -> go.Figure:
    """One metric across several runs, one line per run (Compare page).

    Args:
        runs: ``{run name: epochs_df}`` as for :func:`training_curves_chart`.
        metric: a column name (``val_roc_auc``, ``train_loss``), or a bare
            metric name meaning its validation column (``roc_auc`` ->
            ``val_roc_auc``).
        title: overrides the default title.

    Returns:
        A figure with one trace per run that has the metric; runs without it
        are named in a note under the plot.

    Raises:
        ChartDataError: a run's table has rows but no ``epoch`` column.
    """
    column_names = {_resolve_metric_column(df, metric) for df in runs.values() if df is not None}
    column_names.discard(None)
    shown_metric = next(iter(column_names)) if len(column_names) == 1 else metric
    split = shown_metric.split("_", 1)[0] if shown_metric.startswith(("train_", "val_")) else "val"
    title = title or f"{metric_label(shown_metric)} per epoch — {split} split, image level"
    fig = go.Figure()
    lacking = []
    for index, (name, frame) in enumerate(runs.items()):
        column = _resolve_metric_column(frame, metric) if frame is not None else None
        if column is None or len(frame) == 0:
            lacking.append(str(name))
            continue
        require_columns(frame, ("epoch",), f"overlay_training_curves_chart (run {name!r})")
        frame = frame.sort_values("epoch")
        fig.add_trace(go.Scatter(x=frame["epoch"] + 1, y=frame[column], mode="lines+markers",
                                 name=str(name), line={"color": series_color(index)}))
    if not fig.data:
        return empty_figure(title, f"no run has {metric!r} yet")
    if lacking:
        fig.add_annotation(text=f"without {metric}: {', '.join(lacking)}", x=0, y=-0.22,
                           xref="paper", yref="paper", showarrow=False, xanchor="left",
                           font={"size": 11, "color": NEUTRAL_COLOR})
    last = max((_last_epoch(f) for f in runs.values() if f is not None and len(f)), default=1)
    fig.update_xaxes(title_text="epoch", **epoch_axis(last))
    fig.update_yaxes(title_text=metric_label(shown_metric))
    return style_figure(fig, title)
