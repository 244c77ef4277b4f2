"""Checkpoints: one safetensors file, JSON metadata in the header, refusals that say why."""
from __future__ import annotations

import json
import pickle

import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fracture.checkpoints.format import (
    FORMAT_VERSION,
    META_KEY,
    REQUIRED_META_KEYS,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from checkpoint_support import tiny_meta
from fracture.errors import CheckpointError
from fracture.models import create_model

BODY_PARTS = ["elbow", "hand", "wrist"]


def _meta(**overrides) -> dict:
    return tiny_meta(64, **{
        "preprocess": [{"op": "clahe", "clip_limit": 2.0, "tile_grid": 8},
                       {"op": "resize", "size": 64, "mode": "letterbox"}],
        "body_parts": BODY_PARTS, "multitask": True, "threshold": 0.42, "threshold_rule": "youden",
        "metrics": {"val": {"split": "val", "level": "image", "roc_auc": float("nan")}},
        **overrides,
    })


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = create_model("small_cnn", in_chans=1, num_body_parts=len(BODY_PARTS))
    # Move BatchNorm statistics off their defaults so the round trip checks them too.
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 1, 64, 64))
    return net.eval()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "best.safetensors"
    save_checkpoint(path, model, _meta())
    return path


def test_round_trip_restores_weights_outputs_and_meta(model, saved):
    loaded, meta = load_checkpoint(saved)
    assert not loaded.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, body_part=[0, -1])[0], model(x, body_part=[0, -1])[0])
    assert meta["architecture"] == "small_cnn" and meta["in_chans"] == 1 and meta["num_body_parts"] == 3
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["threshold"] == 0.42 and meta["body_parts"] == BODY_PARTS
    assert meta["preprocess"][1] == {"op": "resize", "size": 64, "mode": "letterbox"}
    assert {"torch", "timm", "fracture"} <= set(meta["versions"])
    assert meta["created_at"].endswith("+00:00")
    assert meta["train_config"] == {} and meta["dataset_fingerprint"] is None  # defaults filled in


def test_read_meta_reads_only_the_header(saved):
    meta = read_checkpoint_meta(saved)
    assert json.dumps(meta, sort_keys=True) == json.dumps(load_checkpoint(saved)[1], sort_keys=True)  # NaN-aware
    with safe_open(str(saved), framework="numpy") as handle:
        stored = json.loads(handle.metadata()[META_KEY])
    # The input size is stored once, as the pipeline's last resize; readers get it back as image_size.
    assert "image_size" not in stored and meta["image_size"] == meta["preprocess"][-1]["size"] == 64
    assert json.dumps({**stored, "image_size": 64}, sort_keys=True) == json.dumps(meta, sort_keys=True)


def test_an_old_header_storing_the_input_size_twice_must_agree(model, tmp_path):
    from fracture.checkpoints.format import validate_meta

    meta = {**read_checkpoint_meta(save_checkpoint(tmp_path / "m.safetensors", model, _meta()))}
    validate_meta(meta)  # 64 and a last resize to 64: the older layout, still read
    with pytest.raises(CheckpointError, match="image_size.*last resize \\(64\\)"):
        validate_meta({**meta, "image_size": 32})


def test_half_precision_file_is_smaller_and_loads_as_float32(model, saved, tmp_path):
    half_path = save_checkpoint(tmp_path / "half.safetensors", model, _meta(), half=True)
    assert half_path.stat().st_size < 0.6 * saved.stat().st_size
    with safe_open(str(half_path), framework="pt") as handle:
        assert handle.get_tensor("fracture_head.weight").dtype == torch.float16
        assert handle.get_tensor("backbone.stem.1.num_batches_tracked").dtype == torch.int64
    loaded, meta = load_checkpoint(half_path)
    assert meta["stored_half"] is True
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0], atol=2e-2, rtol=2e-2)


def test_save_is_atomic_and_leaves_no_temp_files(model, tmp_path, monkeypatch):
    path = tmp_path / "run" / "best.safetensors"
    save_checkpoint(path, model, _meta(threshold=0.1))
    original = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, _meta(threshold=0.9))
    assert path.read_bytes() == original
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.safetensors"]


class _Trap:
    """Pickled, it runs ``open(path, "w")`` when unpickled: proof that code ran."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_loading_never_unpickles(model, saved, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded, meta = load_checkpoint(saved)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert meta["architecture"] == "small_cnn"
    monkeypatch.undo()

    ran = tmp_path / "code-ran"
    for name, write in (("torch.safetensors", lambda p: torch.save({"w": _Trap(ran)}, p)),
                        ("pickle.safetensors", lambda p: p.write_bytes(pickle.dumps(_Trap(ran))))):
        write(tmp_path / name)
        with pytest.raises(CheckpointError, match="not a safetensors file"):
            load_checkpoint(tmp_path / name)
    assert not ran.exists()


def test_save_requires_meta_keys_and_consistency(model, tmp_path):
    for key in REQUIRED_META_KEYS:
        meta = _meta()
        del meta[key]
        with pytest.raises(CheckpointError, match=key):
            save_checkpoint(tmp_path / "x.safetensors", model, meta)
    with pytest.raises(CheckpointError, match="architecture"):
        save_checkpoint(tmp_path / "x.safetensors", model, _meta(architecture="resnet50"))
    with pytest.raises(CheckpointError, match="multitask"):
        save_checkpoint(tmp_path / "x.safetensors", model, _meta(multitask=False))
    with pytest.raises(CheckpointError, match="body parts"):
        save_checkpoint(tmp_path / "x.safetensors", model, _meta(body_parts=["hand"]))
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "x.safetensors", model, _meta(train_config={"fn": object()}))
    assert not list(tmp_path.iterdir())


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_checkpoint_meta(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a Fracture Lab checkpoint"):
        load_checkpoint(foreign)


def _rewrite(src, dst, *, meta_update=None, tensors_update=None, drop=(), extra=None):
    """Copy a checkpoint, editing its metadata and tensors, as a damaged file would be."""
    with safe_open(str(src), framework="pt") as handle:
        meta = json.loads(handle.metadata()[META_KEY])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    meta.update(meta_update or {})
    tensors.update(tensors_update or {})
    tensors.update(extra or {})
    for key in drop:
        tensors.pop(key)
        meta.pop(key, None)
    save_file(tensors, str(dst), metadata={META_KEY: json.dumps(meta)})
    return dst


def test_unknown_architecture_is_named(saved, tmp_path):
    path = _rewrite(saved, tmp_path / "arch.safetensors", meta_update={"architecture": "vit_huge"})
    with pytest.raises(CheckpointError, match="unknown architecture 'vit_huge'.*efficientnet_b0.*small_cnn"):
        load_checkpoint(path)


def test_shape_mismatch_names_key_and_both_shapes(saved, tmp_path):
    path = _rewrite(saved, tmp_path / "shape.safetensors",
                    tensors_update={"fracture_head.weight": torch.zeros(1, 7)})
    with pytest.raises(CheckpointError, match=r"fracture_head.weight has shape \(1, 7\).*expects \(1, 160\)"):
        load_checkpoint(path)


def test_missing_and_unexpected_keys_are_listed(saved, tmp_path):
    missing = _rewrite(saved, tmp_path / "missing.safetensors", drop=("body_head.bias",))
    with pytest.raises(CheckpointError, match=r"missing 1 keys \['body_head.bias'\]"):
        load_checkpoint(missing)
    unexpected = _rewrite(saved, tmp_path / "unexpected.safetensors", extra={"extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected 1 keys \['extra.weight'\]"):
        load_checkpoint(unexpected)


def test_missing_meta_keys_are_named_on_load(saved, tmp_path):
    with safe_open(str(saved), framework="pt") as handle:
        meta = json.loads(handle.metadata()[META_KEY])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    del meta["threshold"], meta["preprocess"]
    path = tmp_path / "meta.safetensors"
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"lacks required keys \['preprocess', 'threshold'\]"):
        read_checkpoint_meta(path)
    newer = _rewrite(saved, tmp_path / "newer.safetensors", meta_update={"format_version": FORMAT_VERSION + 1})
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(newer)
