"""Temperature scaling, ECE/Brier/reliability bins, operating points, and the calibrate command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fracture.evaluate.calibration import N_BINS, apply_temperature, brier_score, calibration_report, expected_calibration_error, fit_temperature, fit_temperature_bias, logit, reliability_bins, sigmoid
from fracture.checkpoints.decision import calibrated_threshold, temperature_of
from fracture.evaluate.metrics import EvaluationError, operating_points, point_metrics

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "weights" / (REPO / "weights" / "default.txt").read_text().strip()  # the default model


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


def test_temperature_of_refuses_bad_values_instead_of_ignoring_them():
    from fracture.errors import CheckpointError

    assert temperature_of({}) is None
    for bad in (-1, float("nan"), True, 1e-300, "1.5"):
        with pytest.raises(CheckpointError, match="calibration"):
            temperature_of({"calibration": {"temperature": bad}})
    with pytest.raises(CheckpointError, match="bias"):
        calibrated_threshold({"threshold": 0.4, "calibration": {"temperature": 1.0, "bias": 50}})
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


def test_temperature_and_bias_fix_shifted_scores_that_a_temperature_cannot():
    """Class-weighted training shifts every logit up; a bias undoes it, a temperature cannot."""
    rng = np.random.default_rng(5)
    z = rng.normal(-1.5, 2.0, 3000)
    y = (rng.random(3000) < sigmoid(z)).astype(int)
    p = sigmoid(z + 1.5)  # scores too high, not too sure
    t_alone = fit_temperature(y, p)
    t, b = fit_temperature_bias(y, p)
    assert 0.85 < t < 1.15 and -1.8 < b < -1.2
    assert expected_calibration_error(y, apply_temperature(p, t, b)) < 0.5 * expected_calibration_error(
        y, apply_temperature(p, t_alone))
    meta = {"threshold": 0.42, "calibration": {"temperature": t, "bias": b}}
    q = apply_temperature(p, t, b)
    assert ((p >= 0.42) == (q >= calibrated_threshold(meta))).all()  # labels unchanged
    assert calibration_report(y, p, t, bias=b)["bias"] == b


def _demo_checkpoint(tmp_path, monkeypatch, *, fingerprint: bool = True):
    """A tiny small_cnn checkpoint 'trained' on a small demo dataset (own cache folder)."""
    import torch

    from fracture.checkpoints.format import save_checkpoint
    from fracture.data import open_dataset
    from fracture.data.demo import make_demo_dataset
    from fracture.models import create_model

    monkeypatch.setenv("FRACTURE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FRACTURE_CACHE_DIR", raising=False)
    root = make_demo_dataset(tmp_path / "demo", seed=0, studies=120, size_range=(64, 96))  # >= 20 val images
    torch.manual_seed(0)
    model = create_model("small_cnn", in_chans=1)
    meta = {
        "image_size": 32, "preprocess": [{"op": "resize", "size": 32, "mode": "letterbox"}],
        "normalization": {"mean": [0.5], "std": [0.5]}, "class_names": ["normal", "abnormal"],
        "body_parts": [], "multitask": False, "threshold": 0.5, "threshold_rule": "youden",
        "dataset_fingerprint": open_dataset(root).fingerprint() if fingerprint else "f" * 64,
    }
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    return path, root


@pytest.mark.slow
def test_calibrate_command_writes_temperature_operating_points_and_ood(tmp_path, monkeypatch, capsys):
    from fracture.checkpoints.format import load_checkpoint, read_checkpoint_meta
    from fracture.cli import main
    from fracture.gate.ood import OodDetector

    path, root = _demo_checkpoint(tmp_path, monkeypatch)
    before = read_checkpoint_meta(path)
    out = tmp_path / "summary.json"
    assert main(["calibrate", "--checkpoint", str(path), "--data", str(root), "--train-images", "40",
                 "--json", str(out), "--no-measure"]) == 0
    meta = read_checkpoint_meta(path)
    assert meta["calibration"]["method"] == "temperature+bias" and meta["calibration"]["temperature"] > 0
    assert meta["threshold"] == before["threshold"] and meta["dataset_fingerprint"] == before["dataset_fingerprint"]
    assert [p["name"] for p in meta["operating_points"]][0] == "default"
    assert meta["ood"]["fitted_on"] == "train" and meta["ood"]["n_fit"] <= 40
    assert meta["ood"]["val_flag_rate"] <= 0.05
    model, meta = load_checkpoint(path)
    assert OodDetector.from_checkpoint(meta, model.checkpoint_extras) is not None
    summary = json.loads(out.read_text())
    assert summary["temperature"] == meta["calibration"]["temperature"]
    printed = capsys.readouterr().out
    assert "val ECE" in printed and "radiograph gate (level a)" in printed
    assert meta["radiograph_gate"]["n_radiographs"] <= 40 and meta["radiograph_gate"]["val_gated_rate"] <= 0.01
    # evaluate --json reports the image-level calibration block (15 bins) with the calibrated threshold
    report = tmp_path / "evaluate.json"
    assert main(["evaluate", "--checkpoint", str(path), "--data", str(root), "--split", "val", "--n-boot", "10",
                 "--json", str(report)]) == 0
    evaluated = json.loads(report.read_text())
    block = evaluated["image"]["calibration"]
    assert {"ece", "ece_uncalibrated", "brier", "bins"} <= set(block) and len(block["bins"]) == 15
    assert block["temperature"] == pytest.approx(meta["calibration"]["temperature"])
    assert evaluated["threshold"] == pytest.approx(calibrated_threshold(meta))


def test_calibrate_refuses_another_dataset_unless_forced(tmp_path, monkeypatch, capsys):
    from fracture.checkpoints.format import read_checkpoint_meta
    from fracture.cli import main

    path, root = _demo_checkpoint(tmp_path, monkeypatch, fingerprint=False)
    assert main(["calibrate", "--checkpoint", str(path), "--data", str(root), "--no-measure"]) == 2
    err = capsys.readouterr().err
    assert "fingerprint" in err and "--force" in err
    assert "calibration" not in read_checkpoint_meta(path)
    assert main(["calibrate", "--checkpoint", str(path), "--data", str(root), "--no-measure", "--force",
                 "--train-images", "0", "--out", str(tmp_path / "copy.safetensors")]) == 0
    assert "calibration" not in read_checkpoint_meta(path)  # --out leaves the original alone
    assert read_checkpoint_meta(tmp_path / "copy.safetensors")["ood"]["fitted_on"] == "val"


def test_model_card_lists_calibration_operating_points_and_ood():
    from fracture.assess.card import calibration_card_lines

    meta = {
        "threshold": 0.43,
        "calibration": {"temperature": 1.27, "bias": -1.29, "temperature_alone": {"temperature": 1.005, "val_ece": 0.097}},
        "operating_points": [
            {"name": "default", "label": "default (youden)", "threshold": 0.43, "sensitivity": 0.85,
             "specificity": 0.9, "ppv": 0.6, "npv": 0.96},
            {"name": "sensitivity_90", "label": "90% sensitivity (screening)", "threshold": 0.2, "sensitivity": 0.9,
             "specificity": 0.8, "ppv": 0.5, "npv": 0.97},
        ],
        "ood": {"threshold": 1.5, "components": 64, "n_fit": 1000, "fitted_on": "train", "val_flag_rate": 0.048,
                "measured": {"test_flag_rate": 0.058, "probes": {"natural photos": {"n": 14, "flagged": 14}}}},
    }
    test = {"image": {"calibration": {"ece": 0.044, "ece_uncalibrated": 0.096, "brier": 0.0706,
                                      "brier_uncalibrated": 0.0875},
                      "operating_points": [{"name": "sensitivity_90", "sensitivity": 0.88, "specificity": 0.79,
                                            "ppv": 0.48, "npv": 0.97}]}}
    text = "\n".join(calibration_card_lines(meta, test))
    assert "0.096 before, 0.044 after" in text and "b = -1.290" in text and "T = 1.005" in text
    assert "| 90% sensitivity (screening) | " in text and "| 0.880 | 0.790 | 0.480 | 0.970 |" in text
    assert "flags 4.8% of the validation split" in text and "5.8% of the test split" in text
    assert "| natural photos | 14/14 (100.0%) |" in text
    assert "Not calibrated" in "\n".join(calibration_card_lines({"threshold": 0.5}, {}))


@pytest.mark.integration
def test_shipped_model_is_calibrated_and_its_test_ece_drops(fracatlas_root, tmp_path):
    """The default model carries calibration; on the FracAtlas test split ECE is lower after it."""
    from fracture.checkpoints.format import read_checkpoint_meta
    from fracture.assess.compare import predict_split
    from fracture.checkpoints.decision import calibrate_predictions

    meta = read_checkpoint_meta(SHIPPED)
    assert meta["calibration"]["temperature"] > 0
    names = [p["name"] for p in meta["operating_points"]]
    assert names[0] == "default" and "sensitivity_90" in names
    stored = meta["metrics"]["test"]["image"]["calibration"]
    assert stored["ece"] < stored["ece_uncalibrated"]
    preds, _, _ = predict_split(SHIPPED, fracatlas_root, "test", cache_dir=tmp_path)
    shown, block = calibrate_predictions(preds, meta)
    assert block["ece"] < block["ece_uncalibrated"]
    assert block["ece"] == pytest.approx(stored["ece"], abs=0.01)
    # labels at the mapped threshold are the uncalibrated ones at the stored threshold
    assert ((shown["prob"] >= calibrated_threshold(meta)) == (preds["prob"] >= meta["threshold"])).all()


def test_fit_calibration_not_strict_leaves_a_tiny_run_uncalibrated(tmp_path, caplog):
    """The trainer's call must never fail a run whose val split is too small to calibrate."""
    import torch

    from fracture.checkpoints.format import read_checkpoint_meta, save_checkpoint
    from fracture.assess.calibration import SplitSource, fit_calibration
    from fracture.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", in_chans=1)
    meta = {"image_size": 32, "preprocess": [{"op": "resize", "size": 32, "mode": "letterbox"}],
            "normalization": {"mean": [0.5], "std": [0.5]}, "class_names": ["normal", "abnormal"],
            "body_parts": [], "multitask": False, "threshold": 0.5}
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    meta = read_checkpoint_meta(path)
    images = np.zeros((5, 32, 32), np.uint8)
    val = SplitSource(fetch=lambda p: images[p], n=5, labels=np.array([0, 1, 0, 1, 0]))
    assert fit_calibration(path, model, meta, val=val, strict=False) is None
    assert "left uncalibrated" in caplog.text
    assert "calibration" not in read_checkpoint_meta(path)
    with pytest.raises(EvaluationError):
        fit_calibration(path, model, meta, val=val)
