"""The exported ONNX file is self-describing: a third party with OpenCV's DNN module and ONLY the file's
metadata reproduces ``predict --json`` (probability within 1e-4, label, OOD flag) on 8-bit and 16-bit
inputs; and every door (predict torch / onnxruntime, batch on both backends) gives the same answer."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fracture.checkpoints.format import save_checkpoint
from fracture.cli import main
from fracture.gate.ood import fit_detector
from fracture.models import create_model
from fracture.serve.export import export_onnx

TOL = 1e-4
GALLERY = Path(__file__).resolve().parents[2] / "fracture" / "gallery" / "images"


# ------------------------------------------------------------------ the third party: metadata only
def _decode_8bit(path: Path) -> np.ndarray:
    """Step 1 of the file's 'reproduce': 8-bit gray, 16-bit mapped linearly from the image's own min..max."""
    image = Image.open(path)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image).astype(np.float64)
        lo, hi = values.min(), values.max()
        if hi <= lo:
            return np.zeros(values.shape, np.uint8)
        return np.clip(np.rint((values - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"))


def _resize(img: np.ndarray, size: int, mode: str) -> np.ndarray:
    """The resize rule the metadata states (letterbox geometry, INTER_AREA shrinking, INTER_LINEAR growing)."""
    h, w = img.shape
    if mode == "letterbox":
        scale = size / max(h, w)
        new_w, new_h = min(size, max(1, round(w * scale))), min(size, max(1, round(h * scale)))
    else:
        new_w = new_h = size
    area = lambda shrink: cv2.INTER_AREA if shrink else cv2.INTER_LINEAR  # noqa: E731
    if (new_w, new_h) == (w, h):
        out = img.copy()
    elif (new_w <= w) == (new_h <= h):
        out = cv2.resize(img, (new_w, new_h), interpolation=area(new_w <= w))
    else:
        out = cv2.resize(img, (new_w, h), interpolation=area(new_w <= w))
        out = cv2.resize(out, (new_w, new_h), interpolation=area(new_h <= h))
    if mode != "letterbox":
        return out
    canvas = np.zeros((size, size), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = out
    return canvas


def _floats(text: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape).astype(np.float64)


def third_party(onnx_path: Path, image_path: Path) -> dict:
    """What someone with the .onnx file alone computes: probability, label, OOD flag (OpenCV DNN, no fracture)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    image = _decode_8bit(image_path)
    for step in json.loads(props["preprocess"]):
        assert step["op"] == "resize", "this reproduction implements the resize step only"
        image = _resize(image, step["size"], step.get("mode", "letterbox"))
    norm, channels = json.loads(props["normalization"]), json.loads(props["in_chans"])
    mean = np.resize(np.asarray(norm["mean"], np.float32), channels)
    std = np.resize(np.asarray(norm["std"], np.float32), channels)
    x = np.repeat((image.astype(np.float32) / np.float32(255.0))[None, None], channels, axis=1)
    x = (x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)
    net = cv2.dnn.readNetFromONNX(str(onnx_path))
    net.setInput(np.ascontiguousarray(x, dtype=np.float32), "image")
    prob, _, features = net.forward(["probability", "logit", "features"])
    p = float(np.clip(prob.reshape(-1)[0], 1e-7, 1 - 1e-7))
    if "calibration" in props:
        cal = json.loads(props["calibration"])
        p = float(1 / (1 + np.exp(-(np.log(p / (1 - p)) / cal["temperature"] + cal["bias"]))))
    decision, names = json.loads(props["decision"]), json.loads(props["class_names"])
    label = names[int(p >= decision["threshold_calibrated"])]
    flagged = None
    if "ood" in props:
        ood = json.loads(props["ood"])
        f = features.reshape(-1).astype(np.float64)
        f = f / max(np.linalg.norm(f), 1e-12)
        mean_v = _floats(ood["mean"], ood["mean_shape"])
        comps = _floats(ood["components_matrix"], ood["components_shape"])
        var = _floats(ood["variances"], ood["variances_shape"])
        c = f - mean_v
        q = comps @ c
        r = max(float(c @ c - q @ q), 0.0)
        score = np.sqrt((np.sum(q ** 2 / var[:-1]) + r / var[-1]) / ood["feature_dim"])
        flagged = bool(score > ood["threshold"])
    return {"probability": p, "label": label, "flagged": flagged}


# ------------------------------------------------------------------ fixtures
def _inputs(tmp_path: Path) -> list[Path]:
    """Two gallery radiographs (8-bit JPEG) and a 16-bit PNG made here (a gallery image spread over 12 bits)."""
    picked = sorted(GALLERY.glob("*.jpg"))[:2]
    gray = np.asarray(Image.open(picked[0]).convert("L")).astype(np.uint16)
    wide = (gray * 13 + 700 + (np.arange(gray.shape[1]) % 7)[None, :]).astype(np.uint16)
    sixteen = tmp_path / "wrist16.png"
    assert cv2.imwrite(str(sixteen), wide)
    assert Image.open(sixteen).mode.startswith("I;16")
    return picked + [sixteen]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny calibrated 3-channel model with operating points, flip TTA and fitted OOD statistics."""
    from fracture.data import load_image
    from fracture.preprocess.pipeline import Pipeline
    from fracture.serve.inference import InputSpec, prepare_batch

    torch.manual_seed(5)
    model = create_model("small_cnn", in_chans=3).eval()
    with torch.no_grad():
        model.fracture_head.weight.mul_(20.0)
    spec = [{"op": "resize", "size": 96, "mode": "letterbox"}]
    pipeline = Pipeline.from_spec(spec)
    images = np.stack([pipeline(load_image(p)) for p in sorted(GALLERY.glob("*.jpg"))[:24]])
    batch = prepare_batch(images, InputSpec(3, (0.5,) * 3, (0.5,) * 3), torch.device("cpu"))
    with torch.no_grad():
        features = model.forward_features(batch).numpy()
    detector = fit_detector(features[:16], features[16:], components=4)
    meta = {
        "image_size": 96, "preprocess": spec, "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
        "class_names": ["not fractured", "fractured"], "body_parts": [], "multitask": False,
        "threshold": 0.45, "threshold_rule": "youden", "tta_hflip": True,
        "calibration": {"method": "temperature+bias", "temperature": 1.4, "bias": -0.6},
        "operating_points": [{"name": "default", "label": "default", "threshold": 0.45},
                             {"name": "sensitivity_90", "label": "90% sensitivity", "threshold": 0.3}],
        "ood": detector.meta_block(),
    }
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    return save_checkpoint(path, model, meta, extra_tensors=detector.tensors())


def _predict_json(capsys, checkpoint: Path, image: Path, backend: str) -> dict:
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--json", "--backend", backend]) == 0
    payload = json.loads(capsys.readouterr().out)
    item = payload["images"][0]
    return {"probability": item["probability"], "label": item["label"], "flagged": (item["ood"] or {}).get("flagged")}


def _agree(a: dict, b: dict, what: str) -> None:
    assert abs(a["probability"] - b["probability"]) <= TOL, (what, a, b)
    assert a["label"] == b["label"], (what, a, b)
    assert a["flagged"] == b["flagged"], (what, a, b)


def _check_every_door(checkpoint: Path, tmp_path: Path, capsys, monkeypatch) -> list[dict]:
    from fracture.serve.batch import predict_folder

    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(tmp_path / "cache"))
    inputs = _inputs(tmp_path)
    onnx_path = export_onnx(checkpoint, tmp_path / "model.onnx")
    folder = tmp_path / "folder"
    folder.mkdir()
    for p in inputs:
        (folder / p.name).write_bytes(p.read_bytes())
    batches = {b: {r.path: r for r in predict_folder(folder, checkpoint, backend=b).rows} for b in ("torch", "onnx")}
    answers = []
    for image in inputs:
        reference = _predict_json(capsys, checkpoint, image, "torch")
        _agree(third_party(onnx_path, image), reference, f"OpenCV DNN from metadata, {image.name}")
        _agree(_predict_json(capsys, checkpoint, image, "onnxruntime"), reference, f"predict onnxruntime, {image.name}")
        for backend, rows in batches.items():
            row = rows[image.name]
            assert not row.error, row.error
            _agree({"probability": row.probability, "label": row.label, "flagged": row.ood}, reference,
                   f"batch {backend}, {image.name}")
        answers.append(reference)
    return answers


def test_third_party_and_every_door_agree_on_a_tiny_model(tiny, tmp_path, capsys, monkeypatch):
    answers = _check_every_door(tiny, tmp_path, capsys, monkeypatch)
    assert {a["label"] for a in answers} <= {"fractured", "not fractured"}
    assert all(a["flagged"] is not None for a in answers)  # the OOD flag is reproduced, not absent


@pytest.mark.slow
def test_third_party_and_every_door_agree_on_the_shipped_default(tmp_path, capsys, monkeypatch):
    from fracture.serve.predictor import default_checkpoint

    shipped = default_checkpoint()
    if shipped is None:
        pytest.skip("no shipped default in weights/")
    answers = _check_every_door(shipped, tmp_path, capsys, monkeypatch)
    assert len(answers) == 3
