"""Charts of evaluation results (Evaluate and Compare pages, model cards).

Every builder takes the split and level it shows (``split="test",
level="study"``) so its title says which data the numbers come from.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from fracture.viz.theme import (
    NEUTRAL_COLOR,
    ChartDataError,
    chart_title,
    require_columns,
    series_color,
    style_figure,
)
from fracture.viz.training_charts import metric_label

DEFAULT_BAR_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc",
                       "cohen_kappa")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.3f}"


def _curve_arrays(name: str, curve: Sequence[Any], what: str) -> tuple[np.ndarray, np.ndarray, Any]:
    if len(curve) != 3:
        raise ChartDataError(f"{what}: the curve of {name!r} must be (x, y, area); got {len(curve)} items")
    x, y, area = curve
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ChartDataError(f"{what}: the x and y of {name!r} differ in shape ({x.shape} vs {y.shape})")
    return x, y, None if area is None else float(area)


def roc_chart(
    curves: Mapping[str, Sequence[Any]],
    *,
    split: str | None = None,
    level: str | None = None,
    operating_points: Mapping[str, tuple[float, float]] | None = None,
    title: str | None = None,
) -> go.Figure:
    """ROC curves of one or more models over the chance diagonal.

    Args:
        curves: ``{name: (fpr, tpr, auc)}``, e.g. from ``roc_points`` and
            ``binary_metrics`` or a report's ``roc`` entry.
        split, level: what was evaluated, for the title.
        operating_points: optional ``{name: (fpr, tpr)}`` at the decision
            threshold, drawn as markers (``(1 - specificity, sensitivity)``).
        title: overrides the default title.

    Returns:
        A figure with one trace per curve, the diagonal, then one marker trace
        per operating point.

    Raises:
        ChartDataError: a curve that is not ``(x, y, area)`` of equal lengths.
    """
    fig = go.Figure()
    for index, (name, curve) in enumerate(curves.items()):
        fpr, tpr, auc = _curve_arrays(str(name), curve, "roc_chart")
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {_fmt(auc)})",
                                 line={"color": series_color(index), "width": 2},
                                 hovertemplate="FPR %{x:.3f}<br>TPR %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line={"color": NEUTRAL_COLOR, "dash": "dot", "width": 1},
                             hoverinfo="skip"))
    names = list(curves)
    for name, (fpr, tpr) in (operating_points or {}).items():
        index = names.index(name) if name in names else len(names)
        fig.add_trace(go.Scatter(x=[fpr], y=[tpr], mode="markers", name=f"{name} threshold",
                                 marker={"color": series_color(index), "size": 11,
                                         "symbol": "x", "line": {"width": 1}},
                                 hovertemplate="sensitivity %{y:.3f}<br>1 − specificity %{x:.3f}"
                                               "<extra>operating point</extra>"))
    fig.update_xaxes(title_text="false positive rate (1 − specificity)", range=[0, 1],
                     constrain="domain")
    fig.update_yaxes(title_text="true positive rate (sensitivity)", range=[0, 1.02],
                     scaleanchor="x", scaleratio=1)
    return style_figure(fig, title or chart_title("ROC curve", split=split, level=level))


def pr_chart(
    curves: Mapping[str, Sequence[Any]],
    *,
    split: str | None = None,
    level: str | None = None,
    prevalence: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Precision-recall curves; on imbalanced data (FracAtlas is 82% negative) they say more than ROC.

    Args:
        curves: ``{name: (recall, precision, average_precision)}`` (the order of
            ``pr_points``: x first).
        split, level: what was evaluated, for the title.
        prevalence: share of positives; draws the no-skill line at that precision.
        title: overrides the default title.

    Returns:
        A figure with one trace per curve, plus the no-skill line when
        ``prevalence`` is given.

    Raises:
        ChartDataError: a curve that is not ``(x, y, area)`` of equal lengths.
    """
    fig = go.Figure()
    for index, (name, curve) in enumerate(curves.items()):
        recall, precision, ap = _curve_arrays(str(name), curve, "pr_chart")
        fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines",
                                 name=f"{name} (AP {_fmt(ap)})",
                                 line={"color": series_color(index), "width": 2, "shape": "hv"},
                                 hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<extra></extra>"))
    if prevalence is not None:
        fig.add_trace(go.Scatter(x=[0, 1], y=[prevalence, prevalence], mode="lines",
                                 name=f"no skill ({prevalence:.1%} positive)",
                                 line={"color": NEUTRAL_COLOR, "dash": "dot", "width": 1},
                                 hoverinfo="skip"))
    fig.update_xaxes(title_text="recall (sensitivity)", range=[0, 1])
    fig.update_yaxes(title_text="precision", range=[0, 1.02])
    return style_figure(fig, title or chart_title("Precision-recall curve", split=split, level=level))


def confusion_matrix_chart(
    cm: Mapping[str, int],
    title: str,
    *,
    class_names: tuple[str, str] = ("negative", "positive"),
) -> go.Figure:
    """2x2 confusion matrix heatmap with counts and the percentage of each true class.

    Colour is the row percentage, so a rare positive class is as readable as
    the common one.

    Args:
        cm: ``{"tn", "fp", "fn", "tp"}`` counts (``binary_metrics(...)["confusion"]``).
        title: must say split, level and threshold, e.g. ``chart_title(
            "Confusion matrix at 0.42", split="test", level="study")``.
        class_names: names of label 0 and label 1.

    Returns:
        A figure with one heatmap trace.

    Raises:
        ChartDataError: a missing or negative count.
    """
    missing = [k for k in ("tn", "fp", "fn", "tp") if k not in cm]
    if missing:
        raise ChartDataError(f"confusion_matrix_chart: counts {missing} missing from {dict(cm)}")
    counts = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]], dtype=np.float64)
    if (counts < 0).any():
        raise ChartDataError(f"confusion_matrix_chart: counts must be non-negative; got {dict(cm)}")
    row_totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
    text = [[f"{int(counts[r, c])}<br>{share[r, c]:.1%}" for c in range(2)] for r in range(2)]
    predicted = [f"predicted<br>{name}" for name in class_names]
    actual = [f"true<br>{name}" for name in class_names]
    fig = go.Figure(go.Heatmap(
        z=share, x=predicted, y=actual, text=text, colorscale="Blues", zmin=0, zmax=1, showscale=False,
        hovertemplate="%{y}, %{x}<br>%{text}<extra></extra>", xgap=2, ygap=2,
    ))
    # Numbers as annotations, not heatmap text: plotly cuts a heatmap's text to its cell ("81.1%" read
    # "31.1%" in a narrow column); an annotation is drawn whole, in white on dark cells.
    for r in range(2):
        for c in range(2):
            fig.add_annotation(x=predicted[c], y=actual[r], text=f"<b>{int(counts[r, c]):,}</b><br>{share[r, c]:.1%}",
                               showarrow=False, font={"size": 17, "color": "white" if share[r, c] > 0.55 else "black"})
    fig.update_xaxes(title_text="prediction", side="bottom", tickfont={"size": 12})
    fig.update_yaxes(title_text="truth (row %)", autorange="reversed", tickfont={"size": 12})
    fig = style_figure(fig, title, height=380)
    fig.update_layout(margin={"l": 100, "r": 10, "t": 96, "b": 60})
    return fig


def _model_names(table_df: pd.DataFrame) -> list[str]:
    if "model" in table_df.columns:
        return table_df["model"].astype(str).tolist()
    return [str(name) for name in table_df.index]


def metrics_bar_chart(
    table_df: pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_BAR_METRICS,
    *,
    split: str | None = None,
    level: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """Grouped bars: one group per metric, one bar per model.

    Args:
        table_df: ``metrics_table(...)`` (models in the index or a ``model``
            column); ROC AUC gets error bars when ``roc_auc_ci_low`` and
            ``roc_auc_ci_high`` are present.
        metrics: columns to draw, in order.
        split, level: what was evaluated, for the title.
        title: overrides the default title.

    Returns:
        A figure with one bar trace per model.

    Raises:
        ChartDataError: a requested metric column is missing.
    """
    require_columns(table_df, metrics, "metrics_bar_chart")
    has_ci = {"roc_auc_ci_low", "roc_auc_ci_high"} <= set(table_df.columns)
    labels = [metric_label(m) for m in metrics]
    fig = go.Figure()
    for index, (name, (_, row)) in enumerate(zip(_model_names(table_df), table_df.iterrows())):
        values = pd.to_numeric(row[list(metrics)], errors="coerce").to_numpy(dtype=np.float64)
        error = None
        if has_ci and "roc_auc" in metrics:
            plus = np.zeros(len(metrics))
            minus = np.zeros(len(metrics))
            at = list(metrics).index("roc_auc")
            low, high = row["roc_auc_ci_low"], row["roc_auc_ci_high"]
            if pd.notna(low) and pd.notna(high) and pd.notna(values[at]):
                plus[at], minus[at] = high - values[at], values[at] - low
            error = {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus,
                     "thickness": 1.2, "width": 3}
        fig.add_trace(go.Bar(x=labels, y=values, name=name, error_y=error,
                             marker_color=series_color(index), **_bar_text(values, len(table_df)),
                             hovertemplate="%{x}: %{y:.3f}<extra>%{fullData.name}</extra>"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="metric")
    fig.update_yaxes(title_text="value", range=[0, 1], dtick=0.2)
    return style_figure(fig, title or chart_title("Model comparison", split=split, level=level))


def _bar_text(values: np.ndarray, n_series: int) -> dict[str, Any]:
    """Value labels inside the bars, from their foot: above the bar they ran past an axis that ends at 1,
    at its top an interval's whisker crossed them; grouped bars get them upright ("0.7690.769" side by side)."""
    text = [_fmt(v) for v in values]
    label = {"text": text, "textposition": "inside", "insidetextanchor": "start", "constraintext": "none"}
    if n_series == 1:
        return label
    return {**label, "textangle": -90, "textfont": {"size": 11}}


def body_part_auc_chart(
    aucs: Mapping[str, Mapping[str, float | None]],
    *,
    split: str | None = None,
    level: str | None = None,
    title: str | None = None,
    counts: Mapping[str, str] | None = None,
) -> go.Figure:
    """ROC AUC per body part, one bar series per model (weak body parts stand out).

    Args:
        aucs: ``{model name: {body part: auc or None}}``, e.g. from
            ``fracture.evaluate.body_part_metric(report)``. ``None`` (one
            class only in that part) leaves a gap.
        split, level: what was evaluated, for the title.
        title: overrides the default title.
        counts: ``{body part: text}`` shown under each part's name, e.g.
            ``"n=164, 50 pos"``: an AUC on 3 images is not one on 300.

    Returns:
        A figure with one bar trace per model over the union of body parts.
    """
    parts = sorted({str(part) for per_model in aucs.values() for part in per_model})
    fig = go.Figure()
    for index, (name, per_model) in enumerate(aucs.items()):
        values = np.array([np.nan if per_model.get(p) is None else float(per_model[p]) for p in parts])
        fig.add_trace(go.Bar(x=parts, y=values, name=str(name), marker_color=series_color(index),
                             **_bar_text(values, len(aucs)),
                             hovertemplate="%{x}: AUC %{y:.3f}<extra>%{fullData.name}</extra>"))
    fig.add_hline(y=0.5, line={"color": NEUTRAL_COLOR, "dash": "dot", "width": 1})
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="body part")
    if counts:
        fig.update_xaxes(tickmode="array", tickvals=parts,
                         ticktext=[f"{p}<br>{counts[p]}" if p in counts else p for p in parts])
    fig.update_yaxes(title_text="ROC AUC", range=[0, 1], dtick=0.2)
    return style_figure(fig, title or chart_title("ROC AUC by body part", split=split, level=level))


def reliability_chart(
    calibrations: Mapping[str, Mapping[str, Any]],
    *,
    split: str | None = None,
    level: str | None = "image",
    show_uncalibrated: bool = True,
    title: str | None = None,
) -> go.Figure:
    """Reliability diagrams: observed fraction positive against mean predicted probability per bin.

    Args:
        calibrations: ``{name: calibration block}`` as in
            ``report["image"]["calibration"]`` (``bins`` with ``mean_prob``,
            ``fraction_positive``, ``count``; optional ``bins_uncalibrated``,
            ``ece``, ``ece_uncalibrated``).
        split, level: what was evaluated, for the title.
        show_uncalibrated: also draw each model's uncalibrated bins (dotted)
            when they differ from the calibrated ones.
        title: overrides the default title.

    Returns:
        One line+marker trace per model (and per uncalibrated variant), marker
        size growing with the bin's image count, over the diagonal of perfect
        calibration. Empty bins are left out.

    Raises:
        ChartDataError: a block without ``bins``.
    """
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line={"color": NEUTRAL_COLOR, "dash": "dot", "width": 1}, hoverinfo="skip"))

    def add(name: str, bins: Sequence[Mapping[str, Any]], index: int, dotted: bool) -> None:
        used = [b for b in bins if b.get("count")]
        counts = np.array([b["count"] for b in used], dtype=np.float64)
        sizes = 6 + 14 * np.sqrt(counts / counts.max()) if len(counts) else []
        fig.add_trace(go.Scatter(
            x=[b["mean_prob"] for b in used], y=[b["fraction_positive"] for b in used], mode="lines+markers",
            name=name, customdata=counts,
            line={"color": series_color(index), "width": 1 if dotted else 2, "dash": "dot" if dotted else "solid"},
            marker={"size": sizes, "color": series_color(index), "opacity": 0.5 if dotted else 0.9},
            hovertemplate="mean P %{x:.3f}<br>fraction positive %{y:.3f}<br>%{customdata:.0f} images<extra></extra>",
        ))

    for index, (name, block) in enumerate(calibrations.items()):
        bins = block.get("bins") if isinstance(block, Mapping) else None
        if not bins:
            raise ChartDataError(f"reliability_chart: the calibration of {name!r} has no bins")
        ece = block.get("ece")
        add(f"{name} (ECE {_fmt(ece)})", bins, index, dotted=False)
        raw = block.get("bins_uncalibrated")
        if show_uncalibrated and raw and block.get("temperature") is not None:
            add(f"{name} uncalibrated (ECE {_fmt(block.get('ece_uncalibrated'))})", raw, index, dotted=True)
    fig.update_xaxes(title_text="mean predicted probability (bin)", range=[0, 1], constrain="domain")
    fig.update_yaxes(title_text="fraction positive", range=[0, 1], scaleanchor="x", scaleratio=1)
    # The legend goes under the plot: with a model and its uncalibrated twin it ran over the title.
    return style_figure(fig, title or chart_title("Reliability diagram", split=split, level=level),
                        height=560, legend_below=True)
