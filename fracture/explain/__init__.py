"""Explanations of model decisions: class-activation heatmaps, their geometry, overlays and boxes.

``forward_with_cam`` (the prediction's own forward pass, gradients only above
the target layer) is what prediction and the localisation metric use;
``gradcam`` explains one image the same way; ``reference_gradcam`` is
pytorch-grad-cam's computation of the same map.
"""
from __future__ import annotations

from fracture.explain.annotate import draw_boxes
from fracture.explain.cam import METHODS
from fracture.explain.forward import CamChoice, forward_with_cam, stored_choice
from fracture.explain.gradcam import (
    CAM_METHODS,
    COLORMAPS,
    gradcam,
    heatmap_to_original,
    overlay_heatmap,
    reference_gradcam,
)
from fracture.explain.layers import LAYER_PRESETS, available_layers

__all__ = [
    "CAM_METHODS", "COLORMAPS", "LAYER_PRESETS", "METHODS", "CamChoice", "available_layers", "draw_boxes",
    "forward_with_cam", "gradcam", "heatmap_to_original", "overlay_heatmap", "reference_gradcam", "stored_choice",
]
