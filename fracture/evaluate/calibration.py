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

The fitting and metrics here are numpy/scipy only. :func:`fit_calibration` (the
hook the trainer and ``python -m fracture calibrate`` call) runs the model and
imports torch inside.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fracture.evaluate.metrics import EvaluationError, _as_arrays

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


def _check_fit_input(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
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

    y, p = _check_fit_input(y_true, y_prob)
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

    y, p = _check_fit_input(y_true, y_prob)
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


# ----------------------------------------------------------------- checkpoint metadata


def _calibration(meta: dict[str, Any] | None):
    """The checkpoint's validated calibration block (None: not calibrated); a bad block raises, never ignored."""
    from fracture.checkpoints.meta import validate_blocks

    return validate_blocks({"calibration": (meta or {}).get("calibration")}, where="checkpoint metadata")["calibration"]


def temperature_of(meta: dict[str, Any] | None) -> float | None:
    """The fitted temperature in a checkpoint's metadata, or None (not calibrated).

    Raises:
        CheckpointError: a calibration block out of range or of unknown method (fracture/checkpoints/meta.py).
    """
    block = _calibration(meta)
    return None if block is None else block.temperature


def bias_of(meta: dict[str, Any] | None) -> float:
    """The fitted logit bias (0 when the checkpoint is not calibrated)."""
    block = _calibration(meta)
    return 0.0 if block is None else block.bias


def calibrate_probabilities(meta: dict[str, Any] | None, probs: Any) -> np.ndarray:
    """A checkpoint's probabilities as shown to people: calibrated when it has a temperature."""
    return apply_temperature(probs, temperature_of(meta), bias_of(meta))


def calibrated_threshold(meta: dict[str, Any] | None, threshold: float | None = None) -> float:
    """A stored (uncalibrated) threshold mapped to the calibrated scale (labels unchanged).

    ``threshold`` defaults to ``meta["threshold"]``.
    """
    raw = float((meta or {}).get("threshold", 0.5) if threshold is None else threshold)
    block = _calibration(meta)
    return raw if block is None else block.threshold(raw)


def calibrate_predictions(preds: Any, meta: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """A predictions table as shown to people, and its image-level ``calibration`` block.

    Args:
        preds: a DataFrame with ``label`` and ``prob`` (uncalibrated, as predicted and cached).
        meta: the checkpoint's metadata.

    Returns:
        ``(copy with prob calibrated and the original kept as prob_uncalibrated,
        calibration_report(...))``; without a temperature the probabilities are
        unchanged and both ECEs are the same number.
    """
    temperature, bias = temperature_of(meta), bias_of(meta)
    out = preds.copy()
    out["prob_uncalibrated"] = out["prob"].astype(float)
    out["prob"] = apply_temperature(out["prob_uncalibrated"].to_numpy(), temperature, bias)
    return out, calibration_report(out["label"].to_numpy(), out["prob_uncalibrated"].to_numpy(), temperature,
                                   bias=bias)


def operating_point_choices(meta: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The operating points a page offers, thresholds on the calibrated (shown) scale.

    The stored default first; a checkpoint without ``operating_points`` offers
    its one stored threshold. Each entry: ``name, label, threshold`` (shown scale),
    ``threshold_uncalibrated`` and, when stored, the validation ``sensitivity, specificity, ppv, npv``.

    Raises:
        CheckpointError: a bad ``operating_points`` or ``calibration`` block (fracture/checkpoints/meta.py).
    """
    from fracture.checkpoints.meta import offered_points, validate_blocks

    meta = meta or {}
    blocks = validate_blocks({"operating_points": meta.get("operating_points"), "calibration": meta.get("calibration")},
                             where="checkpoint metadata")
    return offered_points(blocks["operating_points"], blocks["calibration"], float(meta.get("threshold", 0.5)),
                          meta.get("threshold_rule"))


# ----------------------------------------------------------------- fitting a checkpoint


@dataclass
class SplitSource:
    """Images of one split for :func:`fit_calibration`, without saying where they live.

    Attributes:
        fetch: maps an array of positions ``0..n-1`` to uint8 images ``(B, S, S[, C])``
            already through the checkpoint's preprocessing (e.g. an ``ImageCache`` slice).
        n: how many images.
        labels: 0/1 labels (needed for the validation split).
        body_parts: body-part indices for a multi-task model (-1 unknown), or None.
    """

    fetch: Callable[[np.ndarray], np.ndarray]
    n: int
    labels: np.ndarray | None = None
    body_parts: np.ndarray | None = None

    def subsample(self, max_n: int, seed: int = 0) -> "SplitSource":
        """At most ``max_n`` of these images, a seeded sorted sample (itself when already small enough)."""
        if self.n <= max_n:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(self.n, max_n, replace=False))
        return SplitSource(
            fetch=lambda p: self.fetch(keep[np.asarray(p)]), n=int(max_n),
            labels=None if self.labels is None else np.asarray(self.labels)[keep],
            body_parts=None if self.body_parts is None else np.asarray(self.body_parts)[keep],
        )


def fit_calibration(
    checkpoint: str | Path,
    model: Any,
    meta: dict[str, Any],
    *,
    val: SplitSource,
    train: SplitSource | None = None,
    device: Any = "cpu",
    half: bool | None = None,
    target_sensitivity: float = 0.9,
    method: str = DEFAULT_METHOD,
    ood_components: int | None = None,
    batch_size: int = 32,
    progress: Callable[[str, int, int], None] | None = None,
    test: SplitSource | None = None,
    probes: dict[str, dict[str, np.ndarray]] | None = None,
    max_train_images: int = 1000,
    strict: bool = True,
) -> dict[str, Any] | None:
    """Fit temperature, operating points and the out-of-distribution score; save them in the checkpoint.

    The trainer's hook and the engine of ``python -m fracture calibrate``. One
    pass over the validation images gives the (flip-averaged, as the model
    predicts) probabilities and the pooled features; one pass over ``train``
    (a subsample is enough) gives the feature statistics of the OOD score,
    whose threshold is set on the validation features. Everything else in
    ``meta`` is kept; the file is rewritten atomically by
    :func:`fracture.checkpoints.format.save_checkpoint`.

    Args:
        checkpoint: the file to rewrite (usually the one ``model`` came from).
        model: the loaded model (eval mode is set here).
        meta: its metadata.
        val: the validation split (labels required).
        train: training images for the OOD statistics (a seeded sample of at
            most ``max_train_images`` is used); None fits them on the
            validation features (thresholded on the same images, so its flag
            rate on new in-distribution images will be somewhat higher).
        half: None (re-calibration): only the metadata and OOD tensors are rewritten, the weights
            stay bit for bit as stored; True/False (the trainer's final write): ``model`` is saved,
            float16 when True.
        target_sensitivity: the screening operating point's sensitivity.
        method: ``temperature+bias`` (default) or ``temperature`` (see the module notes).
        strict: False (the trainer's choice) turns a validation split that
            cannot be calibrated (too few images, one class) into a logged
            warning and ``None``, the checkpoint left as it was.
        ood_components: principal components kept by the OOD score (default
            :data:`fracture.gate.ood.DEFAULT_COMPONENTS`, fewer with few images).
        test, probes: measured only, never fitted on: the OOD flag rate on the
            test split, and per probe group (raw uint8 images of any size, e.g.
            :func:`fracture.gate.probes.probe_sets`) how many are flagged; stored
            under ``meta["ood"]["measured"]`` for the model card.

    Returns:
        A summary: temperature, ECE before/after on val, operating points, OOD
        threshold and val flag rate.

    Raises:
        EvaluationError: a validation split without labels, with one class or too few images.
        CheckpointError: the checkpoint cannot be written.
    """
    import torch

    from fracture.gate import ood
    from fracture.checkpoints.format import save_checkpoint, update_checkpoint_meta
    from fracture.evaluate.metrics import operating_points
    from fracture.serve.inference import InputSpec

    if not strict:
        from fracture.gate.ood import OodError

        try:
            return fit_calibration(checkpoint, model, meta, val=val, train=train, device=device, half=half,
                                   target_sensitivity=target_sensitivity, method=method,
                                   ood_components=ood_components, batch_size=batch_size, progress=progress,
                                   test=test, probes=probes, max_train_images=max_train_images, strict=True)
        except (EvaluationError, OodError) as exc:
            log.warning("%s left uncalibrated: %s", checkpoint, exc)
            return None
    if val.labels is None:
        raise EvaluationError("fit_calibration needs the labels of the validation split")
    if method not in METHODS:
        raise EvaluationError(f"unknown calibration method {method!r}; use one of {METHODS}")
    _check_fit_input(np.asarray(val.labels), np.full(len(val.labels), 0.5))  # before any model run
    device = torch.device(device)
    norm = meta["normalization"]
    spec = InputSpec(in_chans=int(meta["in_chans"]), mean=tuple(norm["mean"]), std=tuple(norm["std"]))
    tta = bool(meta.get("tta_hflip"))
    report = (lambda what: (lambda done, total: progress(what, done, total))) if progress else (lambda what: None)
    from fracture.gate import radiograph

    val_stats = radiograph.StatsRecorder(val.fetch)  # image statistics for the radiograph gate, same pass
    val_probs, val_features = ood.extract(model, val_stats.fetch, val.n, spec, device=device, tta_hflip=tta,
                                          body_parts=val.body_parts, batch_size=batch_size,
                                          progress=report("validation images"))
    labels = np.asarray(val.labels).astype(np.int64)
    temperature_alone = fit_temperature(labels, val_probs)
    if method == "temperature":
        temperature, bias = temperature_alone, 0.0
    else:
        temperature, bias = fit_temperature_bias(labels, val_probs)
    val_report = calibration_report(labels, val_probs, temperature, bias=bias)
    alone_report = calibration_report(labels, val_probs, temperature_alone)
    points = operating_points(labels, val_probs, target_sensitivity=target_sensitivity,
                              rule_used=meta.get("threshold_rule"), stored_threshold=float(meta["threshold"]))
    if train is not None and train.n > 0:
        train = train.subsample(max_train_images)
        train_stats = radiograph.StatsRecorder(train.fetch)
        _, fit_features = ood.extract(model, train_stats.fetch, train.n, spec, device=device, tta_hflip=False,
                                      body_parts=train.body_parts, batch_size=batch_size, with_probs=False,
                                      progress=report("training images"))
        fit_stats, fitted_on = train_stats.array(), "train"
    else:
        fit_features, fit_stats, fitted_on = val_features, val_stats.array(), "val"
    detector = ood.fit_detector(fit_features, val_features, components=ood_components)
    try:  # level (a): radiograph or not; a fit that cannot be made leaves the DICOM and colour checks alone
        gate, gate_block = radiograph.fit_for_model(model, meta, fit_features, fit_stats, val_features=val_features,
                                                    val_stats=val_stats.array(), device=device, batch_size=batch_size)
    except radiograph.GateError as exc:
        log.warning("%s: no radiograph gate fitted: %s", checkpoint, exc)
        gate, gate_block = None, None
    measured: dict[str, Any] = {}
    gate_measured: dict[str, Any] = {}
    if test is not None and test.n > 0:
        test_stats = radiograph.StatsRecorder(test.fetch)
        _, test_features = ood.extract(model, test_stats.fetch, test.n, spec, device=device, batch_size=batch_size,
                                       body_parts=test.body_parts, with_probs=False, progress=report("test images"))
        measured["test_flag_rate"] = float(detector.flags(detector.score(test_features)).mean())
        measured["n_test"] = int(test.n)
        if gate is not None:
            gated = int(gate.gated(test_features, test_stats.array()).sum())
            gate_measured["test"] = {"n": int(test.n), "gated": gated, "rate": gated / max(1, int(test.n))}
    if probes:
        from fracture.preprocess.pipeline import Pipeline

        pipeline = Pipeline.from_spec(meta["preprocess"])
        measured["probes"] = {}
        for group, images in probes.items():
            prepared = np.stack([pipeline(image) for image in images.values()])
            _, features = ood.extract(model, lambda p: prepared[p], len(prepared), spec, device=device,
                                      batch_size=batch_size, with_probs=False)
            measured["probes"][group] = {"n": len(prepared), "flagged": int(detector.flags(detector.score(features)).sum())}
        gate_measured["probes"] = radiograph.measure(gate, model, meta, probes, device=device, batch_size=batch_size)
    new_meta = dict(meta)
    new_meta["calibration"] = {
        "method": method,
        "temperature": temperature,
        "bias": bias,
        "fitted_on": "val",
        "n": int(len(labels)),
        "rule": "p' = sigmoid(logit(p) / T + bias), p = the flip-averaged probability",
        "temperature_alone": {"temperature": temperature_alone, "val_ece": alone_report["ece"]},
        "val_ece": val_report["ece"],
        "val_ece_uncalibrated": val_report["ece_uncalibrated"],
        "val_brier": val_report["brier"],
        "val_brier_uncalibrated": val_report["brier_uncalibrated"],
    }
    new_meta["operating_points"] = points
    new_meta["ood"] = {**detector.meta_block(), "fitted_on": fitted_on, "n_fit": int(len(fit_features))}
    if measured:
        new_meta["ood"]["measured"] = measured
    new_meta.pop("radiograph_gate", None)
    extras = detector.tensors()
    if gate is not None:
        new_meta["radiograph_gate"] = {**gate_block, **({"measured": gate_measured} if gate_measured else {})}
        extras.update(gate.tensors())
    if half is None:  # re-calibrating a checkpoint: its weights stay exactly as stored
        update_checkpoint_meta(checkpoint, new_meta, extra_tensors=extras)
    else:  # the trainer's first write of its final checkpoint, from the model in memory
        save_checkpoint(checkpoint, model, new_meta, half=half, extra_tensors=extras)
    model.checkpoint_extras = extras
    log.info("calibrated %s: T=%.3f, bias %.3f, val ECE %.3f -> %.3f; OOD threshold %.2f flags %.1f%% of val",
             checkpoint, temperature, bias, val_report["ece_uncalibrated"], val_report["ece"],
             detector.threshold, 100 * detector.val_flag_rate)
    return {
        "checkpoint": str(checkpoint),
        "method": method,
        "temperature": temperature,
        "bias": bias,
        "temperature_alone": new_meta["calibration"]["temperature_alone"],
        "val_ece_uncalibrated": val_report["ece_uncalibrated"],
        "val_ece": val_report["ece"],
        "val_brier_uncalibrated": val_report["brier_uncalibrated"],
        "val_brier": val_report["brier"],
        "operating_points": points,
        "ood": new_meta["ood"],
        "radiograph_gate": new_meta.get("radiograph_gate"),
    }
