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
  image's) and, multi-task, ``body_probability`` ``(batch, P)``.

``metadata_props`` carries ``fracture`` (the checkpoint's metadata as JSON)
and the keys a consumer needs one by one: threshold, preprocess,
class_names, normalization, image_size, in_chans, body_parts, tta_hflip,
calibration, temperature and bias (when the checkpoint has them: calibrated
probability = ``sigmoid(logit(probability) / temperature + bias)``, applied by the consumer, as
fracture applies it after the forward pass), the source file's sha256.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fracture.util.files import atomic_temp_path, atomic_write_bytes
from fracture.util.jsonio import json_default
from fracture.errors import CheckpointError, FractureError

log = logging.getLogger(__name__)

#: Bumped when the graph's inputs/outputs change (part of the export cache key).
ONNX_EXPORT_VERSION = 1
OPSET = 17
INPUT_IMAGE = "image"
INPUT_BODY = "body_part"
OUTPUT_PROB = "probability"
OUTPUT_LOGIT = "logit"
OUTPUT_BODY = "body_probability"
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


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _graph_module(model, tta_hflip: bool):
    """The network wrapped with the outputs above (torch imported here: export is a torch job)."""
    import torch

    class _Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image, body_part=None):
            logit, body_logits = self.model(image, body_part=body_part)
            prob = torch.sigmoid(logit)
            if tta_hflip:
                mirrored, _ = self.model(torch.flip(image, dims=[3]), body_part=body_part)
                prob = (prob + torch.sigmoid(mirrored)) / 2
            if body_logits is None:
                return prob, logit
            return prob, logit, torch.softmax(body_logits, dim=1)

    return _Graph().eval()


def _metadata_props(meta: dict[str, Any], tta_hflip: bool, source_sha256: str, source_name: str) -> dict[str, str]:
    props = {
        "fracture": json.dumps(meta, default=json_default),
        "fracture_onnx_version": str(ONNX_EXPORT_VERSION),
        "source_checkpoint": source_name,
        "source_sha256": source_sha256,
        "tta_hflip": json.dumps(bool(tta_hflip)),
        "probability_rule": "sigmoid(logit)" + (", mean with the mirrored image" if tta_hflip else "")
        + "; temperature (if any) not applied",
        "inputs": json.dumps({INPUT_IMAGE: "float32 (batch, C, S, S), (x/255 - mean) / std",
                              **({INPUT_BODY: "int64 (batch,), -1 = unknown"} if meta.get("multitask") else {})}),
    }
    for key in CARRIED_KEYS:
        if key in meta and meta[key] is not None:
            props[key] = json.dumps(meta[key], default=json_default)
    temperature = (meta.get("calibration") or {}).get("temperature") if isinstance(meta.get("calibration"), dict) else None
    if temperature is not None:  # sigmoid(logit(probability) / T + bias); not applied in the graph
        props["temperature"] = json.dumps(temperature)
        props["bias"] = json.dumps(float((meta.get("calibration") or {}).get("bias") or 0.0))
        props["calibration_rule"] = "calibrated probability = sigmoid(logit(probability) / temperature + bias)"
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
    outputs = [OUTPUT_PROB, OUTPUT_LOGIT, OUTPUT_BODY] if multitask else [OUTPUT_PROB, OUTPUT_LOGIT]
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
    for key, value in _metadata_props(meta, tta, file_sha256(checkpoint), checkpoint.name).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "fracture-lab"
    onnx.checker.check_model(proto)
    return proto.SerializeToString(), meta


def export_onnx(checkpoint: str | Path, out: str | Path, *, tta_hflip: bool | None = None,
                opset: int = OPSET) -> Path:
    """Write the checkpoint as an ONNX file, atomically (readers never see half a file).

    Raises:
        CheckpointError, ExportError: see :func:`export_bytes`.
    """
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
    norm = meta["normalization"]
    spec = InputSpec(in_chans=int(meta["in_chans"]), mean=tuple(norm["mean"]), std=tuple(norm["std"]))
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
                   tolerance: float = PARITY_TOLERANCE) -> tuple[Path, ParityReport]:
    """Export, check onnxruntime against torch on ``images``, and only then publish ``out``.

    Raises:
        ExportError: the probabilities differ by more than ``tolerance`` (``out`` is left as it was).
    """
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
