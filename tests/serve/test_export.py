"""ONNX export (metadata, dynamic batch, parity with torch) and the inference backend switch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fracture.serve import onnx_backend, onnx_cache
from fracture.checkpoints.format import save_checkpoint
from fracture.cli import main
from fracture.data import load_image
from fracture.errors import ConfigError
from fracture.serve.export import (
    PARITY_TOLERANCE,
    ExportError,
    check_parity,
    export_checked,
    export_onnx,
    read_onnx_metadata,
)
from fracture.models import create_model

BODY_PARTS = ["elbow", "hand", "wrist"]


def _checkpoint(path: Path, *, multitask: bool = False, tta: bool = True, temperature: float | None = None) -> Path:
    torch.manual_seed(3)
    model = create_model("small_cnn", pretrained=False, num_body_parts=len(BODY_PARTS) if multitask else 0)
    with torch.no_grad():  # spread the logits so the probabilities are not all ~0.5
        model.fracture_head.weight.mul_(20.0)
    meta = {
        "image_size": 64,
        "preprocess": [{"op": "clahe", "clip_limit": 2.0, "tile_grid": 8}, {"op": "resize", "size": 64, "mode": "letterbox"}],
        "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "class_names": ["normal", "abnormal"],
        "body_parts": BODY_PARTS if multitask else [],
        "multitask": multitask,
        "threshold": 0.37,
        "tta_hflip": tta,
    }
    if temperature is not None:
        meta["calibration"] = {"temperature": temperature}
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def demo_images(demo_root) -> list[np.ndarray]:
    paths = sorted((demo_root / "train").rglob("*.png"))[:6]
    assert len(paths) == 6
    return [load_image(p) for p in paths]


def test_export_carries_the_metadata_and_is_written_atomically(tmp_path):
    ckpt = _checkpoint(tmp_path / "m.safetensors", temperature=1.5)
    out = export_onnx(ckpt, tmp_path / "out" / "m.onnx")
    assert out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["m.onnx"]  # no temporary file left behind
    props = read_onnx_metadata(out)
    # Thresholds are named with their scale; "threshold" is the one predict uses (calibrated).
    decision = json.loads(props["decision"])
    assert decision["threshold_uncalibrated"] == pytest.approx(0.37)
    calibrated = 1 / (1 + np.exp(-np.log(0.37 / 0.63) / 1.5))
    assert decision["threshold_calibrated"] == pytest.approx(calibrated)
    assert json.loads(props["threshold"]) == pytest.approx(calibrated)
    assert json.loads(props["preprocess"])[0]["op"] == "clahe"
    assert json.loads(props["class_names"]) == ["normal", "abnormal"]
    assert json.loads(props["normalization"])["std"] == [0.229, 0.224, 0.225]
    assert json.loads(props["temperature"]) == 1.5
    assert json.loads(props["tta_hflip"]) is True
    assert json.loads(props["fracture"])["architecture"] == "small_cnn"
    assert len(props["source_sha256"]) == 64


def test_dynamic_batch(tmp_path):
    ckpt = _checkpoint(tmp_path / "m.safetensors", tta=False)
    model = onnx_backend.OrtModel.from_file(export_onnx(ckpt, tmp_path / "m.onnx"))
    for batch in (1, 5):
        out = model.run(np.zeros((batch, 3, 64, 64), dtype=np.float32), None)
        assert out["probability"].shape == (batch,)
        assert out["logit"].shape == (batch,)


@pytest.mark.parametrize("multitask", [False, True])
def test_onnxruntime_matches_torch_on_demo_images(tmp_path, demo_images, multitask):
    ckpt = _checkpoint(tmp_path / "m.safetensors", multitask=multitask)
    report = check_parity(ckpt, export_onnx(ckpt, tmp_path / "m.onnx"), demo_images, batch_size=4)
    assert report.n_images == len(demo_images)
    assert report.max_abs_diff <= PARITY_TOLERANCE
    assert report.ok


def test_backend_predict_batches_matches_torch_with_and_without_tta(tmp_path, demo_images):
    from fracture.checkpoints.format import load_checkpoint
    from fracture.serve.inference import InputSpec, predict_batches
    from fracture.preprocess.pipeline import Pipeline

    ckpt = _checkpoint(tmp_path / "m.safetensors", multitask=True, tta=False)
    model, meta = load_checkpoint(ckpt)
    session = onnx_backend.OrtModel.from_file(export_onnx(ckpt, tmp_path / "m.onnx"))
    pipeline = Pipeline.from_spec(meta["preprocess"])
    images = np.stack([pipeline(img) for img in demo_images])
    spec = InputSpec.from_meta(meta)
    body = np.array([0, -1, 2, 1, -1, 0])
    for tta in (False, True):  # the graph has no TTA: the backend mirrors the batch itself
        want, want_body = predict_batches(model, lambda p: images[p], len(images), spec, device=torch.device("cpu"),
                                          batch_size=4, body_parts=body, tta_hflip=tta)
        got, got_body = onnx_backend.predict_batches(session, lambda p: images[p], len(images), spec,
                                                    batch_size=4, body_parts=body, tta_hflip=tta)
        assert np.abs(want - got).max() <= PARITY_TOLERANCE
        assert np.abs(want_body - got_body).max() <= PARITY_TOLERANCE
    assert np.ptp(want) > 0.05  # a real spread of probabilities, not one constant


def test_failed_parity_leaves_no_file(tmp_path, demo_images):
    ckpt = _checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="not written"):
        export_checked(ckpt, out, demo_images[:2], tolerance=-1.0)
    assert list(tmp_path.iterdir()) == [ckpt]


def test_cli_export(tmp_path, capsys, isolated_home):
    ckpt = _checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--check-images", "4"]) == 0
    assert "max |probability difference|" in capsys.readouterr().out
    assert out.is_file()


# ---------------------------------------------------------------- the backend switch


def test_backend_choice_from_flag_and_environment(monkeypatch):
    monkeypatch.delenv(onnx_backend.ENV_VAR, raising=False)
    assert onnx_backend.requested_backend() == "auto"
    assert onnx_backend.select_backend(device="cpu") == "onnx"
    assert onnx_backend.select_backend(device="cuda") == "torch"
    monkeypatch.setenv(onnx_backend.ENV_VAR, "torch")
    assert onnx_backend.select_backend(device="cpu") == "torch"
    assert onnx_backend.select_backend("onnx", device="cpu") == "onnx"  # the flag wins over the environment
    monkeypatch.setenv(onnx_backend.ENV_VAR, "tensorrt")
    with pytest.raises(ConfigError, match=onnx_backend.ENV_VAR):
        onnx_backend.select_backend(device="cpu")
    with pytest.raises(ConfigError, match="--backend"):
        onnx_backend.select_backend("fast")


def test_the_scorer_on_both_backends_and_the_export_cache(tmp_path, monkeypatch, demo_images):
    from fracture.serve.scorer import Scorer

    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = _checkpoint(tmp_path / "m.safetensors")
    from fracture.preprocess.pipeline import Pipeline

    resize = Pipeline.from_spec([{"op": "resize", "size": 64, "mode": "letterbox"}])
    images = np.stack([resize(img) for img in demo_images])
    seen = []
    probs = {}
    for backend in ("torch", "onnx"):
        scorer = Scorer.from_checkpoint(ckpt, backend=backend, device="cpu")
        scores = scorer.score_fetch(lambda q: images[q], len(images), chunk=4, progress=seen.append)
        assert scorer.backend == backend and scores.body_probs is None
        probs[backend] = scores.probs
    assert np.abs(probs["torch"] - probs["onnx"]).max() <= PARITY_TOLERANCE
    assert [(e.done, e.total) for e in seen] == [(4, 6), (6, 6)] * 2
    cached = onnx_cache.cached_onnx_path(ckpt)
    stamp = cached.stat().st_mtime_ns
    Scorer.from_checkpoint(ckpt, backend="onnx")  # the second load reuses the export
    assert cached.stat().st_mtime_ns == stamp


def test_cancel_stops_between_chunks(tmp_path, monkeypatch):
    import threading

    from fracture.serve.scorer import Scorer

    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = _checkpoint(tmp_path / "m.safetensors")
    images = np.zeros((10, 64, 64), dtype=np.uint8)
    cancel = threading.Event()
    done = []

    def progress(event):
        done.append(event.done)
        cancel.set()

    scorer = Scorer.from_checkpoint(ckpt, backend="torch", device="cpu")
    with pytest.raises(onnx_backend.InferenceCancelled):
        scorer.score_fetch(lambda q: images[q], 10, chunk=4, progress=progress, cancel=cancel)
    assert done == [4]


def test_progress_line_says_images_done_and_time_left():
    event = onnx_backend.InferenceProgress("predicting", 100, 500, 20.0)
    assert event.eta_s == pytest.approx(80.0)
    assert event.line() == "predicting: 100/500 images · 1:20 left"


@pytest.mark.slow
def test_bench_figures_ort_vs_torch_and_compare_eval(tmp_path, demo_root, monkeypatch):
    from fracture.bench.backends import bench_compare_eval, bench_ort_vs_torch

    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = _checkpoint(tmp_path / "m.safetensors", tta=True)
    paths = [str(p) for p in sorted((demo_root / "train").rglob("*.png"))[:8]]
    ort = bench_ort_vs_torch(ckpt, paths, tmp_path / "cache", repeats=1, batch_size=4)
    assert ort["images"] == 8 and ort["ratio"] > 0
    assert ort["max_abs_prob_diff"] <= PARITY_TOLERANCE
    compare = bench_compare_eval(ckpt, demo_root, "test", tmp_path / "cache", repeats=1, batch_size=4, n_boot=20)
    assert compare["images"] > 0 and compare["ratio"] > 0 and compare["backend"] == "onnx"
    assert compare["evaluate"]["items"] == compare["forward"]["items"] == compare["images"]
    assert isinstance(compare["goal_met"], bool)
