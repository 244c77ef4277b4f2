"""The prediction forward pass that also yields heatmaps, and a checkpoint's stored heatmap choice.

:class:`fracture.serve.predictor.Predictor` and the localisation metric both call
:func:`forward_with_cam`, so the heatmap a page shows and the one the metric
scores come from the same code and the same logit as the probability.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from fracture.errors import ModelError
from fracture.explain.cam import GRADIENT_FREE, METHODS, capture, maps_from_capture
from fracture.explain.layers import FINAL, resolve_layers

logger = logging.getLogger(__name__)

DEFAULT_METHOD = "gradcam"
DEFAULT_LAYER = FINAL


@dataclass(frozen=True)
class CamChoice:
    """A heatmap method and layer (preset or dotted name(s)), e.g. ``("gradcam", "stride16")``."""

    method: str = DEFAULT_METHOD
    layer: str | tuple[str, ...] = DEFAULT_LAYER

    def label(self) -> str:
        layer = self.layer if isinstance(self.layer, str) else "+".join(self.layer)
        return f"{METHODS.get(self.method, self.method)} @ {layer}"


def stored_choice(meta: dict[str, Any]) -> CamChoice:
    """The checkpoint's default heatmap (``meta["explain"]``, written by ``explain-select``).

    A missing or malformed entry gives Grad-CAM on the last block (logged when malformed).
    """
    entry = meta.get("explain")
    if entry is None:
        return CamChoice()
    method = entry.get("method") if isinstance(entry, dict) else None
    layer = entry.get("layer") if isinstance(entry, dict) else None
    if isinstance(layer, list) and layer and all(isinstance(item, str) for item in layer):
        layer = tuple(layer)
    if method not in METHODS or not (isinstance(layer, str) or isinstance(layer, tuple)):
        logger.warning("checkpoint metadata 'explain' is not {method, layer} (%r); using Grad-CAM on the last block", entry)
        return CamChoice()
    return CamChoice(method, layer)


def forward_with_cam(
    model: nn.Module,
    batch: torch.Tensor,
    *,
    method: str = DEFAULT_METHOD,
    layer: str | Sequence[str] | None = DEFAULT_LAYER,
    body_part=None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One forward pass giving the logits and each image's fracture heatmap.

    Args:
        model: a FractureModel in eval mode.
        batch: normalised (B, C, S, S) input.
        method: a key of :data:`fracture.explain.cam.METHODS`.
        layer: a preset (``final``, ``stride16``, ``stride8``, ``fused``) or dotted name(s).
        body_part: passed to the model.

    Returns:
        ``(logit (B,), body_logits (B, P) or None, heatmaps (B, S, S) float32 in [0, 1])``,
        all detached, the heatmaps in the input (letterboxed) geometry.

    Raises:
        ModelError: unknown method or layer.
    """
    if method not in METHODS:
        raise ModelError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
    _, modules = resolve_layers(model, layer)
    cap = capture(model, batch, modules, body_part=body_part, need_grads=method not in GRADIENT_FREE)
    return cap.logit, cap.body_logits, maps_from_capture(cap, method)


def usable_choice(model: nn.Module, choice: CamChoice) -> CamChoice:
    """``choice`` if ``model`` has its layer, else Grad-CAM on the last block (with a warning)."""
    try:
        resolve_layers(model, choice.layer)
    except ModelError as exc:
        logger.warning("stored heatmap layer unusable (%s); using %s", exc, CamChoice().label())
        return CamChoice()
    return choice
