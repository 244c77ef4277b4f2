"""The OOD flag is never silently off: a score that is not a number is an explicit, flagged error state, and
statistics holding NaN or inf are refused (logged) instead of scoring everything as familiar."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from fracture.gate.ood import METHOD, TENSOR_NAMES, OodDetector, fit_detector


@pytest.fixture()
def detector() -> OodDetector:
    rng = np.random.default_rng(0)
    return fit_detector(rng.normal(size=(60, 16)), rng.normal(size=(20, 16)), components=4)


def test_a_nan_score_is_an_explicit_flagged_error(detector):
    nan = detector.result(float("nan"))
    assert nan["flagged"] is True and nan["score"] is None and "could not be checked" in nan["error"]
    assert detector.result(float("inf"))["flagged"] is True
    fine = detector.result(0.0)
    assert fine == {"score": 0.0, "threshold": detector.threshold, "flagged": False}
    flags = detector.flags([float("nan"), detector.threshold / 2, detector.threshold * 2])
    assert flags.tolist() == [True, False, True]


@pytest.mark.parametrize("damage", ["mean_nan", "variances_inf", "components_nan"])
def test_nan_or_inf_statistics_are_refused_not_used(detector, damage, caplog):
    meta = {"ood": {**detector.meta_block()}}
    arrays = {"ood.mean": detector.mean.copy(), "ood.components": detector.components.copy(),
              "ood.variances": detector.variances.copy()}
    name, value = {"mean_nan": ("ood.mean", np.nan), "variances_inf": ("ood.variances", np.inf),
                   "components_nan": ("ood.components", np.nan)}[damage]
    arrays[name].flat[0] = value
    with caplog.at_level(logging.WARNING, logger="fracture.gate.ood"):
        assert OodDetector.from_checkpoint(meta, arrays) is None
    assert any("inconsistent" in r.message for r in caplog.records)
    good = {"ood.mean": detector.mean, "ood.components": detector.components, "ood.variances": detector.variances}
    restored = OodDetector.from_checkpoint(meta, good)
    assert restored is not None and meta["ood"]["method"] == METHOD and math.isfinite(restored.threshold)
