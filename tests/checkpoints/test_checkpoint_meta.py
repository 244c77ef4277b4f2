"""The typed checkpoint (fracture/checkpoints/meta.py): every block checked where the file is opened,
a bad one refused with its name and the fix, never silently degraded; one metadata writer."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from checkpoint_support import tiny_meta
from fracture.checkpoints.format import (
    META_KEY,
    load_checkpoint,
    read_checkpoint_meta,
    read_meta,
    read_extra_arrays,
    save_checkpoint,
    update_checkpoint_meta,
)
from fracture.checkpoints.meta import CheckpointMeta
from fracture.errors import CheckpointError
from fracture.models import create_model

FEATURES = 32  # small_cnn's pooled features
K = 4


def _meta(**overrides) -> dict:
    meta = tiny_meta(64, threshold=0.4, threshold_rule="youden")
    meta.update({
        "tta_hflip": True,
        "calibration": {"method": "temperature+bias", "temperature": 1.5, "bias": -0.5},
        "operating_points": [
            {"name": "default", "label": "default", "threshold": 0.4, "sensitivity": 0.8, "specificity": 0.7},
            {"name": "sensitivity_90", "label": "90% sensitivity", "threshold": 0.3, "sensitivity": 0.9},
        ],
        "ood": {"method": "mahalanobis-ppca", "feature_dim": FEATURES, "components": K, "threshold": 1.2,
                "val_flag_rate": 0.05},
        "explain": {"method": "gradcam", "layer": "final"},
    })
    meta.update(overrides)
    return meta


def _ood_tensors() -> dict:
    rng = np.random.default_rng(0)
    return {"ood.mean": torch.tensor(rng.normal(size=FEATURES), dtype=torch.float32),
            "ood.components": torch.tensor(np.linalg.qr(rng.normal(size=(FEATURES, K)))[0].T, dtype=torch.float32),
            "ood.variances": torch.tensor(np.linspace(2.0, 0.5, K + 1), dtype=torch.float32)}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("small_cnn", in_chans=1).eval()
    path = tmp_path_factory.mktemp("meta") / "good.safetensors"
    save_checkpoint(path, model, _meta(), half=True, extra_tensors=_ood_tensors())
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hostile(good: Path, dst: Path, *, tensors: dict | None = None, **updates) -> Path:
    """A copy of ``good`` with metadata (and tensors) changed by hand, as a damaged or hostile file would be."""
    stored = load_file(str(good))
    from safetensors import safe_open

    with safe_open(str(good), framework="numpy") as handle:
        meta = json.loads(handle.metadata()[META_KEY])
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict) and not value.get("__replace__"):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    stored.update(tensors or {})
    save_file(stored, str(dst), metadata={META_KEY: json.dumps(meta, allow_nan=True)})
    return dst


def test_the_typed_meta_carries_every_block(good):
    meta = read_meta(good)
    assert isinstance(meta, CheckpointMeta)
    assert meta.image_size == 64 and meta.resize_mode == "letterbox"
    assert meta.calibration.temperature == 1.5 and meta.calibration.bias == -0.5
    assert [p.name for p in meta.operating_points] == ["default", "sensitivity_90"]
    assert meta.ood.components == K and meta.ood.feature_dim == FEATURES
    assert meta.explain.method == "gradcam"
    # The decision scale: the calibrated threshold is the stored one through the same map as the probabilities.
    expected = 1 / (1 + np.exp(-(np.log(0.4 / 0.6) / 1.5 - 0.5)))
    assert meta.shown_threshold() == pytest.approx(expected, abs=1e-12)
    assert meta.calibrate([0.4])[0] == pytest.approx(expected, abs=1e-12)
    choices = meta.operating_point_choices()
    assert choices[0]["name"] == "default" and choices[1]["threshold_uncalibrated"] == 0.3


BAD_BLOCKS = [
    ("calibration", {"bias": 50}, "bias"),
    ("calibration", {"temperature": 1e-300}, "temperature"),
    ("calibration", {"temperature": float("nan")}, "temperature"),
    ("calibration", {"method": "isotonic"}, "unknown method"),
    ("calibration", [1.5], "must be an object"),
    ("operating_points", [{"name": "default", "threshold": -3}], "threshold"),
    ("operating_points", [{"name": "default", "threshold": float("nan")}], "threshold"),
    ("operating_points", {"default": 0.4}, "must be a list"),
    ("operating_points", [1, 2, 3], "must be an object"),
    ("ood", {"threshold": -1}, "threshold"),
    ("ood", {"threshold": True}, "threshold"),
    ("ood", {"method": "energy"}, "unknown method"),
    ("ood", {"components": K + 1}, "ood.components"),
    ("ood", {"feature_dim": FEATURES * 2}, "shape"),
    ("explain", {"method": "saliency"}, "unknown heatmap method"),
    ("explain", {"layer": 3}, "layer"),
    ("tta_hflip", "yes", "true or false"),
]


@pytest.mark.parametrize("block,value,words", BAD_BLOCKS, ids=[f"{b}-{w}" for b, _, w in BAD_BLOCKS])
def test_every_bad_block_is_refused_naming_block_and_fix(good, tmp_path, block, value, words):
    path = _hostile(good, tmp_path / "bad.safetensors", **{block: value})
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_meta(path)
    message = str(info.value)
    assert str(path) in message and block in message and words in message
    assert "calibrate" in message or "explain-select" in message or "re-save" in message
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("tensor,value", [("ood.mean", np.nan), ("ood.variances", np.inf), ("ood.variances", 0.0)])
def test_nan_inf_or_zero_ood_statistics_are_refused(good, tmp_path, tensor, value):
    arrays = {k: v.numpy() for k, v in _ood_tensors().items()}
    arrays[tensor] = arrays[tensor].copy()
    arrays[tensor][0] = value
    path = _hostile(good, tmp_path / "bad.safetensors", tensors={tensor: arrays[tensor]})
    with pytest.raises(CheckpointError, match=r"ood"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"ood"):
        read_extra_arrays(path)


def test_a_bad_block_is_listed_with_its_error_and_never_offered(good, tmp_path):
    from fracture.serve.predictor import list_checkpoints

    weights = tmp_path / "weights"
    weights.mkdir()
    _hostile(good, weights / "biased.safetensors", calibration={"bias": 50})
    (weights / "ok.safetensors").write_bytes(good.read_bytes())
    entries = {e.name: e for e in list_checkpoints(weights, tmp_path / "runs")}
    assert entries["ok"].ok
    assert not entries["biased"].ok and "calibration" in entries["biased"].error


def test_update_meta_keeps_half_weights_bit_for_bit_and_validates_first(good, tmp_path):
    path = tmp_path / "copy.safetensors"
    path.write_bytes(good.read_bytes())
    weights_before = {k: v for k, v in load_file(str(path)).items() if not k.startswith("ood.")}
    meta = read_checkpoint_meta(path)
    meta["explain"] = {"method": "layercam", "layer": "fused"}
    update_checkpoint_meta(path, meta)
    after = load_file(str(path))
    for key, value in weights_before.items():
        assert after[key].dtype == value.dtype and np.array_equal(after[key], value), key
    assert any(v.dtype == np.float16 for v in after.values())
    assert read_meta(path).explain.method == "layercam"
    assert read_checkpoint_meta(path)["stored_half"] is True
    # A bad block is refused before anything is written: the file is unchanged.
    before = _digest(path)
    meta["calibration"] = {"method": "temperature+bias", "temperature": 1.0, "bias": 50.0}
    with pytest.raises(CheckpointError, match="bias"):
        update_checkpoint_meta(path, meta)
    assert _digest(path) == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_update_meta_cannot_change_the_network(good, tmp_path):
    path = tmp_path / "copy.safetensors"
    path.write_bytes(good.read_bytes())
    meta = read_checkpoint_meta(path)
    meta["in_chans"] = 3
    with pytest.raises(CheckpointError, match="in_chans"):
        update_checkpoint_meta(path, meta)


def test_save_refuses_an_ood_block_that_does_not_match_its_tensors(tmp_path):
    model = create_model("small_cnn", in_chans=1).eval()
    with pytest.raises(CheckpointError, match="ood"):
        save_checkpoint(tmp_path / "x.safetensors", model, _meta(), extra_tensors={})
    assert not (tmp_path / "x.safetensors").exists()
