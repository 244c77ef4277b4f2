"""Evaluation: metrics, thresholds, bootstrap intervals, reports and ensembles.

Works on numpy arrays and pandas tables only (no torch), so pages, the CLI and
tests can evaluate saved predictions without loading a model.
"""
from __future__ import annotations

from fracture.evaluate.ensemble import ENSEMBLE_METHODS, ensemble_probabilities, ensemble_threshold
from fracture.evaluate.metrics import (
    BOOTSTRAP_METRICS,
    THRESHOLD_RULES,
    EvaluationError,
    PrPoints,
    RocPoints,
    binary_metrics,
    bootstrap_auc_ci,
    bootstrap_ci,
    choose_threshold,
    pr_points,
    roc_points,
)
from fracture.evaluate.report import (
    LEVELS,
    TABLE_COLUMNS,
    body_part_metric,
    evaluate_frame,
    format_report_markdown,
    metrics_table,
    report_curves,
    study_frame,
)

__all__ = [
    "BOOTSTRAP_METRICS",
    "ENSEMBLE_METHODS",
    "LEVELS",
    "TABLE_COLUMNS",
    "THRESHOLD_RULES",
    "EvaluationError",
    "PrPoints",
    "RocPoints",
    "binary_metrics",
    "body_part_metric",
    "bootstrap_auc_ci",
    "bootstrap_ci",
    "choose_threshold",
    "ensemble_probabilities",
    "ensemble_threshold",
    "evaluate_frame",
    "format_report_markdown",
    "metrics_table",
    "pr_points",
    "report_curves",
    "roc_points",
    "study_frame",
]
