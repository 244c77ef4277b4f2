"""Calibrated probabilities: temperature scaling (with a bias), ECE, Brier score, reliability bins.

A network trained with class weights and early stopping gives scores that rank
well (ROC AUC) but whose values are not frequencies: among images given 0.8,
far fewer or far more than 80% are fractured. Temperature scaling (Guo et al.,
2017) fits one number ``T`` on the validation split by minimising the negative
log-likelihood of ``sigmoid(z / T)``; it changes no ranking, so ROC AUC stays
the same.

**Why a bias too.** Class-weighted training (the FracAtlas recipes weigh the
18% positives up) shifts every logit up by about the log of the weight ratio:
the scores are too high, not too sure. One temperature cannot move them down
(on the shipped model T alone came out 1.005 and left the ECE at 0.097), so the
default method, ``temperature+bias``, fits ``sigmoid(z / T + b)`` (Platt scaling
on the logit); ``temperature`` fits ``T`` alone. Both are strictly increasing.

**Which logit.** With flip test-time augmentation a model's probability is the
mean of the image's and its mirror's probabilities. The map is applied to the
logit of that averaged probability, ``p' = sigmoid(logit(p) / T + b)``, not to
an average of logits: calibration is then a strictly increasing map of the
probability every other part of the project already computes (and caches),
and the stored decision threshold maps the same way,
``t' = sigmoid(logit(t) / T + b)``, so no image changes label.

**Where it lives.** A calibrated checkpoint has
``meta["calibration"] = {"method": "temperature+bias", "temperature": T, "bias": b, ...}``;
``meta["threshold"]`` and the operating points stay on the uncalibrated scale
(so code that knows nothing of calibration stays consistent) and
:func:`calibrated_threshold` maps them for display.

The fitting and metrics here are numpy/scipy only. Reading a checkpoint's
calibration is :mod:`fracture.checkpoints.decision`; fitting it on a model
(the hook the trainer and ``python -m fracture calibrate`` call) is
:mod:`fracture.assess.calibration`.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from fracture.evaluate.arrays import EvaluationError, _as_arrays

log = logging.getLogger(__name__)

N_BINS = 15
"""Equal-width bins of the expected calibration error and the reliability diagram."""
EPS = 1e-7
"""Probabilities are clipped to [EPS, 1 - EPS] before taking their logit."""
T_BOUNDS = (0.05, 20.0)
"""Temperatures searched; a fit at a bound means the scores carry almost no information."""
MIN_CALIBRATION_IMAGES = 20


def logit(p: Any) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [EPS, 1 - EPS] so 0 and 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: Any) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


METHODS = ("temperature+bias", "temperature")
DEFAULT_METHOD = "temperature+bias"


def apply_temperature(probs: Any, temperature: float | None, bias: float = 0.0) -> np.ndarray:
    """``sigmoid(logit(p) / T + b)``; ``T`` None (or 1 with no bias) returns the probabilities unchanged."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature is None or (float(temperature) == 1.0 and not bias):
        return p.copy()
    return sigmoid(logit(p) / float(temperature) + float(bias))


def _nll(z: np.ndarray, y: np.ndarray, temperature: float, bias: float = 0.0) -> float:
    s = z / temperature + bias
    # -[y log sigmoid(s) + (1-y) log(1 - sigmoid(s))] = softplus(s) - y s
    return float(np.mean(np.logaddexp(0.0, s) - y * s))


def check_fit_input(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    y, p = _as_arrays(y_true, y_prob)
    if len(y) < MIN_CALIBRATION_IMAGES:
        raise EvaluationError(
            f"calibration needs at least {MIN_CALIBRATION_IMAGES} validation images; got {len(y)}"
        )
    if y.min() == y.max():
        raise EvaluationError(f"calibration needs both classes; all {len(y)} validation labels are {y[0]}")
    return y, p


def fit_temperature_bias(y_true: Any, y_prob: Any) -> tuple[float, float]:
    """``(T, b)`` minimising the validation negative log-likelihood of ``sigmoid(logit(p) / T + b)``.

    L-BFGS-B over ``(log T, b)`` from ``(0, 0)``, ``T`` kept in :data:`T_BOUNDS`;
    deterministic. Raises like :func:`fit_temperature`.
    """
    from scipy.optimize import minimize

    y, p = check_fit_input(y_true, y_prob)
    z = logit(p)
    lo, hi = (math.log(b) for b in T_BOUNDS)
    result = minimize(lambda v: _nll(z, y, math.exp(v[0]), v[1]), x0=np.zeros(2), method="L-BFGS-B",
                      bounds=[(lo, hi), (-20.0, 20.0)])
    return float(math.exp(result.x[0])), float(result.x[1])


def fit_temperature(y_true: Any, y_prob: Any) -> float:
    """The temperature minimising the validation negative log-likelihood.

    A 1-D bounded search over ``log T`` (the NLL is smooth there); the result
    is deterministic.

    Raises:
        EvaluationError: fewer than :data:`MIN_CALIBRATION_IMAGES` images, only
            one class, or invalid input.
    """
    from scipy.optimize import minimize_scalar

    y, p = check_fit_input(y_true, y_prob)
    z = logit(p)
    lo, hi = (math.log(b) for b in T_BOUNDS)
    result = minimize_scalar(lambda u: _nll(z, y, math.exp(u)), bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-6})
    temperature = float(math.exp(result.x))
    if not lo + 1e-3 < result.x < hi - 1e-3:
        log.warning("temperature %.3g is at the edge of the search range %s: the scores carry little "
                    "information about the labels", temperature, T_BOUNDS)
    return temperature


def reliability_bins(y_true: Any, y_prob: Any, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Equal-width probability bins: ``lower, upper, count, mean_prob, fraction_positive``.

    Empty bins are kept (count 0, means ``None``) so every diagram has the same x axis.
    A probability of exactly 1.0 falls in the last bin.
    """
    y, p = _as_arrays(y_true, y_prob)
    if n_bins < 1:
        raise EvaluationError(f"n_bins must be at least 1; got {n_bins}")
    index = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    index = np.maximum(index, 0)
    bins = []
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        bins.append({
            "lower": b / n_bins, "upper": (b + 1) / n_bins, "count": count,
            "mean_prob": float(p[mask].mean()) if count else None,
            "fraction_positive": float(y[mask].mean()) if count else None,
        })
    return bins


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = N_BINS) -> float:
    """ECE: the count-weighted mean |fraction positive - mean probability| over equal-width bins.

    Binary form (the positive class's probability, as in reliability diagrams
    of a fracture detector), not the top-label form of multi-class papers.
    """
    bins = reliability_bins(y_true, y_prob, n_bins)
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["fraction_positive"] - b["mean_prob"]) for b in bins if b["count"]) / total)


def brier_score(y_true: Any, y_prob: Any) -> float:
    """Mean squared difference between probability and label (0 is perfect, 0.25 is a coin)."""
    y, p = _as_arrays(y_true, y_prob)
    return float(np.mean((p - y) ** 2))


def calibration_report(y_true: Any, probs_uncalibrated: Any, temperature: float | None,
                       n_bins: int = N_BINS, *, bias: float = 0.0) -> dict[str, Any]:
    """The ``calibration`` block of an evaluation report (``evaluate --json``, the card, Compare).

    Returns:
        ``{"temperature", "bias", "n_bins", "ece", "ece_uncalibrated", "brier",
        "brier_uncalibrated", "bins", "bins_uncalibrated"}``; without a
        temperature both sets are the same (uncalibrated) numbers.
    """
    y, raw = _as_arrays(y_true, probs_uncalibrated)
    cal = apply_temperature(raw, temperature, bias)
    return {
        "temperature": None if temperature is None else float(temperature),
        "bias": None if temperature is None else float(bias),
        "n_bins": int(n_bins),
        "ece": expected_calibration_error(y, cal, n_bins),
        "ece_uncalibrated": expected_calibration_error(y, raw, n_bins),
        "brier": brier_score(y, cal),
        "brier_uncalibrated": brier_score(y, raw),
        "bins": reliability_bins(y, cal, n_bins),
        "bins_uncalibrated": reliability_bins(y, raw, n_bins),
    }
