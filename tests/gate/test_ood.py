"""Out-of-distribution score: fitting, thresholds, storage in a checkpoint, Predictor output,
and (with ../shared FracAtlas) the shipped model on real radiographs and on things that are not."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fracture.gate.ood import METHOD, TARGET_VAL_FLAG_RATE, OodDetector, OodError, fit_detector

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "weights" / (REPO / "weights" / "default.txt").read_text().strip()  # the default model


def clustered(n: int, dim: int = 64, rank: int = 6, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    """Non-negative 'pooled features' around one direction with a few strong axes of variation."""
    rng = np.random.default_rng(seed)
    base = np.abs(np.random.default_rng(100).normal(1.0, 0.3, dim))
    axes = np.random.default_rng(101).normal(0.0, 1.0, (rank, dim))
    x = base + 0.3 * rng.normal(size=(n, rank)) @ axes / math.sqrt(dim) + 0.05 * rng.normal(size=(n, dim))
    if shift:
        x = x + shift * np.abs(np.random.default_rng(102).normal(0.0, 1.0, dim))
    return np.abs(x)


def test_threshold_flags_at_most_five_percent_of_validation():
    detector = fit_detector(clustered(400, seed=1), clustered(200, seed=2), components=8)
    val_scores = detector.score(clustered(200, seed=2))
    assert detector.val_flag_rate == pytest.approx(detector.flags(val_scores).mean())
    assert detector.val_flag_rate <= TARGET_VAL_FLAG_RATE
    assert detector.val_flag_rate >= TARGET_VAL_FLAG_RATE - 1 / 200  # not far below either
    fresh = detector.flags(detector.score(clustered(1000, seed=3))).mean()
    assert fresh < 0.10


def test_far_features_are_flagged():
    detector = fit_detector(clustered(400, seed=1), clustered(200, seed=2), components=8)
    shifted = detector.score(clustered(100, seed=4, shift=1.0))
    assert detector.flags(shifted).mean() > 0.95
    rng = np.random.default_rng(5)
    assert detector.flags(detector.score(np.abs(rng.normal(size=(50, 64))))).all()


def test_score_ignores_feature_scale_and_checks_width():
    detector = fit_detector(clustered(200, seed=1), clustered(100, seed=2), components=4)
    x = clustered(10, seed=6)
    assert np.allclose(detector.score(x), detector.score(3.0 * x))
    with pytest.raises(OodError, match="dimensions"):
        detector.score(np.ones((2, 10)))
    with pytest.raises(OodError, match="NaN"):
        detector.score(np.full((1, 64), np.nan))


def test_components_are_capped_by_the_number_of_images():
    detector = fit_detector(clustered(12, seed=1), clustered(10, seed=2), components=32)
    assert detector.components.shape == (3, 64)
    assert detector.variances.shape == (4,) and (detector.variances > 0).all()
    with pytest.raises(OodError, match="at least 3"):
        fit_detector(clustered(2), clustered(5))


def test_meta_block_is_small_and_json():
    detector = fit_detector(clustered(200, seed=1), clustered(100, seed=2), components=4)
    block = detector.meta_block()
    assert block["method"] == METHOD and block["components"] == 4 and block["feature_dim"] == 64
    assert len(json.dumps(block)) < 1000
    result = detector.result(detector.threshold + 1.0)
    assert result == {"score": pytest.approx(detector.threshold + 1.0), "threshold": detector.threshold, "flagged": True}


def _tiny_checkpoint(path: Path, extra: dict | None = None, meta_extra: dict | None = None):
    import torch

    from fracture.checkpoints.format import save_checkpoint
    from fracture.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", in_chans=1)
    meta = {
        "image_size": 32, "preprocess": [{"op": "resize", "size": 32, "mode": "letterbox"}],
        "normalization": {"mean": [0.5], "std": [0.5]}, "class_names": ["normal", "abnormal"],
        "body_parts": [], "multitask": False, "threshold": 0.5, **(meta_extra or {}),
    }
    save_checkpoint(path, model, meta, extra_tensors=extra)
    return model, meta


def test_ood_tensors_round_trip_through_the_checkpoint_and_a_resave(tmp_path):
    from fracture.checkpoints.format import load_checkpoint, save_checkpoint

    detector = fit_detector(clustered(100, dim=32, seed=1), clustered(50, dim=32, seed=2), components=4)
    path = tmp_path / "m.safetensors"
    _tiny_checkpoint(path, detector.tensors(), {"ood": detector.meta_block()})
    model, meta = load_checkpoint(path)
    assert sorted(model.checkpoint_extras) == ["ood.components", "ood.mean", "ood.variances"]
    again = OodDetector.from_checkpoint(meta, model.checkpoint_extras)
    x = clustered(5, dim=32, seed=9)
    assert np.allclose(again.score(x), detector.score(x), rtol=1e-4)
    assert again.threshold == pytest.approx(detector.threshold)
    # A later re-save (e.g. evaluate --write-meta) keeps the tensors.
    meta["metrics"] = {"test": {}}
    save_checkpoint(path, model, meta)
    model2, meta2 = load_checkpoint(path)
    assert OodDetector.from_checkpoint(meta2, model2.checkpoint_extras) is not None


def test_extra_tensor_names_must_carry_the_prefix(tmp_path):
    import torch

    from fracture.errors import CheckpointError

    with pytest.raises(CheckpointError, match="ood."):
        _tiny_checkpoint(tmp_path / "bad.safetensors", {"stats.mean": torch.zeros(3)})


def test_missing_or_damaged_ood_data_means_no_detector(caplog):
    block = {"method": METHOD, "threshold": 1.0}
    assert OodDetector.from_checkpoint({}, None) is None
    assert OodDetector.from_checkpoint({"ood": block}, {}) is None
    assert "lacks tensors" in caplog.text
    bad = {"ood.mean": np.zeros(4), "ood.components": np.zeros((2, 5)), "ood.variances": np.ones(3)}
    assert OodDetector.from_checkpoint({"ood": block}, bad) is None
    assert OodDetector.from_checkpoint({"ood": {**block, "method": "other"}}, bad) is None


def test_predictor_reports_ood_per_image_and_calibrated_probabilities(tmp_path):
    """fit_calibration on a tiny model, then Predictor: an ``ood`` block per image, calibrated P."""
    from fracture.checkpoints.format import load_checkpoint, read_checkpoint_meta
    from fracture.evaluate.calibration import apply_temperature
    from fracture.assess.calibration import SplitSource, fit_calibration
    from fracture.serve.predictor import Predictor

    path = tmp_path / "m.safetensors"
    model, meta = _tiny_checkpoint(path)
    rng = np.random.default_rng(0)
    # 'Radiographs': smooth blobs; labels from brightness so the model's score carries some signal.
    blobs = np.stack([
        np.clip(128 + 60 * np.sin(np.linspace(0, 3 + rng.random(), 32))[None, :] * np.ones((32, 1))
                + rng.normal(0, 5, (32, 32)), 0, 255).astype(np.uint8) for _ in range(80)
    ])
    labels = (blobs.reshape(80, -1).mean(axis=1) > np.median(blobs.reshape(80, -1).mean(axis=1))).astype(int)
    model, meta = load_checkpoint(path)
    summary = fit_calibration(
        path, model, meta,
        val=SplitSource(fetch=lambda p: blobs[40:][p], n=40, labels=labels[40:]),
        train=SplitSource(fetch=lambda p: blobs[:40][p], n=40),
    )
    stored = read_checkpoint_meta(path)
    assert stored["calibration"]["temperature"] == pytest.approx(summary["temperature"])
    assert stored["ood"]["fitted_on"] == "train" and stored["ood"]["val_flag_rate"] <= 0.05
    assert [p["name"] for p in stored["operating_points"]][0] == "default"
    predictor = Predictor.from_checkpoint(path)
    assert predictor.ood is not None
    noise = (rng.random((32, 32)) * 255).astype(np.uint8)
    result = predictor.predict([blobs[45], noise], with_cam=False)
    payload = result.to_dict()
    for image in payload["images"]:
        assert set(image["ood"]) == {"score", "threshold", "flagged"}
    blob = payload["images"][0]
    assert blob["gate"]["radiograph"] is True
    assert blob["probability"] == pytest.approx(float(apply_temperature(
        [blob["probability_uncalibrated"]], summary["temperature"], summary["bias"])[0]))
    assert payload["images"][1]["ood"]["flagged"] is True
    # Noise is not a radiograph at all (the gate fitted beside the OOD score): no probability, no label.
    assert payload["images"][1]["gate"]["radiograph"] is False and payload["images"][1]["label"] is None
    assert payload["study_probability"] == pytest.approx(blob["probability"])
    assert payload["calibration"]["temperature"] == pytest.approx(summary["temperature"])
    assert payload["calibration"]["bias"] == pytest.approx(summary["bias"])
    json.dumps(payload)


@pytest.fixture(scope="module")
def shipped():
    from fracture.checkpoints.format import load_checkpoint

    model, meta = load_checkpoint(SHIPPED)
    detector = OodDetector.from_checkpoint(meta, model.checkpoint_extras)
    assert detector is not None, "the shipped model must carry OOD statistics (python -m fracture calibrate)"
    return model, meta, detector


def _features(model, meta, images: list[np.ndarray]) -> np.ndarray:
    """Pooled features through the checkpoint's scorer (what every prediction's OOD score reads)."""
    from fracture.serve.scorer import Scorer

    scorer = Scorer.from_model(SHIPPED, model, meta)
    return scorer.features(np.stack([scorer.prepare(image) for image in images]))


@pytest.mark.slow
def test_shipped_model_flags_natural_photos(shipped):
    """At least 90% of scikit-image's sample photos are flagged (no dataset needed)."""
    from fracture.gate.probes import natural_photos

    model, meta, detector = shipped
    photos = natural_photos(max_side=256)
    flagged = detector.flags(detector.score(_features(model, meta, list(photos.values()))))
    assert flagged.mean() >= 0.9, dict(zip(photos, flagged.tolist()))
    assert meta["ood"]["val_flag_rate"] <= 0.05


@pytest.mark.slow
def test_shipped_model_flags_documents_and_noise(shipped):
    from fracture.gate.probes import documents, noise

    model, meta, detector = shipped
    probes = {**documents(n=3), **noise(n=2)}
    flagged = detector.flags(detector.score(_features(model, meta, list(probes.values()))))
    assert flagged.mean() >= 0.9, dict(zip(probes, flagged.tolist()))


@pytest.mark.integration
def test_shipped_model_flags_at_most_ten_percent_of_the_fracatlas_test_split(shipped, fracatlas_root):
    from fracture.cache import ImageCache
    from fracture.data import open_dataset
    from fracture.serve.scorer import Scorer

    model, meta, detector = shipped
    test = open_dataset(fracatlas_root, seed=0).subset("test")
    cache = ImageCache.open_or_build(test["path"].tolist(), meta["preprocess"])
    rows = np.flatnonzero(np.asarray(cache.valid_mask, dtype=bool))
    features = Scorer.from_model(SHIPPED, model, meta).features_fetch(lambda p: cache.get_batch(rows[p]), len(rows))
    rate = float(detector.flags(detector.score(features)).mean())
    assert len(rows) > 400 and rate <= 0.10, rate


@pytest.mark.integration
def test_predict_json_has_an_ood_block_per_image(fracatlas_root, capsys):
    """`python -m fracture predict --json` on a FracAtlas radiograph and a photo."""
    import skimage.data

    from fracture.cli import main
    from fracture.data import open_dataset

    radiograph = open_dataset(fracatlas_root, seed=0).subset("test")["path"].iloc[0]
    photo = Path(skimage.data.data_dir) / "astronaut.png"
    assert main(["predict", "--checkpoint", str(SHIPPED), "--json", radiograph, str(photo)]) == 0
    payload = json.loads(capsys.readouterr().out)
    blocks = [image["ood"] for image in payload["images"]]
    assert all(set(b) == {"score", "threshold", "flagged"} for b in blocks)
    assert blocks[1]["flagged"] is True
    assert payload["calibration"]["calibrated"] is True
