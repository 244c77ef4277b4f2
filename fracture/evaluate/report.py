"""Evaluation reports: image and study level, overall and per body part.

A report is a JSON-able dict (it is stored in checkpoint metadata and run
directories and shown by the Evaluate and Compare pages)::

    {
      "threshold": 0.42, "split": "test", "ci_level": 0.95, "n_boot": 1000, "seed": 0,
      "ci_groups": {"image": "patient_id", "study": "patient_id"},  # resampled units
      "image": {"overall": {...metrics, "roc_auc_ci": [lo, hi], "roc": {...}, "pr": {...}},
                "by_body_part": {"wrist": {...metrics, "roc_auc_ci": [lo, hi]}, ...}},
      "study": {same, one row per study},
    }

The study level follows the MURA protocol: a study's probability is the mean of
its images' probabilities, its label is the study label.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from fracture.evaluate.metrics import (
    EvaluationError,
    binary_metrics,
    bootstrap_ci,
    pr_points,
    roc_points,
)

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("label", "prob", "body_part", "study_id")
LEVELS = ("image", "study")
CI_ALPHA = 0.05
CURVE_POINTS = 200
TABLE_COLUMNS = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "roc_auc_ci_low",
    "roc_auc_ci_high",
    "pr_auc",
    "cohen_kappa",
    "threshold",
    "n",
)


def _check_columns(df: pd.DataFrame, required: tuple[str, ...] = REQUIRED_COLUMNS) -> None:
    missing = [column for column in required if column not in df.columns]
    if missing:
        raise EvaluationError(
            f"prediction table lacks column(s) {missing}; it needs {list(required)} "
            f"(has {list(df.columns)})"
        )
    if df.empty:
        raise EvaluationError("prediction table is empty: nothing to evaluate")


def study_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per study: mean image probability, the study label (MURA protocol).

    Args:
        df: image-level predictions with columns ``label, prob, body_part,
            study_id`` (``patient_id`` kept when present).

    Returns:
        Columns ``study_id, label, prob, body_part, n_images`` (and
        ``patient_id``), studies in order of first appearance.

    Raises:
        EvaluationError (a ``ValueError``): missing columns, or a study whose
            images disagree on the label or body part (names the studies).
    """
    _check_columns(df)
    missing_ids = df["study_id"].isna()
    if missing_ids.any():
        example = df.loc[missing_ids].iloc[0]
        where = f" (first: {example['path']})" if "path" in df.columns else ""
        raise EvaluationError(
            f"{int(missing_ids.sum())} image(s) have no study_id{where}; every image needs "
            "one (use the image path as its own study when studies are unknown)"
        )
    grouped = df.groupby("study_id", sort=False)
    for column in ("label", "body_part"):
        disagreeing = grouped[column].nunique()
        disagreeing = disagreeing[disagreeing > 1]
        if len(disagreeing):
            names = ", ".join(repr(s) for s in disagreeing.index[:5])
            more = f" and {len(disagreeing) - 5} more" if len(disagreeing) > 5 else ""
            raise EvaluationError(
                f"images of study {names}{more} disagree on the {column}; a study has one "
                f"{column} (check the study_id column or the dataset's labels)"
            )
    aggregations: dict[str, tuple[str, str]] = {
        "label": ("label", "first"),
        "prob": ("prob", "mean"),
        "body_part": ("body_part", "first"),
        "n_images": ("prob", "size"),
    }
    if "patient_id" in df.columns:
        aggregations["patient_id"] = ("patient_id", "first")
    studies = grouped.agg(**aggregations).reset_index()
    studies["label"] = studies["label"].astype(np.int64)
    return studies


def _curves(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """JSON-able ROC and PR points, or ``None`` for each when only one class is present."""
    if y.min() == y.max():
        return {"roc": None, "pr": None}
    roc = roc_points(y, p, max_points=CURVE_POINTS)
    pr = pr_points(y, p, max_points=CURVE_POINTS)
    return {
        "roc": {"fpr": roc.fpr.tolist(), "tpr": roc.tpr.tolist()},
        "pr": {"recall": pr.recall.tolist(), "precision": pr.precision.tolist()},
    }


def _group_metrics(
    frame: pd.DataFrame,
    threshold: float,
    *,
    group_column: str | None,
    n_boot: int,
    seed: int,
    curves: bool,
) -> dict[str, Any]:
    y = frame["label"].to_numpy()
    p = frame["prob"].to_numpy(dtype=np.float64)
    metrics = binary_metrics(y, p, threshold)
    groups = frame[group_column].to_numpy() if group_column else None
    low, high = (
        bootstrap_ci(y, p, metric="roc_auc", n_boot=n_boot, seed=seed, alpha=CI_ALPHA,
                     groups=groups)
        if n_boot > 0
        else (None, None)
    )
    metrics["roc_auc_ci"] = [low, high]
    if curves:
        metrics.update(_curves(np.asarray(y, dtype=np.int64), p))
    return metrics


def _level_report(frame: pd.DataFrame, threshold: float, *, group_column: str | None,
                  n_boot: int, seed: int) -> dict[str, Any]:
    by_part = {
        str(part): _group_metrics(part_frame, threshold, group_column=group_column,
                                  n_boot=n_boot, seed=seed, curves=False)
        for part, part_frame in sorted(frame.groupby("body_part", sort=False),
                                       key=lambda item: str(item[0]))
    }
    overall = _group_metrics(frame, threshold, group_column=group_column, n_boot=n_boot,
                             seed=seed, curves=True)
    return {"overall": overall, "by_body_part": by_part}


def evaluate_frame(
    df: pd.DataFrame,
    threshold: float,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    split: str | None = None,
) -> dict[str, Any]:
    """Image- and study-level report of one model's predictions on one split.

    The threshold must come from validation data (see ``choose_threshold``).
    ROC AUC gets a 95% bootstrap interval: at image level a cluster bootstrap
    over patients (``patient_id`` when present, otherwise studies), because
    images of one study are not independent; at study level a cluster bootstrap
    over patients when known, otherwise a stratified bootstrap over studies.

    Args:
        df: one row per image with ``label`` (0/1), ``prob`` (positive class),
            ``body_part``, ``study_id``; optionally ``path``, ``patient_id``.
        threshold: decision threshold applied at both levels.
        n_boot: bootstrap resamples for the AUC intervals (0 skips them).
        seed: bootstrap seed (same seed, same intervals).
        split: name of the evaluated split, stored in the report for titles.

    Returns:
        ``{"image": {"overall", "by_body_part"}, "study": {...}, "threshold",
        "split", "ci_level", "n_boot", "seed", "ci_groups"}``; see the module
        docstring.

    Raises:
        EvaluationError (a ``ValueError``): missing columns, bad labels or
            probabilities, or a study whose images disagree on the label.
    """
    _check_columns(df)
    if n_boot < 0:
        raise EvaluationError(f"n_boot must be 0 (no intervals) or more; got {n_boot}")
    images = df.reset_index(drop=True)
    studies = study_frame(images)
    has_patients = "patient_id" in images.columns and images["patient_id"].notna().all()
    image_groups = "patient_id" if has_patients else "study_id"
    study_groups = "patient_id" if has_patients else None
    report = {
        "threshold": float(threshold),
        "split": split,
        "ci_level": 1.0 - CI_ALPHA,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "ci_groups": {"image": image_groups, "study": study_groups},
        "image": _level_report(images, threshold, group_column=image_groups, n_boot=n_boot,
                               seed=seed),
        "study": _level_report(studies, threshold, group_column=study_groups, n_boot=n_boot,
                               seed=seed),
    }
    logger.info(
        "evaluated %d images / %d studies%s: image AUC %s, study AUC %s",
        len(images), len(studies), f" ({split})" if split else "",
        _fmt(report["image"]["overall"]["roc_auc"]), _fmt(report["study"]["overall"]["roc_auc"]),
    )
    return report


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise EvaluationError(f"unknown level {level!r}; use one of {LEVELS}")


def metrics_table(reports: Mapping[str, Mapping[str, Any]], level: str = "image") -> pd.DataFrame:
    """One row per model for the Compare page, from :func:`evaluate_frame` reports.

    Args:
        reports: ``{model name: report}``.
        level: ``"image"`` or ``"study"``.

    Returns:
        A frame indexed by model name (index name ``model``) with columns
        ``TABLE_COLUMNS``: accuracy, precision, recall, specificity, f1,
        roc_auc with its interval (roc_auc_ci_low, roc_auc_ci_high), pr_auc,
        cohen_kappa, threshold, n. Undefined values are NaN.

    Raises:
        EvaluationError: unknown level, or a report without that level.
    """
    _check_level(level)
    rows = []
    for name, report in reports.items():
        if level not in report or "overall" not in report[level]:
            raise EvaluationError(
                f"report of {name!r} has no {level}-level results; build it with evaluate_frame"
            )
        overall = report[level]["overall"]
        low, high = overall.get("roc_auc_ci") or (None, None)
        row = {column: overall.get(column) for column in TABLE_COLUMNS}
        row["roc_auc_ci_low"], row["roc_auc_ci_high"] = low, high
        row["model"] = str(name)
        rows.append(row)
    table = pd.DataFrame(rows, columns=["model", *TABLE_COLUMNS]).set_index("model")
    numeric = [c for c in TABLE_COLUMNS if c != "n"]
    table[numeric] = table[numeric].astype(np.float64)
    table["n"] = table["n"].astype("Int64")
    return table


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _fmt_auc(metrics: Mapping[str, Any]) -> str:
    auc = metrics.get("roc_auc")
    low, high = metrics.get("roc_auc_ci") or (None, None)
    if auc is None:
        return "n/a (one class)"
    if low is None or high is None:
        return _fmt(auc)
    return f"{_fmt(auc)} ({_fmt(low)}–{_fmt(high)})"


def _markdown_row(level: str, group: str, m: Mapping[str, Any]) -> str:
    cells = [
        level, group, str(m["n"]), str(m["n_pos"]), _fmt(m["accuracy"]),
        _fmt(m["recall"]), _fmt(m["specificity"]), _fmt(m["precision"]), _fmt(m["f1"]),
        _fmt_auc(m), _fmt(m.get("pr_auc")), _fmt(m.get("cohen_kappa")),
    ]
    return "| " + " | ".join(cells) + " |"


def format_report_markdown(report: Mapping[str, Any], title: str) -> str:
    """A Markdown section for a model card: operating point and per-part table.

    Args:
        report: from :func:`evaluate_frame`.
        title: heading, which should name the data set and split.

    Returns:
        Markdown text: the threshold and the sensitivity/specificity it gives
        at image and study level, then one table row per level and body part
        with n, positives, accuracy, sensitivity, specificity, precision, F1,
        ROC AUC with its bootstrap interval, PR AUC and Cohen's kappa.
    """
    threshold = report["threshold"]
    ci_level = report.get("ci_level", 1.0 - CI_ALPHA)
    split = report.get("split")
    lines = [f"### {title}", ""]
    where = f" on the {split} split" if split else ""
    lines.append(
        f"Computed by `fracture.evaluate`{where}. Decision threshold {threshold:.3f} "
        "(chosen on validation data). A study's probability is the mean of its images' "
        "probabilities."
    )
    lines.append("")
    for level in LEVELS:
        overall = report[level]["overall"]
        lines.append(
            f"- Operating point, {level} level: sensitivity {_fmt(overall['recall'])}, "
            f"specificity {_fmt(overall['specificity'])} at threshold {threshold:.3f} "
            f"(n = {overall['n']}, {overall['n_pos']} positive)."
        )
    lines.append("")
    lines.append(
        "| level | body part | n | positive | accuracy | sensitivity | specificity | precision "
        f"| F1 | ROC AUC ({ci_level:.0%} CI) | PR AUC | kappa |"
    )
    lines.append("|" + " --- |" * 12)
    for level in LEVELS:
        lines.append(_markdown_row(level, "all", report[level]["overall"]))
        for part, metrics in report[level]["by_body_part"].items():
            lines.append(_markdown_row(level, part, metrics))
    n_boot = report.get("n_boot")
    if n_boot:
        groups = report.get("ci_groups", {})
        units = {"patient_id": "patients", "study_id": "studies"}
        resampled = ", ".join(
            f"{units.get(groups.get(level), level + 's')} at {level} level" for level in LEVELS
        )
        lines.append("")
        lines.append(
            f"AUC intervals: percentile bootstrap, {n_boot} resamples stratified by class, "
            f"resampling {resampled}."
        )
    return "\n".join(lines) + "\n"


def body_part_metric(
    report: Mapping[str, Any], level: str = "image", metric: str = "roc_auc"
) -> dict[str, float | None]:
    """``{body part: value}`` of one metric from a report (for ``body_part_auc_chart``).

    Raises:
        EvaluationError: unknown level, or a metric the report does not hold.
    """
    _check_level(level)
    parts = report[level]["by_body_part"]
    result = {}
    for part, metrics in parts.items():
        if metric not in metrics:
            raise EvaluationError(
                f"report has no metric {metric!r}; it has {sorted(k for k in metrics)}"
            )
        result[part] = metrics[metric]
    return result


def report_curves(
    reports: Mapping[str, Mapping[str, Any]], level: str = "image", kind: str = "roc"
) -> dict[str, tuple[list[float], list[float], float | None]]:
    """Curves of several reports in the shape ``roc_chart`` / ``pr_chart`` take.

    Args:
        reports: ``{model name: report}`` from :func:`evaluate_frame`.
        level: ``"image"`` or ``"study"``.
        kind: ``"roc"`` gives ``{name: (fpr, tpr, roc_auc)}``, ``"pr"`` gives
            ``{name: (recall, precision, pr_auc)}``.

    Returns:
        The curves; a report whose curve is undefined (one class only) is
        left out.

    Raises:
        EvaluationError: unknown level or kind.
    """
    _check_level(level)
    if kind not in ("roc", "pr"):
        raise EvaluationError(f"unknown curve kind {kind!r}; use 'roc' or 'pr'")
    curves = {}
    for name, report in reports.items():
        overall = report[level]["overall"]
        curve = overall.get(kind)
        if curve is None:
            logger.info("no %s curve for %s at %s level (one class only)", kind, name, level)
            continue
        if kind == "roc":
            curves[name] = (curve["fpr"], curve["tpr"], overall["roc_auc"])
        else:
            curves[name] = (curve["recall"], curve["precision"], overall["pr_auc"])
    return curves
