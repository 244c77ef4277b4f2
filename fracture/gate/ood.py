"""Out-of-distribution warning: does an image look like the model's training radiographs?

A classifier answers every input, a photo of a cat included, and its
probability then means nothing. The score here is a Mahalanobis distance of the
model's own pooled features (``model.forward_features``) to the training
images' features, under a probabilistic-PCA covariance (Tipping & Bishop):
the ``k`` leading principal directions keep their own variances, the rest
share one residual variance. That covariance needs only the mean, ``k``
directions and ``k + 1`` variances (``k = 64`` for a 1280-feature backbone:
330 kB as float32), where a full covariance of 1280 features would need
6.5 MB and more images than a validation split has to estimate. On the
shipped FracAtlas model, 64 components flagged all 14 sample photos where 32
flagged 12, at the same 5-6% of test radiographs.

Features are L2-normalised first (the direction of the feature vector carries
the content; its length mostly contrast), and the score is
``sqrt(squared distance / F)``, a per-feature RMS z-score, so numbers are
comparable across backbones.

The threshold is set on the validation split, so that at most
:data:`TARGET_VAL_FLAG_RATE` (5%) of in-distribution validation images are
flagged; the statistics themselves come from (a subsample of) the training
split, so the validation flag rate is an honest estimate for new
in-distribution images.

Stored in the checkpoint: ``meta["ood"]`` (a small block: method, dimensions,
threshold, validation flag rate, fitted on what) and the arrays as tensors
``ood.mean``, ``ood.components``, ``ood.variances`` in the same safetensors
file (:data:`fracture.checkpoints.format.EXTRA_TENSOR_PREFIX`); ``load_checkpoint``
hands them over as ``model.checkpoint_extras``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fracture.errors import FractureError

log = logging.getLogger(__name__)

METHOD = "mahalanobis-ppca"
DEFAULT_COMPONENTS = 64
TARGET_VAL_FLAG_RATE = 0.05
TENSOR_NAMES = ("ood.mean", "ood.components", "ood.variances")
WARNING = ("A radiograph unlike the ones this model was trained on; the prediction is shown, but treat it with "
           "caution.")
"""Level (b) wording (milder than level (a), :data:`fracture.gate.radiograph.NOT_RADIOGRAPH`): a label is still given."""


def unfamiliar_warning(differences: list[str] | tuple[str, ...] = ()) -> str:
    """The level (b) warning, saying how the radiograph differs when that is known."""
    if not differences:
        return WARNING
    return (f"A radiograph unlike the ones this model was trained on: {'; '.join(differences)}. The prediction is "
            "shown, but treat it with caution.")


class OodError(FractureError):
    """Features that cannot fit or feed an out-of-distribution detector."""


def _normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise OodError(f"features must be a 2-D array (images, features); got shape {features.shape}")
    if not np.isfinite(features).all():
        raise OodError("features contain NaN or infinite values")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


@dataclass
class OodDetector:
    """Probabilistic-PCA Mahalanobis distance of pooled features, with its threshold.

    Attributes:
        mean: (F,) mean of the normalised training features.
        components: (k, F) orthonormal leading principal directions.
        variances: (k + 1,) variances along them, then the shared residual variance.
        threshold: scores above it are flagged.
        val_flag_rate: share of validation images above the threshold.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    threshold: float = math.inf
    val_flag_rate: float | None = None

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    def score(self, features: Any) -> np.ndarray:
        """One distance per image (larger = less like the training images)."""
        x = _normalise(features)
        if x.shape[1] != self.feature_dim:
            raise OodError(f"features have {x.shape[1]} dimensions; this detector was fitted on {self.feature_dim}")
        centred = x - self.mean
        projected = centred @ self.components.T
        residual = np.maximum((centred ** 2).sum(axis=1) - (projected ** 2).sum(axis=1), 0.0)
        squared = (projected ** 2 / self.variances[:-1]).sum(axis=1) + residual / self.variances[-1]
        return np.sqrt(squared / self.feature_dim)

    def flags(self, scores: Any) -> np.ndarray:
        """True above the threshold, and for a score that is not a number (see :meth:`result`)."""
        return ~(np.asarray(scores, dtype=np.float64) <= self.threshold)

    def result(self, score: float) -> dict[str, Any]:
        """The per-image ``ood`` block of a prediction: ``score, threshold, flagged`` (+ ``error``).

        A score that is not a finite number (damaged statistics, features out of
        range) is an explicit error state, flagged: ``NaN > threshold`` would be
        False and silently switch the warning off for that image.
        """
        score = float(score)
        if not math.isfinite(score):
            return {"score": None, "threshold": float(self.threshold), "flagged": True,
                    "error": f"the out-of-distribution score is {score} (damaged OOD statistics?); "
                             "this image could not be checked, treat it as unfamiliar"}
        return {"score": score, "threshold": float(self.threshold), "flagged": bool(score > self.threshold)}

    # -- storage ----------------------------------------------------------
    def meta_block(self) -> dict[str, Any]:
        """The small metadata part; the arrays go into :meth:`tensors`."""
        return {
            "method": METHOD,
            "feature_dim": self.feature_dim,
            "components": int(self.components.shape[0]),
            "threshold": float(self.threshold),
            "val_flag_rate": None if self.val_flag_rate is None else float(self.val_flag_rate),
            "target_val_flag_rate": TARGET_VAL_FLAG_RATE,
            "features": "L2-normalised pooled features (model.forward_features), no flip",
            "score": "sqrt(PPCA Mahalanobis squared distance / feature_dim)",
            "tensors": list(TENSOR_NAMES),
        }

    def tensors(self) -> dict[str, Any]:
        import torch

        return {
            "ood.mean": torch.as_tensor(self.mean, dtype=torch.float32),
            "ood.components": torch.as_tensor(self.components, dtype=torch.float32),
            "ood.variances": torch.as_tensor(self.variances, dtype=torch.float32),
        }

    @classmethod
    def from_checkpoint(cls, meta: dict[str, Any], extras: dict[str, Any] | None) -> "OodDetector | None":
        """The detector stored in a checkpoint, or None when it has none (or a damaged one, logged)."""
        block = meta.get("ood")
        if not isinstance(block, dict):
            return None
        if block.get("method") != METHOD:
            log.warning("checkpoint OOD method %r is not %r; no OOD warning", block.get("method"), METHOD)
            return None
        extras = extras or {}
        missing = [name for name in TENSOR_NAMES if name not in extras]
        if missing:
            log.warning("checkpoint metadata has an OOD block but the file lacks tensors %s; no OOD warning "
                        "(rerun `python -m fracture calibrate`)", missing)
            return None
        arrays = [np.asarray(extras[name].float().cpu().numpy() if hasattr(extras[name], "float") else extras[name],
                             dtype=np.float64) for name in TENSOR_NAMES]
        mean, components, variances = arrays
        threshold = block.get("threshold")
        ok = (
            mean.ndim == 1 and components.ndim == 2 and components.shape[1] == mean.shape[0]
            and variances.shape == (components.shape[0] + 1,) and bool((variances > 0).all())
            and all(bool(np.isfinite(a).all()) for a in arrays)  # NaN/inf statistics: a score of NaN or 0
            and isinstance(threshold, (int, float)) and math.isfinite(threshold)
        )
        if not ok:
            log.warning("checkpoint OOD tensors or threshold are inconsistent (mean %s, components %s, variances %s, "
                        "threshold %r); no OOD warning", mean.shape, components.shape, variances.shape, threshold)
            return None
        return cls(mean=mean, components=components, variances=variances, threshold=float(threshold),
                   val_flag_rate=block.get("val_flag_rate"))


def fit_detector(train_features: Any, val_features: Any, *, components: int | None = None,
                 target_rate: float = TARGET_VAL_FLAG_RATE) -> OodDetector:
    """Fit the statistics on ``train_features`` and the threshold on ``val_features``.

    The threshold is the smallest validation score that leaves at most
    ``target_rate`` of the validation images strictly above it.

    Raises:
        OodError: too few images (fewer than 3 for statistics, 1 for the threshold)
            or features of different widths.
    """
    x = _normalise(train_features)
    n, dim = x.shape
    if n < 3:
        raise OodError(f"the OOD statistics need at least 3 training images; got {n}")
    k = DEFAULT_COMPONENTS if components is None else int(components)
    k = max(1, min(k, n // 4 or 1, dim - 1))
    mean = x.mean(axis=0)
    centred = x - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    eig = singular ** 2 / max(n - 1, 1)
    # The residual variance: the mean of the variances left out, over all remaining dimensions.
    residual = float(eig[k:].sum() / (dim - k)) if dim > k else float(eig[-1])
    floor = max(float(eig[0]) * 1e-6, 1e-12)
    variances = np.maximum(np.concatenate([eig[:k], [residual]]), floor)
    detector = OodDetector(mean=mean, components=vt[:k].copy(), variances=variances)
    val_scores = detector.score(val_features)
    if len(val_scores) < 1:
        raise OodError("the OOD threshold needs at least one validation image")
    ordered = np.sort(val_scores)
    allowed = int(math.floor(target_rate * len(ordered)))  # images that may lie above the threshold
    detector.threshold = float(ordered[len(ordered) - 1 - allowed])
    detector.val_flag_rate = float(detector.flags(val_scores).mean())
    return detector
