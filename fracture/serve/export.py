"""ONNX export of a checkpoint, with its metadata, checked against torch.

Why: onnxruntime runs the EfficientNet family on a CPU several times faster
than PyTorch eager, and an ``.onnx`` file runs where torch is not installed.
The graph takes what :func:`fracture.serve.inference.predict_batches` feeds the
network -- the normalised float batch ``(B, C, S, S)`` -- so the checkpoint's
preprocessing pipeline and normalisation stay data (in the file's
``metadata_props``), not code baked into the graph:

- input ``image`` float32 ``(batch, C, S, S)``, normalised as
  ``metadata["normalization"]`` says (the batch dimension is dynamic);
- input ``body_part`` int64 ``(batch,)`` for a multi-task model (-1 = unknown:
  the model's own guess is embedded, as in torch);
- outputs ``probability`` ``(batch,)`` (flip TTA averaged in when the export
  has it; no temperature applied), ``logit`` ``(batch,)`` (the unmirrored
  image's), ``features`` ``(batch, F)`` (the unmirrored image's pooled
  features: what the out-of-distribution score reads) and, multi-task,
  ``body_probability`` ``(batch, P)``.

Self-describing: from the file alone (``metadata_props``, JSON values) a third
party reproduces ``python -m fracture predict --json`` -- probability, label and
OOD flag -- with any ONNX runtime (``tests/serve/test_onnx_reproduce.py`` does it with
OpenCV's DNN module): ``reproduce`` says every step in order (decode to 8-bit
gray, the checkpoint's pipeline with the resize rule and its interpolation,
normalisation, graph, calibration, threshold, OOD score); ``decision`` holds
the thresholds named with their scale (``threshold_calibrated`` is the one
``predict`` uses) and the operating points; ``ood`` the OOD statistics
(base64 float32 little-endian) and threshold. ``fracture`` is the checkpoint's
whole metadata. ``source_sha256`` is the checkpoint's digest.
"""
from __future__ import annotations

import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fracture.util.files import atomic_temp_path, atomic_write_bytes, file_sha256
from fracture.util.jsonio import json_default
from fracture.errors import CheckpointError, FractureError

log = logging.getLogger(__name__)

#: Bumped when the graph's inputs/outputs change (part of the export cache key).
from fracture.serve.onnx_format import (  # noqa: E402  (the names every ONNX reader and writer shares)
    INPUT_BODY, INPUT_IMAGE, ONNX_EXPORT_VERSION, OPSET, OUTPUT_BODY, OUTPUT_FEATURES, OUTPUT_LOGIT, OUTPUT_PROB,
)
#: The issue's parity bar: max |torch - onnxruntime| probability difference.
PARITY_TOLERANCE = 1e-4
#: metadata_props keys copied one by one from the checkpoint metadata (JSON-encoded values).
CARRIED_KEYS = (
    "threshold", "threshold_rule", "preprocess", "class_names", "normalization", "image_size",
    "in_chans", "architecture", "body_parts", "multitask", "calibration",
)


class ExportError(FractureError):
    """The network could not be exported to ONNX, or the export disagrees with torch."""


@dataclass
class ParityReport:
    """How far onnxruntime's probabilities are from torch's on the same images."""

    n_images: int
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def _graph_module(model, tta_hflip: bool):
    """The network wrapped with the outputs above (torch imported here: export is a torch job)."""
    import torch

    class _Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image, body_part=None):
            features = self.model.forward_features(image)
            logit, body_logits = self.model.forward_head(features, body_part=body_part)
            prob = torch.sigmoid(logit)
            if tta_hflip:
                mirrored, _ = self.model(torch.flip(image, dims=[3]), body_part=body_part)
                prob = (prob + torch.sigmoid(mirrored)) / 2
            if body_logits is None:
                return prob, logit, features
            return prob, logit, features, torch.softmax(body_logits, dim=1)

    return _Graph().eval()


def _b64_float32(array: Any) -> str:
    import base64

    return base64.b64encode(np.ascontiguousarray(np.asarray(array, dtype="<f4")).tobytes()).decode("ascii")


def _metadata_props(checkpoint: Path, meta: dict[str, Any], tta_hflip: bool) -> dict[str, str]:
    """Everything a consumer needs beside the graph, as ``metadata_props`` (JSON values where noted)."""
    from fracture.checkpoints.format import read_extra_arrays
    from fracture.checkpoints.meta import Calibration, CheckpointMeta

    typed = CheckpointMeta.from_dict(meta, where=str(checkpoint))
    size, mode = typed.image_size, typed.resize_mode
    dump = lambda value: json.dumps(value, default=json_default)  # noqa: E731
    decision = {
        "threshold_calibrated": typed.shown_threshold(),
        "threshold_uncalibrated": typed.threshold,
        "rule": f"label = {typed.class_names[1]!r} when the calibrated probability >= threshold_calibrated, "
                f"else {typed.class_names[0]!r} (the same as uncalibrated probability >= threshold_uncalibrated)",
        "operating_points": [{"name": p["name"], "label": p["label"], "threshold_calibrated": p["threshold"],
                              "threshold_uncalibrated": p["threshold_uncalibrated"]}
                             for p in typed.operating_point_choices()],
    }
    calibration = None if typed.calibration is None else {
        "method": typed.calibration.method, "temperature": typed.calibration.temperature,
        "bias": typed.calibration.bias, "rule": Calibration.RULE.replace("p =", "p = output 'probability' =")}
    ood = None
    if typed.ood is not None:
        arrays = read_extra_arrays(checkpoint)
        ood = {
            "method": typed.ood.method, "threshold": typed.ood.threshold, "flagged": "score > threshold",
            "features": f"output {OUTPUT_FEATURES!r} (the unmirrored image), L2-normalised: x = f / max(||f||, 1e-12)",
            "score": "c = x - mean; q = components @ c; r = max(||c||^2 - ||q||^2, 0); "
                     "score = sqrt((sum(q^2 / variances[:k]) + r / variances[k]) / feature_dim)",
            "feature_dim": typed.ood.feature_dim, "components": typed.ood.components,
            "encoding": "base64 of float32 little-endian, row-major",
            "mean": _b64_float32(arrays["ood.mean"]), "mean_shape": [typed.ood.feature_dim],
            "components_matrix": _b64_float32(arrays["ood.components"]),
            "components_shape": [typed.ood.components, typed.ood.feature_dim],
            "variances": _b64_float32(arrays["ood.variances"]), "variances_shape": [typed.ood.components + 1],
        }
    reproduce = [
        "1. decode the file to 8-bit gray (H, W): 8-bit gray/palette/RGB: ITU-R 601 luma (Pillow 'L'); 1-bit: 0 and "
        "255; 16-bit, 32-bit and float images: linearly from the image's own min..max to 0..255, "
        "uint8 = clip(rint((v - min) * 255 / (max - min)), 0, 255) (a constant image: all 0); alpha composited on "
        "black; EXIF orientation applied; DICOM: modality LUT, VOI LUT or window, then min..max to 0..255 as above, "
        "MONOCHROME1 inverted (255 - v); first frame of several",
        "2. run the steps of 'preprocess' in order on the uint8 image (fracture.preprocess.pipeline); "
        f"the resize step: {mode} to {size} x {size}: " + (
            "scale = size / max(H, W), new_w = min(size, max(1, round(W * scale))), new_h likewise, "
            "resize to (new_w, new_h), paste at top = (size - new_h) // 2, left = (size - new_w) // 2 on black"
            if mode == "letterbox" else "each axis scaled to size on its own")
        + "; interpolation: cv2.INTER_AREA on an axis that shrinks, cv2.INTER_LINEAR on one that grows (one "
        "cv2.resize when both axes go the same way, else width first then height), Python round() is half to even",
        f"3. x = (uint8 / 255 - mean) / std per channel (normalization); gray repeated to in_chans="
        f"{typed.in_chans}; layout (batch, C, {size}, {size}) float32, input {INPUT_IMAGE!r}",
        f"4. run the graph; output {OUTPUT_PROB!r} is the probability"
        + (" averaged with the mirrored image's (tta_hflip, inside the graph)" if tta_hflip else ""),
        "5. calibrated probability = sigmoid(logit(probability) / temperature + bias) with 'calibration' "
        "(probability clipped to [1e-7, 1 - 1e-7] first); none: unchanged",
        "6. label: see 'decision' (threshold_calibrated on the calibrated probability)",
        "7. OOD flag: see 'ood' (score from output 'features')",
        "8. a study: the mean of its images' calibrated probabilities against the same threshold",
    ]
    props = {
        "fracture": dump(meta),
        "fracture_onnx_version": str(ONNX_EXPORT_VERSION),
        "source_checkpoint": checkpoint.name,
        "source_sha256": file_sha256(checkpoint),
        "tta_hflip": dump(bool(tta_hflip)),
        "probability_rule": "sigmoid(logit)" + (", mean with the mirrored image" if tta_hflip else "")
        + "; calibration not applied in the graph (see 'calibration')",
        "inputs": dump({INPUT_IMAGE: "float32 (batch, C, S, S), (x/255 - mean) / std",
                        **({INPUT_BODY: "int64 (batch,), -1 = unknown"} if meta.get("multitask") else {})}),
        "reproduce": dump(reproduce),
        "decision": dump(decision),
        "threshold": dump(decision["threshold_calibrated"]),
        "threshold_scale": "calibrated probability (threshold_uncalibrated in 'decision')",
        "resize": dump({"size": size, "mode": mode, "interpolation_shrink": "INTER_AREA",
                        "interpolation_enlarge": "INTER_LINEAR", "pad_value": 0}),
        "input_mapping": dump({"bit_depth_16_32_float": "linear min..max of the image to 0..255",
                               "bit_depth_1": "0 and 255", "monochrome1": "inverted", "colour": "ITU-R 601 luma",
                               "alpha": "composited on black"}),
    }
    for key in CARRIED_KEYS:
        if key in meta and meta[key] is not None and key not in ("threshold", "calibration"):
            props[key] = dump(meta[key])
    if calibration is not None:
        props["calibration"] = dump(calibration)
        props["temperature"] = dump(calibration["temperature"])
        props["bias"] = dump(calibration["bias"])
        props["calibration_rule"] = "calibrated probability = sigmoid(logit(probability) / temperature + bias)"
    if ood is not None:
        props["ood"] = dump(ood)
    return props


def export_bytes(checkpoint: str | Path, *, tta_hflip: bool | None = None, opset: int = OPSET) -> tuple[bytes, dict[str, Any]]:
    """The checkpoint's network as serialised ONNX (metadata included), and the checkpoint meta.

    Args:
        tta_hflip: bake the mirrored-image average into ``probability``;
            None follows the checkpoint (``meta["tta_hflip"]``).

    Raises:
        CheckpointError: the checkpoint is invalid.
        ExportError: torch cannot export this network.
    """
    import onnx
    import torch

    from fracture.checkpoints.format import load_checkpoint

    checkpoint = Path(checkpoint)
    model, meta = load_checkpoint(checkpoint, map_location="cpu")
    model = model.float().eval()
    tta = bool(meta.get("tta_hflip")) if tta_hflip is None else bool(tta_hflip)
    size = int(meta["image_size"])
    graph = _graph_module(model, tta)
    dummy = torch.zeros(2, int(meta["in_chans"]), size, size)
    multitask = bool(getattr(model, "num_body_parts", 0))
    args: tuple = (dummy, torch.full((2,), -1, dtype=torch.long)) if multitask else (dummy,)
    inputs = [INPUT_IMAGE, INPUT_BODY] if multitask else [INPUT_IMAGE]
    outputs = [OUTPUT_PROB, OUTPUT_LOGIT, OUTPUT_FEATURES] + ([OUTPUT_BODY] if multitask else [])
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter warns that it is deprecated and that the body-part
            # range check is traced as a constant (it holds for -1 and valid indices).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph, args, buffer, dynamo=False, opset_version=opset,
                input_names=inputs, output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
            )
    except Exception as exc:  # torch raises many types here; all mean the same to the user
        raise ExportError(
            f"{checkpoint}: torch could not export {meta.get('architecture')} to ONNX ({type(exc).__name__}: {exc}); "
            "use the torch backend (FRACTURE_INFERENCE_BACKEND=torch)"
        ) from exc
    proto = onnx.load_from_string(buffer.getvalue())
    del proto.metadata_props[:]
    for key, value in _metadata_props(checkpoint, meta, tta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "fracture-lab"
    onnx.checker.check_model(proto)
    return proto.SerializeToString(), meta


def check_export_target(checkpoint: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse an ``out`` that would destroy something the export did not create (checked before any work).

    Refused always: the checkpoint being exported, any Fracture Lab checkpoint (shipped,
    promoted or a run's), a ``.safetensors`` name, anything in the weights folder that is
    not an ``.onnx`` file, a folder. Refused without ``overwrite``: any existing file.

    Raises:
        ExportError: one line naming ``out`` and what to do instead.
    """
    from fracture.settings import get_settings

    out, checkpoint = Path(out), Path(checkpoint)
    target = out.resolve()
    if target == checkpoint.resolve() or (out.exists() and checkpoint.exists() and os.path.samefile(out, checkpoint)):
        raise ExportError(f"--out {out} is the checkpoint being exported; write the ONNX file elsewhere (e.g. "
                          f"{checkpoint.with_suffix('.onnx')})")
    if out.suffix.lower() == ".safetensors":
        raise ExportError(f"--out {out}: an ONNX file is not a .safetensors checkpoint; name it {out.stem}.onnx")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give the .onnx file to write")
    weights = get_settings().weights_dir.resolve()
    if target.parent == weights and out.suffix.lower() != ".onnx":
        raise ExportError(f"--out {out} is in the weights folder, which holds the shipped and promoted models; "
                          "write the ONNX file elsewhere or give it an .onnx name")
    if out.exists():
        from fracture.checkpoints.format import read_checkpoint_meta

        try:
            read_checkpoint_meta(out)
        except FractureError:
            is_checkpoint = False
        else:
            is_checkpoint = True
        if is_checkpoint:
            raise ExportError(f"--out {out} is a Fracture Lab checkpoint; exporting never replaces one "
                              "(write the ONNX file elsewhere)")
        if not overwrite:
            raise ExportError(f"--out {out} already exists; add --overwrite to replace it, or choose another file")
    return out


def export_onnx(checkpoint: str | Path, out: str | Path, *, tta_hflip: bool | None = None,
                opset: int = OPSET, overwrite: bool = False) -> Path:
    """Write the checkpoint as an ONNX file, atomically (readers never see half a file).

    ``out`` is checked first (:func:`check_export_target`).

    Raises:
        CheckpointError, ExportError: see :func:`export_bytes` and :func:`check_export_target`.
    """
    check_export_target(checkpoint, out, overwrite=overwrite)
    data, meta = export_bytes(checkpoint, tta_hflip=tta_hflip, opset=opset)
    out = atomic_write_bytes(out, data)
    log.info("exported %s (%s) to %s, %.1f MB", Path(checkpoint).name, meta.get("architecture"), out, len(data) / 1e6)
    return out


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict of strings (values are JSON where noted above).

    Raises:
        CheckpointError: not a readable ONNX file.
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and OSError alike
        raise CheckpointError(f"{path}: not a readable ONNX file ({exc}); export it again") from exc
    return {entry.key: entry.value for entry in proto.metadata_props}


def check_parity(checkpoint: str | Path, onnx_path: str | Path, images: Sequence[np.ndarray],
                 *, tolerance: float = PARITY_TOLERANCE, batch_size: int = 8) -> ParityReport:
    """Probabilities of torch (:func:`fracture.serve.inference.predict_batches`) and onnxruntime on the same images.

    Args:
        images: raw uint8 grayscale images (as ``load_image`` returns); the
            checkpoint's own pipeline prepares them for both.
    """
    import torch

    from fracture.serve import onnx_backend
    from fracture.checkpoints.format import load_checkpoint
    from fracture.serve.inference import InputSpec, predict_batches
    from fracture.preprocess.pipeline import Pipeline

    if not images:
        raise ValueError("check_parity needs at least one image")
    model, meta = load_checkpoint(checkpoint, map_location="cpu")
    session = onnx_backend.OrtModel.from_file(onnx_path)
    pipeline = Pipeline.from_spec(meta["preprocess"])
    prepared = np.stack([pipeline(img) for img in images])
    spec = InputSpec.from_meta(meta)
    tta = session.tta_hflip
    body = np.full(len(images), -1, dtype=np.int64) if meta.get("multitask") else None
    fetch = lambda p: prepared[p]  # noqa: E731
    torch_probs, _ = predict_batches(model, fetch, len(images), spec, device=torch.device("cpu"),
                                     batch_size=batch_size, body_parts=body, tta_hflip=tta)
    ort_probs, _ = onnx_backend.predict_batches(session, fetch, len(images), spec, batch_size=batch_size,
                                               body_parts=body, tta_hflip=tta)
    diff = float(np.max(np.abs(torch_probs - ort_probs)))
    return ParityReport(n_images=len(images), max_abs_diff=diff, tolerance=tolerance)


def export_checked(checkpoint: str | Path, out: str | Path, images: Sequence[np.ndarray], *,
                   tta_hflip: bool | None = None, opset: int = OPSET,
                   tolerance: float = PARITY_TOLERANCE, overwrite: bool = False) -> tuple[Path, ParityReport]:
    """Export, check onnxruntime against torch on ``images``, and only then publish ``out``.

    Raises:
        ExportError: ``out`` refused (:func:`check_export_target`), or the probabilities differ by
            more than ``tolerance`` (``out`` is left as it was).
    """
    check_export_target(checkpoint, out, overwrite=overwrite)
    data, _ = export_bytes(checkpoint, tta_hflip=tta_hflip, opset=opset)
    tmp = atomic_temp_path(out)
    try:
        tmp.write_bytes(data)
        report = check_parity(checkpoint, tmp, images, tolerance=tolerance)
        if not report.ok:
            raise ExportError(
                f"{out}: onnxruntime and torch differ by {report.max_abs_diff:.2e} in probability on "
                f"{report.n_images} images (allowed {tolerance:g}); the file was not written"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return Path(out), report


def demo_images(n: int = 16) -> list[np.ndarray]:
    """``n`` radiographs of the built-in demo set (the app's copy, else a small one drawn in a temporary folder)."""
    import tempfile

    from fracture.data import load_image
    from fracture.data.demo import make_demo_dataset
    from fracture.data.imageio import has_image_extension
    from fracture.settings import get_settings

    def first(root: Path) -> list[Path]:
        return sorted(p for p in root.rglob("*") if has_image_extension(p) and p.is_file())[:n]

    found = first(get_settings().demo_dir) if get_settings().demo_dir.is_dir() else []
    if len(found) >= n:
        return [load_image(p) for p in found]
    with tempfile.TemporaryDirectory(prefix="fracture-export-") as tmp:
        root = make_demo_dataset(Path(tmp) / "demo", seed=0, studies=max(4, n // 2))
        return [load_image(p) for p in first(root)]
