"""Plotly figure builders used by the pages, the CLI and model cards.

Every builder takes plain pandas/numpy inputs, returns a ``go.Figure`` and
never touches streamlit; pages only call ``st.plotly_chart(fig)``. The
builders live in small modules by subject; this module is the one place to
import them from.
"""
from __future__ import annotations

from fracture.viz.data_charts import (
    image_histogram_chart,
    intensity_histogram_chart,
    label_balance_chart,
    mode_chart,
    size_distribution_chart,
)
from fracture.viz.eval_charts import (
    DEFAULT_BAR_METRICS,
    body_part_auc_chart,
    confusion_matrix_chart,
    metrics_bar_chart,
    pr_chart,
    reliability_chart,
    roc_chart,
)
from fracture.viz.theme import ChartDataError, chart_title
from fracture.viz.training_charts import (
    metric_label,
    overlay_training_curves_chart,
    step_loss_chart,
    training_curves_chart,
)

__all__ = [
    "DEFAULT_BAR_METRICS",
    "ChartDataError",
    "body_part_auc_chart",
    "chart_title",
    "confusion_matrix_chart",
    "image_histogram_chart",
    "intensity_histogram_chart",
    "label_balance_chart",
    "metric_label",
    "metrics_bar_chart",
    "mode_chart",
    "overlay_training_curves_chart",
    "pr_chart",
    "reliability_chart",
    "roc_chart",
    "size_distribution_chart",
    "step_loss_chart",
    "training_curves_chart",
]
