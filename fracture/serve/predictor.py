"""Prediction for people: one study (one or more images) from a checkpoint.

The checkpoint carries its own preprocessing pipeline, normalisation, class
names, body-part vocabulary and decision threshold, so a prediction here is
made exactly as the model was validated. Optional ``extra_steps`` (the Predict
page's CLAHE/Canny toggles) run first, at the original size, so the Grad-CAM
map and the picture shown stay aligned.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fracture.util.files import is_regular_file, read_bytes_bounded
from fracture.errors import FractureError, PreprocessError
from fracture.checkpoints.promote import DEFAULT_POINTER
from fracture.settings import get_settings

log = logging.getLogger(__name__)


@dataclass
class ImagePrediction:
    name: str
    prob: float  # kept for measurement (the shortcut lab); never shown for a refused image
    label: str | None  # None: the gate refused the image (not a radiograph)
    positive: bool | None
    body_part: str | None
    body_part_prob: float | None
    image: np.ndarray = field(repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False)
    prob_uncalibrated: float | None = None  # before temperature scaling (None: the checkpoint has none)
    ood: dict[str, Any] | None = None  # {"score", "threshold", "flagged"}; None: no OOD data in the checkpoint
    # Both levels of "is this something the model knows?" (fracture.gate.radiograph.check + differences):
    # {"radiograph", "reason", "checked_by", "score", "threshold", "unfamiliar", "differences"}.
    gate: dict[str, Any] | None = None

    @property
    def is_radiograph(self) -> bool:
        """False when the gate refused the image (level a): it then has no label anywhere."""
        return bool((self.gate or {}).get("radiograph", True))

    def to_dict(self) -> dict[str, Any]:
        shown = self.is_radiograph  # a refused image gets no probability and no label
        return {
            "name": self.name, "probability": self.prob if shown else None, "label": self.label if shown else None,
            "positive": self.positive if shown else None,
            "probability_uncalibrated": self.prob_uncalibrated if shown else None,
            "body_part": self.body_part, "body_part_probability": self.body_part_prob,
            "height": int(self.image.shape[0]), "width": int(self.image.shape[1]),
            "ood": self.ood, "gate": self.gate,
        }


@dataclass
class StudyPrediction:
    images: list[ImagePrediction]
    study_prob: float | None  # None (and no label) when the gate refused every image
    study_label: str | None
    positive: bool | None
    threshold: float
    class_names: tuple[str, str]
    body_part: str | None
    body_part_prob: float | None
    body_part_source: str
    checkpoint: str
    preprocess: list[dict]
    temperature: float | None = None
    bias: float = 0.0
    operating_point: str = "default"
    # The checkpoint's offered operating points (CheckpointMeta.operating_point_choices: thresholds on the
    # shown, calibrated scale); at_operating_point relabels at one of them by name.
    operating_points: tuple[dict[str, Any], ...] = ()

    @property
    def ood_flagged(self) -> bool:
        """Whether any image looks unlike the model's training radiographs."""
        return any(bool((p.ood or {}).get("flagged")) for p in self.images)

    @property
    def refused(self) -> list[ImagePrediction]:
        """The images the gate found not to be radiographs (level a)."""
        return [p for p in self.images if not p.is_radiograph]

    @property
    def unfamiliar(self) -> list[ImagePrediction]:
        """Radiographs unlike the training data (level b), with their ``gate["differences"]``."""
        return [p for p in self.images if p.is_radiograph and (p.gate or {}).get("unfamiliar")]

    def at_operating_point(self, name: str) -> "StudyPrediction":
        """The same probabilities labelled at one of the checkpoint's operating points (by name); no model run.

        Raises:
            ConfigError: ``name`` is not one of :attr:`operating_points`.
        """
        from dataclasses import replace

        from fracture.errors import ConfigError

        point = next((p for p in self.operating_points if p["name"] == name), None)
        if point is None:
            raise ConfigError(f"operating point {name!r} unknown to {self.checkpoint}; it offers "
                              f"{', '.join(p['name'] for p in self.operating_points) or 'none'}")
        threshold = float(point["threshold"])
        images = [replace(p, positive=bool(p.prob >= threshold), label=self.class_names[int(p.prob >= threshold)])
                  if p.is_radiograph else p for p in self.images]
        positive = None if self.study_prob is None else bool(self.study_prob >= threshold)
        return replace(self, images=images, positive=positive,
                       study_label=None if positive is None else self.class_names[int(positive)],
                       threshold=threshold, operating_point=name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able result (no pixel arrays) for downloads and logs."""
        return {
            "checkpoint": self.checkpoint,
            "study_probability": self.study_prob,
            "study_label": self.study_label,
            "positive": self.positive,
            "threshold": self.threshold,
            "class_names": list(self.class_names),
            "body_part": self.body_part,
            "body_part_probability": self.body_part_prob,
            "body_part_source": self.body_part_source,
            "study_rule": "mean of image probabilities",
            "operating_point": self.operating_point,
            "calibration": {"calibrated": self.temperature is not None, "temperature": self.temperature,
                            "bias": self.bias, "rule": "probability = sigmoid(logit(uncalibrated) / temperature + bias)"},
            "ood_flagged": self.ood_flagged,
            "gate": {"radiograph": not self.refused or len(self.refused) < len(self.images),
                     "refused": [p.name for p in self.refused], "unfamiliar": [p.name for p in self.unfamiliar],
                     "reason": "; ".join(f"{p.name}: {p.gate['reason']}" for p in self.refused) or None,
                     "rule": "images that are not radiographs get no label and are left out of the study mean"},
            "preprocess": self.preprocess,
            "images": [p.to_dict() for p in self.images],
        }


class Predictor:
    """A loaded checkpoint ready to predict studies and explain them."""

    def __init__(self, scorer) -> None:
        from fracture.gate.radiograph import RadiographGate

        # Probabilities, thresholds, calibration and OOD: the one scorer (fracture.serve.scorer).
        self.scorer = scorer
        self.meta = dict(scorer.meta.raw)
        self.path = scorer.path
        self.model = scorer.model  # None on onnxruntime (no heatmaps there)
        self.device = scorer.device
        self.pipeline = scorer.pipeline
        calibration = scorer.meta.calibration
        self.temperature = None if calibration is None else calibration.temperature
        self.bias = 0.0 if calibration is None else calibration.bias
        self.threshold = scorer.threshold
        self.ood = scorer.ood
        self.gate = RadiographGate.from_checkpoint(self.meta, scorer.extras, where=str(self.path))
        self.class_names = scorer.meta.class_names
        self.body_parts = list(scorer.meta.body_parts)
        self.resize_mode = self.pipeline.resize_mode
        # The heatmap chosen for this checkpoint on validation data (explain-select), else Grad-CAM.
        self.cam_choice = scorer.stored_cam() if scorer.model is not None else None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", backend: str | None = "torch",
                        need_heatmaps: bool = False) -> "Predictor":
        """Raises CheckpointError when the file is not a valid checkpoint (any bad metadata block included).

        ``backend``: ``torch`` (heatmaps), ``onnx``/``onnxruntime``, ``auto`` or None (the environment, else
        auto; see :mod:`fracture.serve.scorer`); ``need_heatmaps`` asks for torch (a ConfigError with onnx).
        """
        from fracture.serve.scorer import Scorer

        return cls(Scorer.from_checkpoint(path, backend=backend, device=device, need_heatmaps=need_heatmaps))

    @property
    def input_spec(self):
        """The network input (channels, normalisation) as :mod:`fracture.serve.inference` takes it."""
        return self.scorer.input_spec()

    @property
    def multitask(self) -> bool:
        return self.scorer.meta.multitask

    def _prepare(self, image: np.ndarray, extra_steps: Sequence[dict] | None) -> tuple[np.ndarray, np.ndarray]:
        from fracture.preprocess.pipeline import Pipeline

        shown = image
        if extra_steps:
            extra = Pipeline.from_spec(list(extra_steps))
            if any(s.op == "resize" for s in extra.steps):
                raise PreprocessError("extra steps must not resize: the checkpoint's pipeline does that")
            shown = extra(image)
            if shown.ndim == 3:  # a channel-adding step: show and feed its first channel
                shown = shown[..., 0]
        return shown, self.pipeline(shown)

    def predict(
        self,
        images: Sequence[np.ndarray],
        *,
        names: Sequence[str] | None = None,
        body_part: str | None = None,
        extra_steps: Sequence[dict] | None = None,
        with_cam: bool = True,
        cam_method: str | None = None,
        cam_layer: str | Sequence[str] | None = None,
        sources: Sequence[Any] | None = None,
    ) -> StudyPrediction:
        """Predict one study: each image's probability, the study mean, label and body part.

        Args:
            images: uint8 grayscale arrays (from :func:`fracture.data.load_image`).
            body_part: the known body part (multi-task models); None lets the
                model predict it.
            extra_steps: preprocessing applied before the checkpoint's own pipeline.
            cam_method, cam_layer: the heatmap (each None: the checkpoint's
                stored choice, :attr:`cam_choice`); it comes from the same forward pass
                as the probability (:func:`fracture.explain.forward.forward_with_cam`).
            sources: per image what its file said (a ``DecodedImage`` or
                :class:`fracture.gate.radiograph.SourceFacts`, or None): DICOM modality,
                colour, bit depth, for the radiograph gate and the level (b) warning.
        Raises:
            PreprocessError: bad ``extra_steps``.
            ValueError: no images.
        """
        if not images:
            raise ValueError("predict needs at least one image")
        names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
        body_index = None
        if body_part is not None and self.multitask:
            if body_part not in self.body_parts:
                raise PreprocessError(f"body part {body_part!r} unknown to this model; it knows {', '.join(self.body_parts)}")
            body_index = self.body_parts.index(body_part)
        prepared = [self._prepare(img, extra_steps) for img in images]
        inputs = np.stack([p[1] for p in prepared])
        body = self.scorer.body_indices(None, len(images))
        if body is not None and body_index is not None:
            body[:] = body_index
        cam = None
        if with_cam:
            from fracture.explain.forward import CamChoice  # torch: heatmaps only

            base = self.cam_choice or CamChoice()
            cam = CamChoice(cam_method or base.method, cam_layer or base.layer)
        # The one scorer: forward (flip TTA, autocast on CUDA), calibration, threshold, OOD, heatmaps.
        scores = self.scorer.score(inputs, body_parts=body, cam=cam,
                                   features=self.ood is not None or self.gate is not None)
        maps, body_probs = scores.heatmaps, scores.body_probs
        raw_probs, probs_np = scores.probs_uncalibrated, scores.probs
        ood, gates = self.gate_results(scores, inputs, sources)
        results = []
        for i, (shown, _) in enumerate(prepared):
            heatmap = None
            if maps is not None:
                from fracture.explain.gradcam import heatmap_to_original

                heatmap = heatmap_to_original(maps[i].cpu().numpy(), shown.shape[:2], self.resize_mode)
            part, part_prob = None, None
            if body_probs is not None:
                j = int(body_probs[i].argmax())
                part, part_prob = self.body_parts[j], float(body_probs[i, j])
            positive = bool(scores.positive[i]) if gates[i]["radiograph"] else None  # refused: no label
            results.append(ImagePrediction(
                name=names[i], prob=float(probs_np[i]), positive=positive,
                label=None if positive is None else self.class_names[int(positive)],
                body_part=part, body_part_prob=part_prob, image=shown, heatmap=heatmap,
                prob_uncalibrated=None if self.temperature is None else float(raw_probs[i]),
                ood=None if ood is None else ood[i], gate=gates[i],
            ))
        kept = [p.prob for p in results if p.is_radiograph]  # refused images are left out of the study
        study_prob = float(np.mean(kept)) if kept else None
        positive = None if study_prob is None else bool(study_prob >= self.threshold)
        if body_part is not None:
            part, part_prob, source = body_part, None, "given"
        elif body_probs is not None:
            mean_body = body_probs.mean(axis=0)
            j = int(mean_body.argmax())
            part, part_prob, source = self.body_parts[j], float(mean_body[j]), "predicted"
        else:
            part, part_prob, source = None, None, "none"
        return StudyPrediction(
            images=results, study_prob=study_prob, positive=positive,
            study_label=None if positive is None else self.class_names[int(positive)],
            threshold=self.threshold, class_names=self.class_names, body_part=part, body_part_prob=part_prob,
            body_part_source=source, checkpoint=self.path.name, preprocess=list(extra_steps or []) + self.meta["preprocess"],
            temperature=self.temperature, bias=self.bias,
            operating_points=tuple(self.scorer.meta.operating_point_choices()),
        )

    def gate_results(self, scores, prepared: np.ndarray | None, sources: Sequence[Any] | None
                     ) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]:
        """Per image the OOD block (from the scorer) and the gate block (both levels), from one pass of pooled features.

        ``prepared`` are the uint8 model inputs (for the gate's image statistics; None skips the pixel check).
        """
        from fracture.gate.radiograph import SourceFacts, check, differences, image_statistics

        n = len(scores.probs)
        features = scores.features
        ood = scores.ood
        gate_scores = [None] * n
        if self.gate is not None and prepared is not None:
            gate_scores = [float(v) for v in self.gate.probability(features, image_statistics(prepared))]
        facts = [SourceFacts.of(s) for s in (sources or [None] * n)]
        gates = []
        for i in range(n):
            verdict = check(facts[i], gate_scores[i], self.gate)
            how = differences(facts[i], None if ood is None else ood[i], self.body_parts) if verdict["radiograph"] else []
            gates.append({**verdict, "unfamiliar": bool(how), "differences": how})
        return ood, gates


# ------------------------------------------------------------------ registry
@dataclass
class CheckpointEntry:
    """One checkpoint offered to pages: usable (``error`` None) or broken (``error`` says why, ``meta`` empty)."""

    name: str
    path: Path
    meta: dict[str, Any]
    source: str  # shipped | promoted | run
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def default_checkpoint(weights_dir: str | Path | None = None) -> Path | None:
    """The shipped default: the file named in ``weights/default.txt``, else the first checkpoint there.

    The pointer must name a plain file in ``weights/`` (no folders, no ``..``).
    """
    weights_dir = Path(weights_dir or get_settings().weights_dir)
    pointer = weights_dir / DEFAULT_POINTER
    try:
        named = read_bytes_bounded(pointer, 4096).decode("utf-8", "replace").strip()
    except FileNotFoundError:
        named = None
    except (OSError, FractureError) as exc:
        log.warning("%s is unreadable (%s); using the first checkpoint", pointer, exc)
        named = None
    if named is not None:
        candidate = weights_dir / named
        if Path(named).name != named or named in ("", ".", ".."):
            log.warning("%s names %r, which is not a file name in %s", pointer, named, weights_dir)
        elif is_regular_file(candidate):
            return candidate
        else:
            log.warning("%s names %s, which does not exist", pointer, named)
    found = sorted(p for p in weights_dir.glob("*.safetensors") if is_regular_file(p))
    return found[0] if found else None


def list_checkpoints(weights_dir: str | Path | None = None, runs_dir: str | Path | None = None) -> list[CheckpointEntry]:
    """Checkpoints in ``weights/`` first, then the best checkpoint of each run (newest first).

    A file that is not a valid checkpoint is listed with its ``error`` (and an
    empty ``meta``) instead of raising, so one broken file never breaks a page;
    callers offer only the entries that are ``ok``.
    """
    from fracture.checkpoints.format import read_checkpoint_meta
    from fracture.checkpoints.promote import promoted_names

    settings = get_settings()
    weights_dir = Path(weights_dir or settings.weights_dir)
    runs_dir = Path(runs_dir or settings.runs_dir)
    candidates: list[tuple[Path, str, str]] = []
    if weights_dir.is_dir():
        promoted = promoted_names(weights_dir)
        for p in sorted(weights_dir.glob("*.safetensors")):
            candidates.append((p, "promoted" if p.stem in promoted else "shipped", p.stem))
    if runs_dir.is_dir():
        for run in sorted((d for d in runs_dir.iterdir() if d.is_dir()), reverse=True):
            best = run / "best.safetensors"
            if best.exists() or best.is_symlink():
                candidates.append((best, "run", run.name))
    entries: list[CheckpointEntry] = []
    for path, source, name in candidates:
        try:
            meta = read_checkpoint_meta(path)
        except (FractureError, OSError) as exc:
            log.warning("broken checkpoint %s: %s", path, exc)
            entries.append(CheckpointEntry(name=name, path=path, meta={}, source=source, error=str(exc)))
            continue
        entries.append(CheckpointEntry(name=name, path=path, meta=meta, source=source))
    return entries
