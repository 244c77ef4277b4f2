"""Temperature scaling, ECE/Brier/reliability bins, operating points, and the calibrate command."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fracture.evaluate.calibration import (
    N_BINS,
    apply_temperature,
    brier_score,
    calibrated_threshold,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    logit,
    reliability_bins,
    sigmoid,
    temperature_of,
)
from fracture.evaluate.metrics import EvaluationError, operating_points, point_metrics

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "fracatlas_lite0.safetensors"
FRACATLAS = REPO.parent / "shared" / "data" / "fracatlas"


def overconfident(n: int = 4000, true_t: float = 2.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) and probabilities sigmoid(true_t * z): too sure by a factor true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < sigmoid(z)).astype(int)
    return y, sigmoid(true_t * z)


def test_logit_and_sigmoid_are_inverse_and_finite_at_the_ends():
    p = np.array([0.0, 1e-3, 0.3, 0.5, 0.9, 1.0])
    z = logit(p)
    assert np.isfinite(z).all()
    assert np.allclose(sigmoid(z)[1:-1], p[1:-1])
    assert sigmoid(np.array([-1e4, 1e4])).tolist() == [0.0, 1.0]


def test_fit_temperature_recovers_the_overconfidence_factor():
    y, p = overconfident(true_t=2.5)
    t = fit_temperature(y, p)
    assert 2.2 < t < 2.8
    calibrated = apply_temperature(p, t)
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, p)
    assert brier_score(y, calibrated) < brier_score(y, p)


def test_temperature_keeps_ranking_and_maps_the_threshold_so_labels_do_not_change():
    y, p = overconfident(n=500, true_t=3.0, seed=1)
    t = fit_temperature(y, p)
    q = apply_temperature(p, t)
    assert (np.diff(q[np.argsort(p)]) >= 0).all()  # order kept (ties only where float32 saturates)
    meta = {"threshold": 0.37, "calibration": {"temperature": t}}
    threshold = calibrated_threshold(meta)
    assert threshold != pytest.approx(0.37)
    assert ((p >= 0.37) == (q >= threshold)).all()


def test_underconfident_scores_get_a_temperature_below_one():
    y, p = overconfident(true_t=0.5, seed=2)
    assert fit_temperature(y, p) < 0.7


def test_fit_temperature_refuses_one_class_and_tiny_inputs():
    with pytest.raises(EvaluationError, match="both classes"):
        fit_temperature(np.zeros(50, int), np.linspace(0.1, 0.9, 50))
    with pytest.raises(EvaluationError, match="at least"):
        fit_temperature([0, 1, 1], [0.2, 0.7, 0.9])


def test_reliability_bins_are_fifteen_equal_width_bins_with_empty_ones_kept():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.0, 0.5, 1.0, 0.05, 0.52])
    bins = reliability_bins(y, p)
    assert len(bins) == N_BINS == 15
    assert bins[0]["lower"] == 0.0 and bins[-1]["upper"] == 1.0
    assert sum(b["count"] for b in bins) == 5
    assert bins[0]["count"] == 2 and bins[0]["fraction_positive"] == 0.0
    assert bins[7]["count"] == 2 and bins[7]["mean_prob"] == pytest.approx(0.51)
    assert bins[-1]["count"] == 1  # p = 1.0 falls in the last bin
    assert bins[3]["count"] == 0 and bins[3]["mean_prob"] is None


def test_ece_by_hand():
    # Bin [0, 1/15): two images at 0.0 and 0.05, none positive: |0 - 0.025| = 0.025 (weight 2)
    # Bin [7/15, 8/15): 0.5 and 0.52, both positive: |1 - 0.51| = 0.49 (weight 2); bin 14: |1 - 1| = 0.
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.0, 0.5, 1.0, 0.05, 0.52])
    assert expected_calibration_error(y, p) == pytest.approx((2 * 0.025 + 2 * 0.49) / 5)
    assert brier_score(y, p) == pytest.approx(np.mean((p - y) ** 2))


def test_perfectly_calibrated_bins_have_zero_ece():
    y = np.array([0] * 10 + [1] * 10)
    p = np.full(20, 0.5)
    assert expected_calibration_error(y, p) == pytest.approx(0.0)


def test_calibration_report_block():
    y, p = overconfident(n=800, seed=3)
    report = calibration_report(y, p, fit_temperature(y, p))
    assert set(report) >= {"ece", "ece_uncalibrated", "brier", "bins", "temperature", "n_bins"}
    assert report["ece"] < report["ece_uncalibrated"]
    assert len(report["bins"]) == 15
    json.dumps(report)  # JSON-able
    plain = calibration_report(y, p, None)
    assert plain["ece"] == plain["ece_uncalibrated"] and plain["temperature"] is None


def test_temperature_of_ignores_missing_or_bad_values():
    assert temperature_of({}) is None
    assert temperature_of({"calibration": {"temperature": -1}}) is None
    assert temperature_of({"calibration": {"temperature": float("nan")}}) is None
    assert temperature_of({"calibration": {"temperature": True}}) is None
    assert temperature_of({"calibration": {"temperature": 1.7}}) == 1.7
    assert calibrated_threshold({"threshold": 0.4}) == 0.4


def test_operating_points_keep_the_stored_threshold_and_add_a_screening_point():
    y, p = overconfident(n=600, seed=4)
    points = operating_points(y, p, target_sensitivity=0.9, rule_used="youden", stored_threshold=0.41)
    names = [pt["name"] for pt in points]
    assert names[0] == "default" and points[0]["threshold"] == 0.41
    assert "sensitivity_90" in names
    screening = points[names.index("sensitivity_90")]
    assert screening["sensitivity"] >= 0.9
    assert screening["threshold"] < points[names.index("youden")]["threshold"]
    for pt in points:
        assert pt["split"] == "val" and 0 <= pt["ppv"] <= 1 and 0 <= pt["npv"] <= 1
        again = point_metrics(y, p, pt["threshold"])
        assert again["sensitivity"] == pt["sensitivity"] and again["npv"] == pt["npv"]
    json.dumps(points)


def test_point_metrics_by_hand_and_undefined_ratios():
    m = point_metrics([1, 1, 0, 0, 0], [0.9, 0.2, 0.8, 0.1, 0.3], 0.5)
    assert m["sensitivity"] == 0.5 and m["specificity"] == pytest.approx(2 / 3)
    assert m["ppv"] == 0.5 and m["npv"] == pytest.approx(2 / 3)
    nothing_positive = point_metrics([1, 0], [0.1, 0.2], 0.9)
    assert nothing_positive["ppv"] is None and nothing_positive["npv"] == 0.5


def test_operating_points_refuse_one_class():
    with pytest.raises(EvaluationError):
        operating_points([0, 0, 0], [0.1, 0.2, 0.3])
