"""Reader-study arithmetic: a reader against the truth and the model, and readers against each other.

Sensitivity, specificity and Cohen's kappa come from scikit-learn's
confusion matrix and ``cohen_kappa_score``; Fleiss' kappa (agreement of many
readers on the same cases) is the textbook formula, which scikit-learn lacks.
A reader's confidence becomes a score on one scale (0 = surely not
fractured, 100 = surely fractured), so their calls give ROC points and an
AUC comparable with the model's curve on the same cases.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score, roc_curve

MIN_KAPPA_CASES = 5
"""Kappa (Cohen's or Fleiss') is reported only on at least this many cases: on one or two cases it is
1.0 or -0.5 by arithmetic, not by agreement."""


def reader_score(fractured: bool, confidence: int) -> float:
    """One scale for answer + confidence: 'fractured, 100% sure' -> 100, 'not fractured, 100% sure' -> 0,
    either answer at 0% confidence -> 50."""
    half = float(confidence) / 2.0
    return 50.0 + half if fractured else 50.0 - half


def _kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < MIN_KAPPA_CASES:
        return None
    if len(np.unique(np.concatenate([a, b]))) < 2:
        return 1.0 if np.array_equal(a, b) else 0.0  # one class everywhere: sklearn returns nan
    value = float(cohen_kappa_score(a, b))
    return None if np.isnan(value) else value


def reader_metrics(
    truth: Sequence[int],
    calls: Sequence[int],
    scores: Sequence[float] | None = None,
    model_calls: Sequence[int] | None = None,
) -> dict[str, Any]:
    """A reader's figures on the cases they answered.

    Args:
        truth: 0/1 per case.
        calls: the reader's 0/1 per case.
        scores: the reader's :func:`reader_score` per case (for ROC points and AUC).
        model_calls: the model's 0/1 per case at its threshold (for kappa with the model).

    Returns:
        ``n, positives, tp, fp, tn, fn, sensitivity, specificity, accuracy, kappa_truth,
        kappa_model, roc_point [fpr, tpr], roc [[fpr, tpr], ...], auc`` (None where undefined;
        kappas also under :data:`MIN_KAPPA_CASES` cases).
    """
    y = np.asarray(truth, dtype=int)
    c = np.asarray(calls, dtype=int)
    if y.shape != c.shape:
        raise ValueError(f"truth has {len(y)} cases, calls {len(c)}")
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, c, labels=[0, 1]).ravel()) if len(y) else (0, 0, 0, 0)
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    out: dict[str, Any] = {
        "n": int(len(y)), "positives": int(y.sum()), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": sens, "specificity": spec,
        "accuracy": (tp + tn) / len(y) if len(y) else None,
        "kappa_truth": _kappa(y, c),
        "kappa_model": _kappa(np.asarray(model_calls, dtype=int), c) if model_calls is not None else None,
        "roc_point": [1 - spec, sens] if sens is not None and spec is not None else None,
        "roc": None, "auc": None,
    }
    if scores is not None and len(np.unique(y)) == 2:
        s = np.asarray(scores, dtype=float)
        fpr, tpr, _ = roc_curve(y, s)
        out["roc"] = [[float(a), float(b)] for a, b in zip(fpr, tpr)]
        out["auc"] = float(roc_auc_score(y, s))
    return out


def fleiss_kappa(ratings: np.ndarray) -> float | None:
    """Fleiss' kappa for ``ratings`` (cases x readers) of 0/1 calls, every reader rating every case.

    Returns None with fewer than 2 readers or :data:`MIN_KAPPA_CASES` cases, or
    when every call is the same (chance agreement 1: kappa undefined).
    """
    r = np.asarray(ratings, dtype=int)
    if r.ndim != 2 or r.shape[0] < MIN_KAPPA_CASES or r.shape[1] < 2:
        return None
    n_cases, n_raters = r.shape
    counts = np.stack([(r == 0).sum(axis=1), (r == 1).sum(axis=1)], axis=1).astype(float)  # cases x categories
    p_case = (np.square(counts).sum(axis=1) - n_raters) / (n_raters * (n_raters - 1))
    p_bar = p_case.mean()
    p_cat = counts.sum(axis=0) / (n_cases * n_raters)
    p_e = float(np.square(p_cat).sum())
    if p_e >= 1.0:
        return None
    return float((p_bar - p_e) / (1 - p_e))
