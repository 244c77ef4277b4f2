"""One scorer: checkpoint -> pipeline -> tensor -> forward -> calibration -> threshold -> OOD, on either backend.

Why: predict, batch, Compare/evaluate, localisation, calibration fitting and
heatmap selection each rebuilt this chain, so one checkpoint gave different
answers depending on the door (the ONNX file's threshold on another scale, the
OOD flag missing on onnxruntime). Here it is built once from a checkpoint
(:meth:`Scorer.from_checkpoint`), with its typed metadata
(:class:`fracture.checkpoints.meta.CheckpointMeta`), and every caller asks it:

- :meth:`Scorer.score` -- uint8 model inputs (the pipeline already applied) to
  :class:`Scores`: calibrated and raw probabilities, labels at the checkpoint's
  threshold (on the calibrated scale), body-part probabilities, pooled features,
  OOD results and, on torch, heatmaps from the same forward pass;
- :meth:`Scorer.score_fetch` -- the same in chunks for a whole split, with
  progress and cancel;
- :meth:`Scorer.prepare` -- the checkpoint's own pipeline on a raw image.

Backends: ``torch`` or ``onnx`` (onnxruntime), chosen inside
(:func:`fracture.serve.onnx_backend.select_backend`: ``auto`` is onnxruntime on
a CPU). The onnxruntime path imports no torch: the export is cached and
verified (:func:`fracture.serve.onnx_cache.load_onnx_model`), the OOD
statistics are read with safetensors' numpy loader. Heatmaps need torch.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fracture.checkpoints.meta import CheckpointMeta
from fracture.errors import ConfigError

log = logging.getLogger(__name__)

#: Items per chunk between progress reports / cancel checks in :meth:`Scorer.score_fetch`.
DEFAULT_CHUNK = 32


@dataclass
class Scores:
    """What the scorer says about a batch of images (arrays have one row per image)."""

    probs: np.ndarray  # calibrated (the shown scale); equal to probs_uncalibrated without calibration
    probs_uncalibrated: np.ndarray
    positive: np.ndarray  # bool, probs >= threshold
    labels: list[str]
    threshold: float  # on the calibrated scale
    body_probs: np.ndarray | None = None
    features: np.ndarray | None = None  # pooled, unmirrored (what the OOD score reads)
    ood: list[dict[str, Any]] | None = None  # {"score", "threshold", "flagged"} per image; None: no OOD data
    heatmaps: Any = None  # torch (B, S, S) in the input geometry, only when asked for on torch


class Scorer:
    """A checkpoint ready to score images on one backend (see the module docstring)."""

    def __init__(self, path: str | Path, meta: CheckpointMeta, backend: str, *, model: Any = None,
                 ort: Any = None, extras: dict[str, Any] | None = None, device: Any = None) -> None:
        from fracture.gate.ood import OodDetector
        from fracture.preprocess.pipeline import Pipeline

        self.path = Path(path)
        self.meta = meta
        self.backend = backend
        self.model = model
        self.ort = ort
        self.device = device
        self.extras = extras or {}
        self.pipeline = Pipeline.from_spec(list(meta.preprocess))
        self.threshold = meta.shown_threshold()
        self.ood = None
        if meta.ood is not None:
            arrays = [np.asarray(self.extras[name], dtype=np.float64) for name in
                      ("ood.mean", "ood.components", "ood.variances")]
            self.ood = OodDetector(mean=arrays[0], components=arrays[1], variances=arrays[2],
                                   threshold=meta.ood.threshold, val_flag_rate=meta.ood.val_flag_rate)

    # -- building ---------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, backend: str | None = "auto", device: str = "auto",
                        cache_dir: str | Path | None = None, need_heatmaps: bool = False) -> "Scorer":
        """Load ``path`` on the backend :func:`~fracture.serve.onnx_backend.select_backend` picks.

        ``need_heatmaps`` forces torch (onnxruntime has no heatmaps). Under ``auto`` a
        network that does not export is logged once and run by torch; a forced
        ``onnx`` raises instead.

        Raises:
            ConfigError: a bad backend name, onnx forced without onnxruntime, or onnx with heatmaps.
            CheckpointError: an invalid checkpoint (any bad metadata block included).
            ExportError: onnx forced and the network does not export.
        """
        from fracture.checkpoints.format import read_extra_arrays, read_meta
        from fracture.serve import onnx_backend, onnx_cache

        wanted = onnx_backend.requested_backend(_backend_name(backend))
        if need_heatmaps and wanted == "onnx":
            raise ConfigError("heatmaps need the torch backend; use --backend torch (or auto)")
        chosen = "torch" if need_heatmaps else onnx_backend.select_backend(wanted, device)
        meta = read_meta(path)
        key = str(Path(path).resolve())
        if chosen == "onnx" and not (wanted == "auto" and key in onnx_cache.FAILED_EXPORTS):
            from fracture.errors import CheckpointError
            from fracture.serve.export import ExportError

            try:
                ort = onnx_cache.load_onnx_model(path, cache_dir=cache_dir)
            except (ExportError, CheckpointError) as exc:
                if wanted == "onnx":
                    raise
                onnx_cache.FAILED_EXPORTS[key] = str(exc)
                log.warning("%s; running it with torch", exc)
            else:
                return cls(path, meta, "onnx", ort=ort, extras=read_extra_arrays(path))
        from fracture.checkpoints.format import load_checkpoint
        from fracture.serve.inference import resolve_device

        dev = resolve_device("cpu" if device == "auto" and chosen == "onnx" else device)
        model, _ = load_checkpoint(path, map_location=str(dev))
        return cls.from_model(path, model.eval(), meta, device=dev)

    @classmethod
    def from_model(cls, path: str | Path, model: Any, meta: "CheckpointMeta | dict[str, Any]", *,
                   device: Any = "cpu") -> "Scorer":
        """A torch scorer on a model in memory: a training run's best model before its checkpoint is final,
        or a checkpoint being re-calibrated. ``meta`` is validated here as where a checkpoint opens.

        Raises:
            CheckpointError: a bad metadata block.
        """
        import torch

        typed = meta if isinstance(meta, CheckpointMeta) else CheckpointMeta.from_dict(meta, where=str(path))
        dev = torch.device(device)
        extras = {k: v.double().cpu().numpy() if hasattr(v, "double") else np.asarray(v, dtype=np.float64)
                  for k, v in (getattr(model, "checkpoint_extras", None) or {}).items()}
        return cls(path, typed, "torch", model=model.to(dev), extras=extras, device=dev)

    def input_spec(self):
        """The network input (channels, normalisation) as :mod:`fracture.serve.inference` takes it (torch)."""
        from fracture.serve.inference import InputSpec

        norm = self.meta.normalization
        return InputSpec(in_chans=self.meta.in_chans, mean=norm.mean, std=norm.std)

    def _torch_inputs(self, images: np.ndarray, body_parts: np.ndarray | None):
        """The normalised batch on this scorer's device, and the body-part tensor (or None)."""
        import torch

        from fracture.serve.inference import prepare_batch

        batch = prepare_batch(np.asarray(images), self.input_spec(), self.device)
        body = None if body_parts is None else torch.as_tensor(body_parts, dtype=torch.long, device=self.device)
        return batch, body

    def stored_cam(self):
        """The heatmap chosen for this checkpoint (``explain`` block), else Grad-CAM on the last block (torch)."""
        from fracture.explain.forward import CamChoice, usable_choice

        if self.model is None:
            raise ConfigError("heatmaps need the torch backend")
        chosen = self.meta.explain
        return usable_choice(self.model, CamChoice() if chosen is None else CamChoice(chosen.method, chosen.layer))

    # -- inputs -----------------------------------------------------------
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The checkpoint's own pipeline on one uint8 image (its network input, uint8)."""
        return self.pipeline(image)

    def body_indices(self, parts: Sequence[str | None] | None, n: int) -> np.ndarray | None:
        """Body-part indices for a multi-task model (-1 unknown: the model's own guess), else None."""
        if not self.meta.multitask:
            return None
        if parts is None:
            return np.full(n, -1, dtype=np.int64)
        lookup = {name: i for i, name in enumerate(self.meta.body_parts)}
        return np.array([lookup.get(p, -1) for p in parts], dtype=np.int64)

    # -- scoring ----------------------------------------------------------
    def decide(self, probs_uncalibrated: Any, *, body_probs: np.ndarray | None = None,
               features: np.ndarray | None = None, heatmaps: Any = None) -> Scores:
        """Calibration, threshold and OOD on raw probabilities (and features): the one place they are applied."""
        raw = np.asarray(probs_uncalibrated, dtype=np.float64)
        probs = self.meta.calibrate(raw)
        positive = probs >= self.threshold
        ood = None
        if self.ood is not None and features is not None:
            ood = [self.ood.result(score) for score in self.ood.score(features)]
        return Scores(probs=probs, probs_uncalibrated=raw, positive=positive,
                      labels=[self.meta.class_names[int(p)] for p in positive], threshold=self.threshold,
                      body_probs=body_probs, features=features, ood=ood, heatmaps=heatmaps)

    def score(self, images: np.ndarray, *, body_parts: np.ndarray | None = None, cam: Any = None,
              features: bool | None = None) -> Scores:
        """Score uint8 model inputs ``(B, S, S[, C])`` (already through :meth:`prepare`).

        Args:
            body_parts: indices (-1 unknown) for a multi-task model.
            cam: a :class:`fracture.explain.forward.CamChoice` for heatmaps from the same forward (torch only).
            features: return pooled features (default: when the checkpoint has an OOD detector).
        """
        images = np.asarray(images)
        want_features = (self.ood is not None) if features is None else bool(features)
        if self.backend == "onnx":
            if cam is not None:
                raise ConfigError("heatmaps need the torch backend")
            raw, body, feats = self._score_onnx(images, body_parts)
            return self.decide(raw, body_probs=body, features=feats if want_features else None)
        return self._score_torch(images, body_parts, cam, want_features)

    def _score_onnx(self, images: np.ndarray, body_parts: np.ndarray | None):
        from fracture.serve.onnx_format import OUTPUT_BODY, OUTPUT_FEATURES, OUTPUT_LOGIT, OUTPUT_PROB
        from fracture.serve.onnx_backend import normalize_uint8

        norm = self.meta.normalization
        batch = normalize_uint8(images, self.meta.in_chans, norm.mean, norm.std)
        body = None if body_parts is None else np.asarray(body_parts, dtype=np.int64)
        out = self.ort.run(batch, body)
        if not self.meta.tta_hflip:
            prob = 1.0 / (1.0 + np.exp(-out[OUTPUT_LOGIT].astype(np.float64)))
        elif self.ort.tta_hflip:  # the mirror average is inside the graph (the cached export follows the checkpoint)
            prob = out[OUTPUT_PROB]
        else:
            mirrored = self.ort.run(np.ascontiguousarray(batch[..., ::-1]), body)
            prob = (out[OUTPUT_PROB] + mirrored[OUTPUT_PROB]) / 2
        return (np.asarray(prob, dtype=np.float64), out.get(OUTPUT_BODY),
                np.asarray(out[OUTPUT_FEATURES], dtype=np.float32))

    def _score_torch(self, images: np.ndarray, body_parts: np.ndarray | None, cam: Any, want_features: bool) -> Scores:
        import torch

        from fracture.serve.inference import autocast, batch_probs, eval_mode

        batch, body_t = self._torch_inputs(images, body_parts)
        logits, maps, feats = None, None, None
        with eval_mode(self.model):  # a model in memory (from_model) gets its mode back
            if cam is not None:
                from fracture.explain.forward import forward_with_cam

                logit, body_logits, maps = forward_with_cam(self.model, batch, method=cam.method, layer=cam.layer,
                                                            body_part=body_t)
                logits = (logit, body_logits)
            elif want_features:  # one backbone pass gives the pooled features and, through the heads, the logits
                with torch.no_grad(), autocast(batch.device):
                    pooled = self.model.forward_features(batch)
                    logits = self.model.forward_head(pooled, body_part=body_t)
                feats = pooled.float().cpu().numpy()
            raw, body = batch_probs(self.model, batch, body_t, tta_hflip=self.meta.tta_hflip, logits=logits)
            if want_features and feats is None:  # after a heatmap's forward: the pooled features on their own
                feats = self._pooled(batch)
        return self.decide(raw, body_probs=body, features=feats, heatmaps=maps)

    def heatmap_sets(self, images: np.ndarray, choices: Sequence[Any], *,
                     body_parts: np.ndarray | None = None) -> dict[Any, np.ndarray]:
        """Heatmaps of several :class:`~fracture.explain.forward.CamChoice` from ONE forward pass (torch).

        What the localisation metric and heatmap selection compare: every layer the
        choices name is captured in the same pass, each choice's maps combined from
        its layers. Returns ``{choice: (B, S, S) float32 in [0, 1]}`` in the input geometry.

        Raises:
            ConfigError: the scorer runs on onnxruntime.
            ModelError: a method or layer the model does not have.
        """
        from fracture.explain.cam import GRADIENT_FREE, capture, maps_from_capture
        from fracture.explain.layers import resolve_layers
        from fracture.serve.inference import eval_mode

        if self.model is None:
            raise ConfigError("heatmaps need the torch backend")
        names: list[str] = []
        modules: list[Any] = []
        slots: dict[Any, list[int]] = {}
        for choice in choices:
            layer_names, layer_modules = resolve_layers(self.model, choice.layer)
            for name, module in zip(layer_names, layer_modules):
                if name not in names:
                    names.append(name)
                    modules.append(module)
            slots[choice] = [names.index(name) for name in layer_names]
        batch, body_t = self._torch_inputs(images, body_parts)
        with eval_mode(self.model):
            cap = capture(self.model, batch, modules, body_part=body_t,
                          need_grads=any(choice.method not in GRADIENT_FREE for choice in choices))
        return {choice: maps_from_capture(cap, choice.method, layer_indices=slots[choice]).cpu().numpy()
                for choice in choices}

    def features(self, images: np.ndarray) -> np.ndarray:
        """Pooled features ``(B, F)`` float32 of uint8 model inputs (unmirrored): what the OOD score and
        the radiograph gate read, without the probability's mirror pass."""
        images = np.asarray(images)
        if self.backend == "onnx":
            return self._score_onnx(images, self.body_indices(None, len(images)))[2]
        return self._pooled(self._torch_inputs(images, None)[0])

    def _pooled(self, batch) -> np.ndarray:
        """Pooled backbone features of a ready batch (eval mode, no gradients, autocast on CUDA)."""
        import torch

        from fracture.serve.inference import autocast, eval_mode

        with eval_mode(self.model), torch.no_grad(), autocast(batch.device):
            return self.model.forward_features(batch).float().cpu().numpy()

    def features_fetch(self, fetch: Callable[[np.ndarray], np.ndarray], n_items: int, *, chunk: int = DEFAULT_CHUNK,
                       progress: Callable[[Any], None] | None = None) -> np.ndarray:
        """:meth:`features` over items ``0..n-1`` in chunks (progress as :meth:`score_fetch`)."""
        from fracture.serve.batching import iterate_batches
        from fracture.serve.onnx_backend import InferenceProgress

        started, parts = time.monotonic(), []
        for positions, images in iterate_batches(np.arange(n_items), chunk, lambda p: (p, fetch(p))):
            parts.append(self.features(images))
            if progress is not None:
                progress(InferenceProgress("features", int(positions[-1]) + 1, n_items, time.monotonic() - started))
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), dtype=np.float32)

    def score_fetch(
        self,
        fetch: Callable[[np.ndarray], np.ndarray],
        n_items: int,
        *,
        body_parts: np.ndarray | None = None,
        chunk: int = DEFAULT_CHUNK,
        progress: Callable[[Any], None] | None = None,
        cancel: threading.Event | None = None,
        features: bool | None = None,
    ) -> Scores:
        """:meth:`score` over items ``0..n-1`` (``fetch(positions)`` gives their uint8 model inputs), in chunks.

        Progress (:class:`fracture.serve.onnx_backend.InferenceProgress`) is reported and ``cancel``
        checked between chunks, on the calling thread.

        Raises:
            InferenceCancelled: ``cancel`` was set.
        """
        from fracture.serve.batching import iterate_batches
        from fracture.serve.onnx_backend import InferenceCancelled, InferenceProgress

        started = time.monotonic()
        raws, bodies, feats = [], [], []
        done = 0
        for positions, images in iterate_batches(np.arange(n_items), chunk, lambda p: (p, fetch(p))):
            if cancel is not None and cancel.is_set():
                raise InferenceCancelled(f"cancelled after {done} of {n_items} images; nothing was saved")
            part = self.score(images, body_parts=None if body_parts is None else np.asarray(body_parts)[positions],
                              features=features)
            raws.append(part.probs_uncalibrated)
            if part.body_probs is not None:
                bodies.append(part.body_probs)
            if part.features is not None:
                feats.append(part.features)
            done = int(positions[-1]) + 1
            if progress is not None:
                progress(InferenceProgress("predicting", done, n_items, time.monotonic() - started))
        raw = np.concatenate(raws) if raws else np.zeros(0, dtype=np.float64)
        return self.decide(raw, body_probs=np.concatenate(bodies) if bodies else None,
                           features=np.concatenate(feats) if feats else None)


def _backend_name(backend: str | None) -> str | None:
    """``onnxruntime`` is accepted as another name of ``onnx``."""
    return "onnx" if backend == "onnxruntime" else backend
