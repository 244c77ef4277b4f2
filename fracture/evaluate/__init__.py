"""Evaluation: metrics, thresholds, bootstrap intervals, reports, calibration maths, the pointing game, ensembles.

Works on numpy arrays and pandas tables only (no torch, no checkpoints), so pages, the CLI and
tests can evaluate saved predictions without loading a model. The names below are lazy
re-exports (PEP 562): importing ``fracture.evaluate.calibration`` (the prediction path) must not
import scikit-learn through this package.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "ENSEMBLE_METHODS": "ensemble", "ensemble_probabilities": "ensemble", "ensemble_threshold": "ensemble",
    "EvaluationError": "arrays",
    "BOOTSTRAP_METRICS": "metrics", "THRESHOLD_RULES": "metrics", "PrPoints": "metrics", "RocPoints": "metrics",
    "binary_metrics": "metrics", "bootstrap_auc_ci": "metrics", "bootstrap_ci": "metrics",
    "choose_threshold": "metrics", "pr_points": "metrics", "roc_points": "metrics",
    "LEVELS": "report", "TABLE_COLUMNS": "report", "body_part_metric": "report", "evaluate_frame": "report",
    "format_report_markdown": "report", "metrics_table": "report", "report_curves": "report",
    "study_frame": "report",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'fracture.evaluate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fracture.evaluate.{_HOMES[name]}"), name)


__all__ = sorted(_HOMES)
