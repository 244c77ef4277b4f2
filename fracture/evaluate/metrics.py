"""Binary classification metrics, operating points and bootstrap intervals.

Everything here works on plain arrays of labels (0/1) and probabilities of the
positive class; scikit-learn does the arithmetic of the point estimates. The
bootstrap is vectorised (weighted counts per resample instead of re-running
scikit-learn a thousand times) so a 95% interval over thousands of images takes
well under a second.

Undefined values are ``None``, never a crash: ROC AUC, PR AUC and Cohen's kappa
need both classes (kappa also needs some disagreement to be possible), so a
one-class input gives ``None`` for them. Ratios with an empty denominator
(precision with no predicted positives, recall with no positives, specificity
with no negatives) are 0.0, scikit-learn's ``zero_division=0`` convention.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any, NamedTuple

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from fracture.evaluate.arrays import EvaluationError, _as_arrays  # noqa: F401  (EvaluationError's home is arrays.py)

logger = logging.getLogger(__name__)

THRESHOLD_RULES = ("youden", "sensitivity", "f1")
BOOTSTRAP_METRICS = (
    "roc_auc",
    "pr_auc",
    "accuracy",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
    "f1",
    "cohen_kappa",
)
# Elements (resamples x items) processed at once by the bootstrap; bounds memory.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000


class RocPoints(NamedTuple):
    """Points of a ROC curve (unpacks like scikit-learn's ``roc_curve``)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


class PrPoints(NamedTuple):
    """Points of a precision-recall curve, x (recall) first like :class:`RocPoints`."""

    recall: np.ndarray
    precision: np.ndarray
    thresholds: np.ndarray


def _has_both_classes(y: np.ndarray) -> bool:
    return bool(y.min() == 0 and y.max() == 1)


def _optional_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _cohen_kappa(y: np.ndarray, pred: np.ndarray) -> float | None:
    """Cohen's kappa, ``None`` when undefined (expected agreement is 1)."""
    with warnings.catch_warnings():
        # The undefined case is reported as None (documented), not as a warning.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        value = cohen_kappa_score(y, pred, labels=[0, 1], replace_undefined_by=np.nan)
    return _optional_float(value)


def binary_metrics(y_true: Any, y_prob: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Metrics of a binary classifier at one decision threshold.

    A sample is predicted positive when its probability is ``>= threshold``.

    Args:
        y_true: labels, 0 (negative / normal) or 1 (positive / abnormal).
        y_prob: probability (or any score) of the positive class, same length.
        threshold: decision threshold; choose it on validation data
            (:func:`choose_threshold`), never on the data evaluated here.

    Returns:
        A JSON-able dict: ``n, n_pos, n_neg, threshold, accuracy, precision,
        recall`` (sensitivity, also under ``sensitivity``), ``specificity, f1,
        roc_auc, pr_auc`` (average precision), ``cohen_kappa`` and
        ``confusion {tn, fp, fn, tp}``. ``roc_auc`` and ``pr_auc`` are ``None``
        when only one class is present; ``cohen_kappa`` is ``None`` when it is
        undefined (labels and predictions all the same single class). Ratios
        with an empty denominator are 0.0.

    Raises:
        EvaluationError: empty input, different lengths, labels other than 0/1,
            or non-finite probabilities.
    """
    y, p = _as_arrays(y_true, y_prob)
    threshold = float(threshold)
    pred = (p >= threshold).astype(np.int64)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    both = _has_both_classes(y)
    recall = float(recall_score(y, pred, labels=[0, 1], zero_division=0))
    return {
        "n": int(len(y)),
        "n_pos": int(y.sum()),
        "n_neg": int(len(y) - y.sum()),
        "threshold": threshold,
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, labels=[0, 1], zero_division=0)),
        "recall": recall,
        "sensitivity": recall,
        "specificity": tn / (tn + fp) if (tn + fp) else 0.0,
        "f1": float(f1_score(y, pred, labels=[0, 1], zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "cohen_kappa": _cohen_kappa(y, pred),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def _downsample(n_points: int, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` evenly spread points, both ends kept."""
    if max_points < 2:
        raise EvaluationError(f"max_points must be at least 2; got {max_points}")
    if n_points <= max_points:
        return np.arange(n_points)
    return np.unique(np.linspace(0, n_points - 1, max_points).round().astype(np.int64))


def _require_both_classes(y: np.ndarray, what: str) -> None:
    if not _has_both_classes(y):
        only = int(y[0])
        raise EvaluationError(
            f"{what} needs both classes; all {len(y)} labels are {only} "
            "(evaluate on a split that has positives and negatives)"
        )


def roc_points(y_true: Any, y_prob: Any, max_points: int = 200) -> RocPoints:
    """ROC curve points, downsampled to at most ``max_points`` for charts.

    The first threshold is ``inf`` (nothing predicted positive), as in
    scikit-learn.

    Raises:
        EvaluationError: only one class present (the curve is undefined), or
            invalid input.
    """
    y, p = _as_arrays(y_true, y_prob)
    _require_both_classes(y, "a ROC curve")
    fpr, tpr, thresholds = roc_curve(y, p)
    keep = _downsample(len(fpr), max_points)
    return RocPoints(fpr[keep], tpr[keep], thresholds[keep])


def pr_points(y_true: Any, y_prob: Any, max_points: int = 200) -> PrPoints:
    """Precision-recall curve points (recall ascending), at most ``max_points``.

    Raises:
        EvaluationError: only one class present, or invalid input.
    """
    y, p = _as_arrays(y_true, y_prob)
    _require_both_classes(y, "a precision-recall curve")
    precision, recall, thresholds = precision_recall_curve(y, p)
    # scikit-learn returns recall descending with one more point than thresholds
    # (the (recall 0, precision 1) end); reverse to recall ascending and give
    # that end point an infinite threshold like roc_curve does.
    recall, precision = recall[::-1], precision[::-1]
    thresholds = np.concatenate([[np.inf], thresholds[::-1]])
    keep = _downsample(len(recall), max_points)
    return PrPoints(recall[keep], precision[keep], thresholds[keep])


def _between_scores(scores_desc: np.ndarray, index: int) -> float:
    """Midpoint between the chosen score and the next lower distinct score.

    Any threshold in ``(next lower score, chosen score]`` classifies the
    validation data identically; the midpoint leaves a margin on both sides for
    unseen data instead of sitting exactly on one validation image's score.
    """
    chosen = float(scores_desc[index])
    if index + 1 < len(scores_desc):
        return (chosen + float(scores_desc[index + 1])) / 2.0
    return chosen


def choose_threshold(
    y_true: Any,
    y_prob: Any,
    rule: str = "youden",
    target: float | None = None,
) -> float:
    """Choose a decision threshold on VALIDATION data (never on the test split).

    Choosing the threshold on the data you then report would make the reported
    sensitivity and specificity optimistic; pick it on the validation split and
    store it with the model.

    Rules:
        ``youden``: maximise sensitivity + specificity - 1 (Youden's J).
        ``sensitivity``: the highest threshold whose sensitivity on the
        validation data reaches ``target`` (the best specificity at that
        sensitivity), e.g. ``target=0.95`` for a screening tool.
        ``f1``: maximise F1.

    The returned value is the midpoint between the score where the rule is met
    and the next lower distinct score, so the validation predictions are
    exactly those of the optimum and the threshold does not sit on one image.

    Args:
        y_true: validation labels (0/1).
        y_prob: validation probabilities of the positive class.
        rule: one of ``THRESHOLD_RULES``.
        target: required sensitivity in (0, 1] for ``rule="sensitivity"``.

    Returns:
        The threshold (predict positive when ``prob >= threshold``).

    Raises:
        EvaluationError: unknown rule, missing or out-of-range target, only one
            class in the labels, or invalid input.
    """
    if rule not in THRESHOLD_RULES:
        raise EvaluationError(f"unknown threshold rule {rule!r}; use one of {THRESHOLD_RULES}")
    y, p = _as_arrays(y_true, y_prob)
    _require_both_classes(y, "choosing a threshold")
    # All distinct scores, descending; thresholds[i] is one of them.
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # drop the inf point
    if rule == "youden":
        index = int(np.argmax(tpr - fpr))
    elif rule == "sensitivity":
        if target is None or not 0.0 < float(target) <= 1.0:
            raise EvaluationError(
                f"rule 'sensitivity' needs a target in (0, 1], e.g. target=0.9; got {target!r}"
            )
        reached = np.flatnonzero(tpr >= float(target) - 1e-12)
        index = int(reached[0])  # tpr ends at 1.0, so this is never empty
    else:  # f1
        n_pos = float(y.sum())
        tp = tpr * n_pos
        fp = fpr * float(len(y) - n_pos)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + (n_pos - tp)), 0.0)
        index = int(np.argmax(f1))
    return _between_scores(thresholds, index)


DEFAULT_TARGET_SENSITIVITY = 0.9


def point_metrics(y_true: Any, y_prob: Any, threshold: float) -> dict[str, Any]:
    """Sensitivity, specificity, PPV and NPV at one threshold (``prob >= threshold`` is positive).

    PPV and NPV are ``None`` when nothing is predicted positive / negative
    (undefined, unlike :func:`binary_metrics`' 0.0 convention for precision),
    and hold at the prevalence of the data given.
    """
    y, p = _as_arrays(y_true, y_prob)
    pred = p >= float(threshold)
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    return {
        "threshold": float(threshold),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "ppv": tp / (tp + fp) if tp + fp else None,
        "npv": tn / (tn + fn) if tn + fn else None,
        "n": int(len(y)),
        "n_pos": int(y.sum()),
    }


def operating_points(
    y_true: Any,
    y_prob: Any,
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    rule_used: str | None = None,
    stored_threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Named operating points chosen on VALIDATION data, with their PPV and NPV there.

    The list a checkpoint stores under ``meta["operating_points"]`` (thresholds
    on the uncalibrated scale, like ``meta["threshold"]``):

    - ``default``: the checkpoint's own threshold (``stored_threshold``, chosen
      by ``rule_used`` when it was trained), so labels stay what they were; when
      none is given, Youden's.
    - ``youden``: maximal sensitivity + specificity (left out when it is the default).
    - ``sensitivity_90`` (for a target of 0.9): the highest threshold whose
      validation sensitivity reaches the target, the screening choice.

    Each entry: ``name, label, rule, target, threshold, sensitivity,
    specificity, ppv, npv, n, n_pos, split``.

    Raises:
        EvaluationError: one class only, a target outside (0, 1], or invalid input.
    """
    y, p = _as_arrays(y_true, y_prob)
    _require_both_classes(y, "operating points")
    target = float(target_sensitivity)
    if not 0.0 < target <= 1.0:
        raise EvaluationError(f"target_sensitivity must be in (0, 1], e.g. 0.9; got {target_sensitivity!r}")
    youden = choose_threshold(y, p, rule="youden")
    points: list[dict[str, Any]] = []
    if stored_threshold is not None:
        rule = rule_used or "stored"
        points.append({"name": "default", "label": f"default ({rule}, stored in the checkpoint)", "rule": rule,
                       "target": None, "threshold": float(stored_threshold)})
    if stored_threshold is None or not math.isclose(float(stored_threshold), youden, abs_tol=1e-9):
        points.append({"name": "youden", "label": "Youden (balanced sensitivity and specificity)",
                       "rule": "youden", "target": None, "threshold": youden})
    percent = f"{100 * target:g}"
    points.append({
        "name": f"sensitivity_{percent}", "label": f"{percent}% sensitivity (screening)", "rule": "sensitivity",
        "target": target, "threshold": choose_threshold(y, p, rule="sensitivity", target=target),
    })
    for point in points:
        point.update({key: value for key, value in point_metrics(y, p, point["threshold"]).items() if key != "threshold"})
        point["split"] = "val"
    return points


# --------------------------------------------------------------------------- bootstrap


def _resample_weights(
    rng: np.random.Generator,
    n_boot: int,
    strata: list[np.ndarray],
    n_units: int,
) -> np.ndarray:
    """How often each unit is drawn, per resample: (n_boot, n_units) int32.

    Each stratum (an array of unit indices) is resampled with replacement to
    its own size, so every resample keeps the class balance of the data.
    """
    row_offsets = (np.arange(n_boot, dtype=np.int64) * n_units)[:, None]
    flat = np.zeros(n_boot * n_units, dtype=np.int64)
    for members in strata:
        if len(members) == 0:
            continue
        draws = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
        flat += np.bincount((draws + row_offsets).ravel(), minlength=n_boot * n_units)
    return flat.reshape(n_boot, n_units).astype(np.int32)


def _weighted_auc(w_pos: np.ndarray, w_neg: np.ndarray, rank_lt: np.ndarray,
                  rank_le: np.ndarray) -> np.ndarray:
    """ROC AUC per resample (Mann-Whitney with half credit for ties).

    ``rank_lt[i]`` / ``rank_le[i]`` are the numbers of negatives (in ascending
    score order) scoring below / at most positive ``i``.
    """
    cum_neg = np.zeros((w_neg.shape[0], w_neg.shape[1] + 1), dtype=np.float64)
    np.cumsum(w_neg, axis=1, out=cum_neg[:, 1:])
    below = cum_neg[:, rank_lt]
    tied = cum_neg[:, rank_le] - below
    numerator = (w_pos * (below + 0.5 * tied)).sum(axis=1)
    denominator = w_pos.sum(axis=1).astype(np.float64) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _weighted_average_precision(w_pos_sorted: np.ndarray, w_neg_sorted: np.ndarray,
                                starts: np.ndarray) -> np.ndarray:
    """Average precision per resample, scores sorted descending and tied scores grouped.

    Same definition as scikit-learn: sum over thresholds of
    (recall step) x precision.
    """
    tp = np.cumsum(np.add.reduceat(w_pos_sorted, starts, axis=1), axis=1, dtype=np.float64)
    fp = np.cumsum(np.add.reduceat(w_neg_sorted, starts, axis=1), axis=1, dtype=np.float64)
    total_pos = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall_step = np.diff(tp, axis=1, prepend=0.0) / total_pos
        ap = np.nansum(recall_step * precision, axis=1)
    return np.where(total_pos[:, 0] > 0, ap, np.nan)


def _weighted_threshold_metric(metric: str, w: np.ndarray, y: np.ndarray,
                               pred: np.ndarray) -> np.ndarray:
    """A thresholded metric per resample from weighted confusion counts."""
    tp = w[:, (y == 1) & (pred == 1)].sum(axis=1, dtype=np.float64)
    fn = w[:, (y == 1) & (pred == 0)].sum(axis=1, dtype=np.float64)
    fp = w[:, (y == 0) & (pred == 1)].sum(axis=1, dtype=np.float64)
    tn = w[:, (y == 0) & (pred == 0)].sum(axis=1, dtype=np.float64)
    n = tp + fn + fp + tn

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, 0.0)

    if metric == "accuracy":
        return ratio(tp + tn, n)
    if metric == "precision":
        return ratio(tp, tp + fp)
    if metric in ("recall", "sensitivity"):
        return ratio(tp, tp + fn)
    if metric == "specificity":
        return ratio(tn, tn + fp)
    if metric == "f1":
        return ratio(2 * tp, 2 * tp + fp + fn)
    # cohen_kappa
    observed = ratio(tp + tn, n)
    expected = ratio((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp), n * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected < 1.0, (observed - expected) / (1.0 - expected), np.nan)


def bootstrap_ci(
    y_true: Any,
    y_prob: Any,
    metric: str = "roc_auc",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Any = None,
    threshold: float = 0.5,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap confidence interval of a metric.

    Resampling is stratified: positives and negatives are resampled separately
    (each to its own count), so every resample has both classes and the AUC is
    always defined. With ``groups`` (study or patient ids) whole groups are
    resampled instead (cluster bootstrap), stratified by whether a group holds
    any positive: images of one study are correlated, and resampling them one
    by one would give intervals that are too narrow.

    Args:
        y_true: labels (0/1).
        y_prob: probabilities of the positive class.
        metric: one of ``BOOTSTRAP_METRICS``; the thresholded ones (accuracy,
            precision, recall/sensitivity, specificity, f1, cohen_kappa) use
            ``threshold``.
        n_boot: number of resamples.
        seed: seed of the resampling; the same seed gives the same interval.
        alpha: 1 - confidence level (0.05 gives a 95% interval).
        groups: optional group id per sample for a cluster bootstrap.
        threshold: decision threshold for the thresholded metrics.

    Returns:
        ``(low, high)``; ``(None, None)`` when the metric is undefined on the
        data (ROC AUC, PR AUC with one class only).

    Raises:
        EvaluationError: unknown metric, bad ``n_boot``/``alpha``, groups of the
            wrong length, or invalid labels/probabilities.
    """
    if metric not in BOOTSTRAP_METRICS:
        raise EvaluationError(f"unknown bootstrap metric {metric!r}; use one of {BOOTSTRAP_METRICS}")
    if int(n_boot) < 1:
        raise EvaluationError(f"n_boot must be at least 1; got {n_boot}")
    if not 0.0 < float(alpha) < 1.0:
        raise EvaluationError(f"alpha must be in (0, 1); got {alpha}")
    y, p = _as_arrays(y_true, y_prob)
    if metric in ("roc_auc", "pr_auc") and not _has_both_classes(y):
        return None, None
    n_boot = int(n_boot)
    rng = np.random.default_rng(seed)

    if groups is None:
        unit_of_item = np.arange(len(y))
        strata = [np.flatnonzero(y == 1), np.flatnonzero(y == 0)]
        n_units = len(y)
    else:
        group_values = np.asarray(groups)
        if group_values.shape != y.shape:
            raise EvaluationError(
                f"groups must give one id per sample: {group_values.shape[0] if group_values.ndim else 0} "
                f"ids for {len(y)} samples"
            )
        _, unit_of_item = np.unique(group_values, return_inverse=True)
        n_units = int(unit_of_item.max()) + 1
        unit_has_pos = np.zeros(n_units, dtype=bool)
        unit_has_pos[unit_of_item[y == 1]] = True
        strata = [np.flatnonzero(unit_has_pos), np.flatnonzero(~unit_has_pos)]

    pos_items = np.flatnonzero(y == 1)
    neg_items = np.flatnonzero(y == 0)
    if metric == "roc_auc":
        neg_sorted = np.sort(p[neg_items])
        neg_order = neg_items[np.argsort(p[neg_items], kind="stable")]
        rank_lt = np.searchsorted(neg_sorted, p[pos_items], side="left")
        rank_le = np.searchsorted(neg_sorted, p[pos_items], side="right")
    elif metric == "pr_auc":
        order = np.argsort(-p, kind="stable")
        sorted_scores = p[order]
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        pos_mask_sorted = (y[order] == 1)
    else:
        pred = (p >= float(threshold)).astype(np.int64)

    values = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // max(len(y), 1))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        unit_weights = _resample_weights(rng, size, strata, n_units)
        w = unit_weights[:, unit_of_item]  # item weight = how often its unit was drawn
        if metric == "roc_auc":
            out = _weighted_auc(w[:, pos_items], w[:, neg_order], rank_lt, rank_le)
        elif metric == "pr_auc":
            w_sorted = w[:, order]
            w_pos = np.where(pos_mask_sorted, w_sorted, 0)
            w_neg = np.where(pos_mask_sorted, 0, w_sorted)
            out = _weighted_average_precision(w_pos, w_neg, starts)
        else:
            out = _weighted_threshold_metric(metric, w, y, pred)
        values[start:start + size] = out

    undefined = int(np.isnan(values).sum())
    if undefined == n_boot:
        return None, None
    if undefined:
        logger.warning("bootstrap of %s: %d of %d resamples undefined and left out",
                       metric, undefined, n_boot)
    low, high = np.nanquantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def bootstrap_auc_ci(
    y_true: Any,
    y_prob: Any,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Any = None,
) -> tuple[float | None, float | None]:
    """Bootstrap interval of the ROC AUC; ``bootstrap_ci(..., metric="roc_auc")``."""
    return bootstrap_ci(y_true, y_prob, metric="roc_auc", n_boot=n_boot, seed=seed,
                        alpha=alpha, groups=groups)
