"""Level (a) of "is this something the model knows?": is this picture a radiograph at all?

A fracture classifier answers every input: a photo of a rocket gets
P = 0.93 "fractured". Before a label is shown, three checks in order:

1. the file's own DICOM header (:mod:`fracture.gate.modality`): MR, CT, NM,
   US... are refused with the modality's name;
2. colour (:data:`COLOUR_LIMIT`): radiographs are gray, so a clearly
   colourful picture (Hasler & Suesstrunk's colourfulness, measured by the
   loader before the gray conversion) is a photo or a screen;
3. the pixels: a logistic regression on the model's own L2-normalised
   pooled features plus a few cheap statistics of the model input
   (:func:`image_statistics`), fitted on training-split radiographs against
   generated non-radiographs (:func:`fracture.gate.probes.fit_probe_sets`:
   photo crops, documents and screen shots, noise, CT/MR-like slices).
   Its threshold is at least 0.5 and high enough that at most
   :data:`TARGET_VAL_GATED_RATE` of validation radiographs are refused; it is
   measured on held-out probes (:func:`fracture.gate.probes.probe_sets`).

When the gate fires no fractured/not-fractured label is given anywhere.
Level (b), a radiograph unlike the training data, is the milder warning of
:mod:`fracture.gate.ood` plus what the file says (:func:`differences`).

Stored with the checkpoint: ``meta["radiograph_gate"]`` (threshold, method,
statistics names, fitted on what) and the tensors ``ood.gate.coef``,
``ood.gate.mean``, ``ood.gate.scale`` (the checkpoint format's extra-tensor
prefix is ``ood.``); validated on load, a damaged block is logged and
ignored (the DICOM and colour checks still run).
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fracture.errors import FractureError
from fracture.gate.modality import classify_modality, source_tags

log = logging.getLogger(__name__)

METHOD = "logistic-pooled-features+image-stats"
TENSOR_NAMES = ("ood.gate.coef", "ood.gate.mean", "ood.gate.scale")
TARGET_VAL_GATED_RATE = 0.01
COLOUR_LIMIT = 15.0
"""Colourfulness above which a picture is refused as a colour image (gray scans with a tint stay well below)."""
STATISTICS = ("mean", "std", "white_share", "black_share", "mode_share", "grey_levels", "edge_density",
              "pixel_step", "entropy")
"""Cheap statistics of the model input (channel 0, uint8) beside the pooled features."""
NOT_RADIOGRAPH = "Not a radiograph: {reason}. No fractured / not fractured label is given for it."
"""Level (a) wording: the model is not asked for a verdict."""


class GateError(FractureError):
    """Features or probes that cannot fit or feed the radiograph gate."""


@dataclass(frozen=True)
class SourceFacts:
    """What the file said about itself (from :class:`fracture.data.imageio.DecodedImage`)."""

    bit_depth: int = 8
    colourfulness: float = 0.0
    dicom: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, decoded: Any) -> "SourceFacts | None":
        """From a decoded image (or anything with those attributes); None stays None."""
        if decoded is None or isinstance(decoded, SourceFacts):
            return decoded
        return cls(int(getattr(decoded, "bit_depth", 8) or 8), float(getattr(decoded, "colourfulness", 0.0) or 0.0),
                   tuple(getattr(decoded, "dicom", ()) or ()))


def image_statistics(images: np.ndarray) -> np.ndarray:
    """(B, len(STATISTICS)) statistics of uint8 model inputs ``(B, S, S[, C])`` (channel 0)."""
    import cv2

    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    if images.ndim == 2:
        images = images[None]
    rows = []
    for img in images:
        img = np.ascontiguousarray(img, dtype=np.uint8)
        hist = np.bincount(img.ravel(), minlength=256).astype(np.float64)
        p = hist / hist.sum()
        nz = p[p > 0]
        f = img.astype(np.float32)
        lap = np.abs(cv2.Laplacian(f, cv2.CV_32F))
        rows.append([
            f.mean() / 255, f.std() / 255, p[250:].sum(), p[:6].sum(), p.max(), (hist > 0).sum() / 256,
            float((lap > 40).mean()), float(np.abs(np.diff(f, axis=1)).mean() / 255), float(-(nz * np.log2(nz)).sum() / 8),
        ])
    return np.asarray(rows, dtype=np.float64)


def _l2(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or not np.isfinite(features).all():
        raise GateError(f"pooled features must be a finite 2-D array; got shape {features.shape}")
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _design(features: np.ndarray, stats: np.ndarray) -> np.ndarray:
    stats = np.asarray(stats, dtype=np.float64)
    if len(stats) != len(features):
        raise GateError(f"{len(features)} feature rows but {len(stats)} statistics rows")
    return np.hstack([_l2(features), stats])


@dataclass
class RadiographGate:
    """A fitted logistic regression: P(not a radiograph) from pooled features + image statistics."""

    coef: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    threshold: float = 0.5
    val_gated_rate: float | None = None

    @property
    def feature_dim(self) -> int:
        return int(self.coef.shape[0]) - len(STATISTICS)

    def probability(self, features: Any, stats: Any) -> np.ndarray:
        """P(not a radiograph) per image."""
        x = _design(features, stats)
        if x.shape[1] != self.coef.shape[0]:
            raise GateError(f"features have {x.shape[1] - len(STATISTICS)} dimensions; this gate was fitted on "
                            f"{self.feature_dim}")
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    def gated(self, features: Any, stats: Any) -> np.ndarray:
        return self.probability(features, stats) > self.threshold

    # -- storage ----------------------------------------------------------
    def meta_block(self) -> dict[str, Any]:
        return {
            "method": METHOD, "feature_dim": self.feature_dim, "statistics": list(STATISTICS),
            "intercept": float(self.intercept), "threshold": float(self.threshold),
            "val_gated_rate": None if self.val_gated_rate is None else float(self.val_gated_rate),
            "target_val_gated_rate": TARGET_VAL_GATED_RATE, "colour_limit": COLOUR_LIMIT,
            "tensors": list(TENSOR_NAMES),
        }

    def tensors(self) -> dict[str, Any]:
        import torch

        return {name: torch.as_tensor(value, dtype=torch.float32)
                for name, value in zip(TENSOR_NAMES, (self.coef, self.mean, self.scale))}

    @classmethod
    def from_checkpoint(cls, meta: Mapping[str, Any], extras: Mapping[str, Any] | None,
                        where: str = "checkpoint") -> "RadiographGate | None":
        """The gate stored in a checkpoint, or None when it has none.

        Raises:
            CheckpointError: a damaged block or tensors (never silently off: rerun calibrate).
        """
        from fracture.errors import CheckpointError

        block = meta.get("radiograph_gate")
        if block is None:
            return None
        fix = "; rerun `python -m fracture calibrate` on this checkpoint"
        if not isinstance(block, dict) or block.get("method") != METHOD \
                or list(block.get("statistics") or []) != list(STATISTICS):
            raise CheckpointError(f"{where}: radiograph_gate is not a {METHOD} block with statistics "
                                  f"{list(STATISTICS)}{fix}")
        extras = extras or {}
        missing = [n for n in TENSOR_NAMES if n not in extras]
        if missing:
            raise CheckpointError(f"{where}: radiograph_gate needs tensors {missing}, which the file lacks{fix}")
        coef, mean, scale = (np.asarray(extras[n].float().cpu().numpy() if hasattr(extras[n], "float") else extras[n],
                                        dtype=np.float64) for n in TENSOR_NAMES)
        threshold, intercept, dim = block.get("threshold"), block.get("intercept"), block.get("feature_dim")
        numbers_ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                         for v in (threshold, intercept)) and isinstance(dim, int) and not isinstance(dim, bool)
        ok = (numbers_ok and coef.ndim == 1 and coef.shape == mean.shape == scale.shape
              and coef.shape[0] == dim + len(STATISTICS)
              and bool(np.isfinite(coef).all() and np.isfinite(mean).all() and np.isfinite(scale).all())
              and bool((scale > 0).all()) and 0.0 < float(threshold) < 1.0)
        if not ok:
            raise CheckpointError(f"{where}: radiograph_gate tensors or numbers are inconsistent (coef {coef.shape}, "
                                  f"mean {mean.shape}, scale {scale.shape}, feature_dim {dim!r}, threshold "
                                  f"{threshold!r}, intercept {intercept!r}){fix}")
        return cls(coef=coef, intercept=float(intercept), mean=mean, scale=scale, threshold=float(threshold),
                   val_gated_rate=block.get("val_gated_rate"))


def fit_gate(radiograph_features: Any, radiograph_stats: Any, other_features: Any, other_stats: Any, *,
             val_features: Any = None, val_stats: Any = None, c: float = 0.5,
             target_rate: float = TARGET_VAL_GATED_RATE) -> RadiographGate:
    """Fit P(not a radiograph) on radiographs (label 0) against non-radiographs (label 1).

    The classes are weighted to balance. The threshold is 0.5, raised to the
    smallest value that leaves at most ``target_rate`` of the validation
    radiographs above it (when given).

    Raises:
        GateError: fewer than 5 images of either class.
    """
    from sklearn.linear_model import LogisticRegression

    xr = _design(radiograph_features, radiograph_stats)
    xo = _design(other_features, other_stats)
    if len(xr) < 5 or len(xo) < 5:
        raise GateError(f"the radiograph gate needs at least 5 radiographs and 5 other images; got {len(xr)} and {len(xo)}")
    if xr.shape[1] != xo.shape[1]:
        raise GateError("radiographs and other images have features of different widths")
    x = np.vstack([xr, xo])
    y = np.r_[np.zeros(len(xr)), np.ones(len(xo))]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit((x - mean) / scale, y)
    gate = RadiographGate(coef=model.coef_[0].astype(np.float64), intercept=float(model.intercept_[0]),
                          mean=mean, scale=scale, threshold=0.5)
    if val_features is not None and len(val_features):
        p = np.sort(gate.probability(val_features, val_stats))
        allowed = int(math.floor(target_rate * len(p)))
        gate.threshold = float(min(max(0.5, p[len(p) - 1 - allowed]), 1 - 1e-6))
        gate.val_gated_rate = float((p > gate.threshold).mean())
    return gate


class StatsRecorder:
    """Wraps a ``fetch(positions) -> uint8 batch`` so the statistics of every fetched batch are kept, in order."""

    def __init__(self, fetch: Callable[[np.ndarray], np.ndarray]) -> None:
        self._fetch, self._rows = fetch, []

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        batch = self._fetch(positions)
        self._rows.append(image_statistics(np.asarray(batch)))
        return batch

    def array(self) -> np.ndarray:
        return np.vstack(self._rows) if self._rows else np.zeros((0, len(STATISTICS)))


# ------------------------------------------------------------------ verdicts


def check(source: SourceFacts | None, probability: float | None = None,
          gate: RadiographGate | None = None) -> dict[str, Any]:
    """The level (a) verdict of one image: ``{"radiograph", "reason", "checked_by", "score", "threshold"}``.

    ``checked_by`` is the check that decided: ``dicom``, ``colour``, ``pixels``,
    or None when nothing could say (no gate stored, no tags). ``probability``
    is the pixel gate's P(not a radiograph) for this image.
    """
    threshold = None if gate is None else float(gate.threshold)
    verdict = {"radiograph": True, "reason": None, "checked_by": None,
               "score": None if probability is None else float(probability), "threshold": threshold}
    if source is not None:
        by_tag = classify_modality(source.dicom)
        if by_tag.radiograph is False:
            return {**verdict, "radiograph": False, "reason": by_tag.reason, "checked_by": "dicom"}
        if source.colourfulness > COLOUR_LIMIT:
            return {**verdict, "radiograph": False, "checked_by": "colour",
                    "reason": f"a colour picture (colourfulness {source.colourfulness:.0f} > {COLOUR_LIMIT:.0f}; "
                              "radiographs are gray)"}
        if by_tag.radiograph:
            verdict["checked_by"] = "dicom"
    if probability is not None and threshold is not None:
        if probability > threshold:
            return {**verdict, "radiograph": False, "checked_by": "pixels",
                    "reason": f"the picture looks like a photo, document, screen shot, CT/MR slice or noise, not an "
                              f"X-ray (gate score {probability:.2f} > {threshold:.2f})"}
        verdict["checked_by"] = verdict["checked_by"] or "pixels"
    return verdict


def _age_years(text: str) -> float | None:
    """A DICOM age string (``010Y``, ``006M``, ``003W``, ``020D``) in years."""
    match = re.fullmatch(r"(\d{1,3})([DWMY])", text.strip().upper())
    if not match:
        return None
    return int(match.group(1)) / {"D": 365.25, "W": 52.18, "M": 12, "Y": 1}[match.group(2)]


def differences(source: SourceFacts | None, ood: Mapping[str, Any] | None, body_parts: Sequence[str] = ()) -> list[str]:
    """Level (b): how a radiograph differs from the training data, as far as is known.

    From the OOD score, the file's bit depth and its DICOM header (patient age,
    body part examined); an empty list says nothing is known to differ.
    """
    out = []
    if ood and ood.get("flagged"):
        if isinstance(ood.get("score"), (int, float)):
            out.append(f"its features are far from the training radiographs' (OOD score {ood['score']:.2f} > "
                       f"{ood['threshold']:.2f})")
        else:
            out.append(ood.get("error") or "its out-of-distribution score could not be computed")
    if source is not None:
        if source.bit_depth > 8:
            out.append(f"a {source.bit_depth}-bit file, scaled to 8 bits here (its contrast may differ from the "
                       "training images')")
        tags = source_tags(source.dicom)
        age = _age_years(tags.get("PatientAge", ""))
        if age is not None and 0 < age < 18:
            out.append(f"a child's X-ray (age {tags['PatientAge']} in the DICOM header; growth plates look unlike "
                       "adult bone)")
        part = tags.get("BodyPartExamined", "").lower()
        known = [b.lower() for b in body_parts if b and b.lower() not in ("mixed", "unknown")]
        if part and known and part not in known:
            out.append(f"body part {part.upper()} (DICOM header), not among the training body parts "
                       f"({', '.join(known)})")
    return out
