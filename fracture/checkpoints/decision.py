"""What a checkpoint's calibration and operating points say: the calibrated probability and threshold.

Reads the validated blocks of a checkpoint's metadata (:mod:`fracture.checkpoints.meta`)
and applies the calibration maths of :mod:`fracture.evaluate.calibration`.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from fracture.evaluate.calibration import apply_temperature, calibration_report

log = logging.getLogger(__name__)

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
