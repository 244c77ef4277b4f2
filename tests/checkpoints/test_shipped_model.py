"""The shipped default model: loads, predicts, carries honest metadata, matches its card."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fracture.checkpoints.format import load_checkpoint, read_checkpoint_meta
from fracture.assess.card import render_model_card
from fracture.serve.predictor import Predictor, default_checkpoint

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "weights"


@pytest.fixture(scope="module")
def shipped() -> Path:
    path = default_checkpoint(WEIGHTS)
    assert path is not None, "weights/ holds no default checkpoint"
    return path


def test_weights_folder_is_small_enough():
    total = sum(p.stat().st_size for p in WEIGHTS.rglob("*") if p.is_file())
    assert total < 25 * 1024 * 1024


def test_shipped_checkpoint_loads_and_predicts(shipped):
    from fracture.data import load_image
    from fracture.data.gallery import load_gallery

    predictor = Predictor.from_checkpoint(shipped)
    image = load_image(load_gallery()[0].path)  # a real radiograph from the shipped gallery
    result = predictor.predict([image], with_cam=True)
    assert result.images[0].is_radiograph
    assert 0.0 <= result.study_prob <= 1.0
    assert result.images[0].heatmap.shape == image.shape
    assert result.study_label in predictor.class_names
    # Noise is not a radiograph: the shipped model's gate refuses it and gives no label.
    noise = (np.random.default_rng(0).random((300, 240)) * 255).astype(np.uint8)
    refused = predictor.predict([noise], with_cam=False).images[0]
    assert not refused.is_radiograph and refused.label is None


def test_shipped_metadata_has_the_promised_fields(shipped):
    meta = read_checkpoint_meta(shipped)
    for key in ("architecture", "image_size", "preprocess", "normalization", "class_names",
                "threshold", "threshold_rule", "train_config", "dataset_fingerprint", "metrics",
                "split_sizes", "created_at", "versions"):
        assert key in meta, key
    assert meta["train_config"]["recipe"] == "fracatlas_lite0_v5.json"
    assert meta["explain"]["chosen_on"] == "val"  # the default heatmap was chosen on validation data
    test = meta["metrics"]["test"]
    assert test["split"] == "test" and "python -m fracture evaluate" in test["command"]
    overall = test["image"]["overall"]
    assert overall["n"] == meta["split_sizes"]["test"]["images"]
    low, high = overall["roc_auc_ci"]
    assert low <= overall["roc_auc"] <= high
    model, _ = load_checkpoint(shipped)
    assert all(t.dtype.is_floating_point and t.dtype == model.state_dict()[k].dtype
               for k, t in model.state_dict().items() if t.dtype.is_floating_point)


def test_model_card_matches_the_metadata(shipped):
    card = (WEIGHTS / "README.md").read_text()
    assert card == render_model_card(read_checkpoint_meta(shipped), checkpoint_name=shipped.name)


def test_every_shipped_checkpoint_has_a_card_that_matches_it():
    from fracture.checkpoints.promote import card_path

    for checkpoint in sorted(WEIGHTS.glob("*.safetensors")):
        card = card_path(WEIGHTS, checkpoint.stem)
        assert card.is_file(), f"{checkpoint.name} has no model card"
        assert card.read_text() == render_model_card(read_checkpoint_meta(checkpoint), checkpoint_name=checkpoint.name)


@pytest.mark.integration
def test_evaluate_reproduces_the_card(shipped, fracatlas_root, tmp_path):
    from fracture.assess.compare import evaluate_checkpoint

    meta = read_checkpoint_meta(shipped)
    result = evaluate_checkpoint(shipped, fracatlas_root, "test", n_boot=0, cache_dir=tmp_path)
    stored = meta["metrics"]["test"]["image"]["overall"]
    got = result.report["image"]["overall"]
    assert got["n"] == stored["n"]
    assert got["roc_auc"] == pytest.approx(stored["roc_auc"], abs=1e-4)
    assert got["confusion"] == stored["confusion"]


@pytest.mark.integration
def test_the_heatmap_points_at_the_fracture_as_the_card_says(shipped, fracatlas_root, tmp_path):
    """Issue 10's bar: the shipped model's heatmap maximum lands on an annotated fracture box for at least
    60% of the test split's fractured images (CheXlocalize's Grad-CAM: ~60%), recomputed here."""
    from fracture.assess.localisation import split_localisation

    meta = read_checkpoint_meta(shipped)
    stored = meta["metrics"]["test"]["image"]["localisation"]
    got = split_localisation(shipped, fracatlas_root, "test", cache_dir=tmp_path)
    assert got["n"] == stored["n"] == meta["split_sizes"]["test"]["positives"]
    assert got["pointing_hit"] == pytest.approx(stored["pointing_hit"], abs=1e-6)
    assert got["pointing_hit"] >= 0.60
    assert got["mass_in_box"] > 3 * got["box_area"]  # several times what a uniform map scores
