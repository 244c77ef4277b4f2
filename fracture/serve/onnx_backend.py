"""onnxruntime as the CPU inference backend, and the one place that chooses a backend.

Why: on a CPU onnxruntime runs the EfficientNet family several times faster
than PyTorch eager (``make bench`` reports ``ort_vs_torch``). Torch stays for
training, Grad-CAM and CUDA. Evaluation, Compare and batch prediction call
:func:`predict_images` (or :func:`load_runner` to keep a model loaded), which
picks the backend:

- ``FRACTURE_INFERENCE_BACKEND`` / ``--backend``: ``auto`` (default),
  ``torch`` or ``onnx``;
- ``auto`` is onnx on a CPU when onnxruntime is installed and the network
  exports, torch otherwise (CUDA, or an export that fails: logged, then torch).

The ONNX file is exported once per checkpoint content and kept under
``$FRACTURE_CACHE_DIR/onnx/`` (key: the checkpoint's sha256 and the export
version), so the second evaluation of a model loads it in milliseconds.

:func:`predict_batches` here has the signature and meaning of
:func:`fracture.serve.inference.predict_batches` (same uint8 -> float conversion and
normalisation, flip TTA, body-part input), with an :class:`OrtModel` in place
of the torch module.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from fracture.errors import ConfigError, FractureError
from fracture.serve.onnx_format import INPUT_BODY, INPUT_IMAGE, OUTPUT_BODY, OUTPUT_LOGIT, OUTPUT_PROB

log = logging.getLogger(__name__)

ENV_VAR = "FRACTURE_INFERENCE_BACKEND"
BACKENDS = ("auto", "torch", "onnx")
#: Items per chunk between progress reports / cancel checks.
DEFAULT_BATCH = 32



class InferenceCancelled(FractureError):
    """The caller's cancel event was set; nothing was written."""


@dataclass(frozen=True)
class InferenceProgress:
    """Where a long inference stands: what a page shows as "images done / time left"."""

    stage: str  # "preparing images" | "predicting"
    done: int
    total: int
    elapsed_s: float

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first chunk)."""
        if self.done <= 0 or self.elapsed_s <= 0:
            return None
        return (self.total - self.done) * self.elapsed_s / self.done

    def line(self) -> str:
        eta = self.eta_s
        left = "estimating time left" if eta is None else f"{_clock(eta)} left"
        return f"{self.stage}: {self.done:,}/{self.total:,} images · {left}"


def preparation_progress(
    progress: Callable[[int, int], None] | None,
    on_progress: Callable[[InferenceProgress], None] | None,
    cancel: threading.Event | None,
) -> Callable[[int, int], None] | None:
    """An image-cache ``progress(done, total)`` that also reports the "preparing images" stage and honours ``cancel``."""
    if progress is None and on_progress is None and cancel is None:
        return None
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        if cancel is not None and cancel.is_set():
            raise InferenceCancelled(f"cancelled while preparing images ({done} of {total}); nothing was saved")
        if progress is not None:
            progress(done, total)
        if on_progress is not None:
            on_progress(InferenceProgress("preparing images", done, total, time.monotonic() - started))

    return report


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


# ------------------------------------------------------------- choosing
def requested_backend(backend: str | None = None) -> str:
    """The backend asked for: ``backend`` if given, else ``$FRACTURE_INFERENCE_BACKEND``, else auto.

    Raises:
        ConfigError: a value other than auto, torch or onnx.
    """
    value = (backend if backend is not None else os.environ.get(ENV_VAR, "auto")).strip().lower() or "auto"
    if value not in BACKENDS:
        source = "--backend" if backend is not None else ENV_VAR
        raise ConfigError(f"{source}={value!r}: choose one of {', '.join(BACKENDS)}")
    return value


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_present() -> bool:
    """Whether a CUDA GPU is usable, without importing torch when it is not loaded yet.

    With torch already imported its answer is used; otherwise the NVIDIA driver's
    device list (``/proc/driver/nvidia/gpus``) and ``CUDA_VISIBLE_DEVICES`` decide, so the
    onnxruntime path on a CPU machine never pays for importing torch.
    """
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return gpus.is_dir() and any(gpus.iterdir())
    except OSError:
        return False


def _device_is_cpu(device: str) -> bool:
    if device == "auto":
        return not cuda_present()
    return str(device).split(":")[0] == "cpu"


def select_backend(backend: str | None = None, device: str = "auto") -> str:
    """``"torch"`` or ``"onnx"`` for this request (see the module docstring).

    Raises:
        ConfigError: a bad value, or onnx forced without onnxruntime installed.
    """
    wanted = requested_backend(backend)
    if wanted == "torch":
        return "torch"
    if wanted == "onnx":
        if not onnxruntime_available():
            raise ConfigError(f"{ENV_VAR}=onnx needs onnxruntime: .venv/bin/pip install -r requirements.txt")
        return "onnx"
    return "onnx" if _device_is_cpu(device) and onnxruntime_available() else "torch"


# ------------------------------------------------------------- the ORT model
def _default_threads() -> int:
    """The threads torch would use (same threads = a fair comparison), else the usable CPUs."""
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    from fracture.util.workers import usable_cpus

    return usable_cpus()


class OrtModel:
    """An onnxruntime session over an exported checkpoint, with that export's metadata."""

    def __init__(self, session, metadata: Mapping[str, str], path: Path) -> None:
        self.session = session
        self.path = path
        self.metadata = dict(metadata)
        from fracture.errors import CheckpointError
        from fracture.util.jsonio import parse_json

        def field(key: str, default: str) -> Any:  # the guarded reader: a cached file is not trusted
            return parse_json(self.metadata.get(key, default), source=path, what=f"(ONNX metadata {key!r})",
                              nonfinite="allow", error=CheckpointError)

        self.tta_hflip = field("tta_hflip", "false")
        self.meta: dict[str, Any] = field("fracture", "{}")
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    @classmethod
    def from_file(cls, path: str | Path, *, threads: int | None = None) -> "OrtModel":
        """Open an exported file on the CPU execution provider.

        Raises:
            CheckpointError: not a readable ONNX file.
        """
        import onnxruntime as ort

        from fracture.errors import CheckpointError

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or _default_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise CheckpointError(f"{path}: onnxruntime cannot load it ({exc}); export it again") from exc
        metadata = session.get_modelmeta().custom_metadata_map
        return cls(session, metadata, Path(path))

    def run(self, batch: np.ndarray, body: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {INPUT_IMAGE: batch}
        if INPUT_BODY in self.input_names:
            feeds[INPUT_BODY] = body if body is not None else np.full(len(batch), -1, dtype=np.int64)
        return dict(zip(self.output_names, self.session.run(None, feeds)))


def normalize_uint8(images: np.ndarray, in_chans: int, mean, std) -> np.ndarray:
    """uint8 (B, H, W[, C]) -> normalised float32 (B, in_chans, H, W), as ``inference.prepare_batch`` on a CPU."""
    x = np.ascontiguousarray(images)
    if x.ndim == 3:
        x = x[..., None]
    x = x.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    channels = x.shape[1]
    if channels != in_chans:
        if channels == 1:
            x = np.repeat(x, in_chans, axis=1)
        elif in_chans == 1:
            x = x.mean(axis=1, keepdims=True, dtype=np.float32)
        else:
            raise ValueError(f"cannot feed {channels}-channel images to a {in_chans}-channel model")
    mean_a, std_a = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if mean_a.size != x.shape[1]:
        mean_a = np.repeat(np.float32(mean_a.mean()), x.shape[1])
        std_a = np.repeat(np.float32(std_a.mean()), x.shape[1])
    return np.ascontiguousarray((x - mean_a.reshape(1, -1, 1, 1)) / std_a.reshape(1, -1, 1, 1))


def predict_batches(
    model: OrtModel,
    fetch: Callable[[np.ndarray], np.ndarray],
    n_items: int,
    spec,
    *,
    device=None,
    batch_size: int = 64,
    body_parts: np.ndarray | None = None,
    tta_hflip: bool = False,
    amp: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fracture probabilities (N,) and body-part probabilities (N, P) or None, by onnxruntime.

    Same arguments as :func:`fracture.serve.inference.predict_batches`; ``device``
    and ``amp`` are accepted and ignored (onnxruntime runs on the CPU).
    Conversion and normalisation run on the prefetch thread (numpy only), the
    session on the calling thread.
    """
    from fracture.serve.batching import iterate_batches

    def prepared(positions: np.ndarray):
        return positions, normalize_uint8(fetch(positions), spec.in_chans, spec.mean, spec.std)

    probs: list[np.ndarray] = []
    body_probs: list[np.ndarray] = []
    for positions, batch in iterate_batches(np.arange(n_items), batch_size, prepared):
        body = None if body_parts is None else np.asarray(body_parts[positions], dtype=np.int64)
        if tta_hflip and not model.tta_hflip:
            # One run over the batch and its mirror: the same sums as two forwards.
            both = np.concatenate([batch, batch[..., ::-1]])
            out = model.run(np.ascontiguousarray(both), None if body is None else np.concatenate([body, body]))
            half = len(batch)
            prob = (out[OUTPUT_PROB][:half] + out[OUTPUT_PROB][half:]) / 2
            body_out = out[OUTPUT_BODY][:half] if OUTPUT_BODY in out else None
        else:
            out = model.run(batch, body)
            prob = out[OUTPUT_PROB] if tta_hflip else 1.0 / (1.0 + np.exp(-out[OUTPUT_LOGIT].astype(np.float64)))
            body_out = out.get(OUTPUT_BODY)
        probs.append(np.asarray(prob, dtype=np.float64))
        if body_out is not None:
            body_probs.append(body_out)
    all_probs = np.concatenate(probs) if probs else np.zeros(0, dtype=np.float64)
    return all_probs.astype(np.float64), (np.concatenate(body_probs) if body_probs else None)
