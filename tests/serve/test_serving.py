"""Serving: export never destroys what it did not create, the ONNX cache is verified, and the
onnxruntime path (predict, batch, Compare) runs without importing torch."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fracture.checkpoints.format import save_checkpoint
from fracture.cli import main
from fracture.models import create_model
from fracture.serve import onnx_backend, onnx_cache

ROOT = Path(__file__).resolve().parents[2]
GALLERY = ROOT / "fracture" / "gallery" / "images"


def _checkpoint(path: Path, seed: int = 3) -> Path:
    torch.manual_seed(seed)
    model = create_model("small_cnn", in_chans=1)
    with torch.no_grad():
        model.fracture_head.weight.mul_(20.0)
    meta = {"image_size": 64, "preprocess": [{"op": "resize", "size": 64, "mode": "letterbox"}],
            "normalization": {"mean": [0.5], "std": [0.5]}, "class_names": ["normal", "abnormal"],
            "body_parts": [], "multitask": False, "threshold": 0.4, "tta_hflip": True}
    return save_checkpoint(path, model, meta)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def env(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("FRACTURE_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


# ------------------------------------------------------------------ export refuses to destroy
def _export(capsys, *args: str) -> tuple[int, str]:
    rc = main(["export", "--check-images", "0", *args])
    return rc, capsys.readouterr().err.strip()


def test_export_refuses_its_own_source_and_any_checkpoint(env, capsys):
    from fracture.checkpoints.promote import promote_checkpoint

    source = _checkpoint(env / "run.safetensors")
    shipped = _checkpoint(env / "weights" / "shipped.safetensors", seed=4)
    promoted = promote_checkpoint(source, "mine", env / "weights")
    before = {p: _digest(p) for p in (source, shipped, promoted)}
    for out, words in ((source, "is the checkpoint being exported"), (shipped, "safetensors"),
                       (promoted, "safetensors")):
        for extra in ((), ("--overwrite",)):
            rc, err = _export(capsys, "--checkpoint", str(source), "--out", str(out), *extra)
            assert rc == 2 and words in err and err.count("\n") == 0 and "Traceback" not in err
    # A checkpoint under another name is a checkpoint still; the weights folder takes .onnx names only.
    disguised = env / "model.onnx"
    disguised.write_bytes(shipped.read_bytes())
    rc, err = _export(capsys, "--checkpoint", str(source), "--out", str(disguised), "--overwrite")
    assert rc == 2 and "is a Fracture Lab checkpoint" in err
    rc, err = _export(capsys, "--checkpoint", str(source), "--out", str(env / "weights" / "default.txt"))
    assert rc == 2 and "weights folder" in err
    assert {p: _digest(p) for p in (source, shipped, promoted)} == before
    assert _digest(disguised) == _digest(shipped)


def test_export_needs_overwrite_for_an_existing_file(env, capsys):
    source = _checkpoint(env / "run.safetensors")
    out = env / "notes.onnx"
    out.write_bytes(b"someone's file")
    rc, err = _export(capsys, "--checkpoint", str(source), "--out", str(out))
    assert rc == 2 and "--overwrite" in err and out.read_bytes() == b"someone's file"
    assert _export(capsys, "--checkpoint", str(source), "--out", str(out), "--overwrite")[0] == 0
    assert out.read_bytes()[:20] != b"someone's file"[:20] and out.stat().st_size > 1000


# ------------------------------------------------------------------ the verified ONNX cache
def test_a_garbage_or_substituted_cached_export_is_rebuilt(env, caplog):
    from fracture.serve.export import export_onnx
    from fracture.serve.scorer import Scorer

    ckpt = _checkpoint(env / "m.safetensors")
    images = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    reference = Scorer.from_checkpoint(ckpt, backend="torch").score(images).probs
    first = Scorer.from_checkpoint(ckpt, backend="onnx")
    cached = onnx_cache.cached_onnx_path(ckpt)
    assert np.abs(first.score(images).probs - reference).max() <= 1e-4
    # Garbage in the cache: found, exported again, right answers.
    cached.write_bytes(b"\x00garbage" * 100)
    again = Scorer.from_checkpoint(ckpt, backend="onnx")
    assert "is not used" in caplog.text
    assert np.abs(again.score(images).probs - reference).max() <= 1e-4
    # A valid graph of another model put in its place (its digest then differs from the record): rebuilt.
    other = _checkpoint(env / "other.safetensors", seed=9)
    export_onnx(other, cached, overwrite=True)
    caplog.clear()
    third = Scorer.from_checkpoint(ckpt, backend="onnx")
    assert "changed or substituted" in caplog.text
    assert np.abs(third.score(images).probs - reference).max() <= 1e-4
    record = json.loads(Path(str(cached) + ".json").read_text())
    assert record["onnx_sha256"] == _digest(cached) and record["source_sha256"] == _digest(ckpt)
    # Another model's graph with a record forged to match it: its own metadata names the other checkpoint.
    export_onnx(other, cached, overwrite=True)
    Path(str(cached) + ".json").write_text(json.dumps({**record, "onnx_sha256": _digest(cached)}))
    caplog.clear()
    fourth = Scorer.from_checkpoint(ckpt, backend="onnx")
    assert "its metadata names another checkpoint" in caplog.text
    assert np.abs(fourth.score(images).probs - reference).max() <= 1e-4


def test_auto_falls_back_to_torch_with_a_log_line_when_the_export_fails(env, monkeypatch, caplog):
    from fracture.serve import export
    from fracture.serve.scorer import Scorer

    ckpt = _checkpoint(env / "m.safetensors")

    def broken(*args, **kwargs):
        raise export.ExportError("torch could not export small_cnn to ONNX (test)")

    monkeypatch.setattr(export, "export_onnx", broken)
    monkeypatch.setattr(onnx_cache, "FAILED_EXPORTS", {})
    scorer = Scorer.from_checkpoint(ckpt, backend="auto", device="cpu")
    assert scorer.backend == "torch" and "running it with torch" in caplog.text
    with pytest.raises(export.ExportError):
        Scorer.from_checkpoint(ckpt, backend="onnx", device="cpu")


# ------------------------------------------------------------------ no torch on the onnxruntime path
def _run_without_torch(code: str, env_vars: dict) -> subprocess.CompletedProcess:
    script = code + "\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'\nprint('NO_TORCH')\n"
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **env_vars},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_predict_batch_and_compare_on_onnxruntime_never_import_torch(env, demo_root):
    from fracture.serve.scorer import Scorer

    ckpt = _checkpoint(env / "m.safetensors")
    Scorer.from_checkpoint(ckpt, backend="onnx")  # the export exists from here on (made with torch, once)
    image = sorted(GALLERY.glob("*.jpg"))[0]
    folder = env / "folder"
    folder.mkdir()
    (folder / image.name).write_bytes(image.read_bytes())
    variables = {"FRACTURE_CACHE_DIR": str(env / "cache"), "FRACTURE_WEIGHTS_DIR": str(env / "weights"),
                 "FRACTURE_INFERENCE_BACKEND": "auto", "CUDA_VISIBLE_DEVICES": ""}
    code = f"""
from fracture.cli import main
assert main(["predict", {str(image)!r}, "--checkpoint", {str(ckpt)!r}, "--json", "--backend", "onnxruntime"]) == 0
assert main(["batch", {str(folder)!r}, "--out", {str(env / 'report')!r}, "--checkpoint", {str(ckpt)!r}]) == 0
from fracture.assess.compare import predict_split
frame, meta, problems = predict_split({str(ckpt)!r}, {str(demo_root)!r}, "test", backend="onnx")
assert len(frame) > 0
"""
    done = _run_without_torch(code, variables)
    assert "NO_TORCH" in done.stdout, done.stderr[-3000:]
    assert "onnx" in (env / "report" / "report.html").read_text()


def test_help_does_not_import_torch():
    done = _run_without_torch("from fracture.cli import build_parser\nbuild_parser().format_help()", {})
    assert "NO_TORCH" in done.stdout, done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "fracture", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "predict" in done.stdout
    assert "| torch\n" not in done.stderr and " torch\n" not in done.stderr
