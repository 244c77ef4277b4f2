"""Explanations of model decisions: class-activation heatmaps, their geometry, overlays and boxes.

``forward_with_cam`` (the prediction's own forward pass, gradients only above
the target layer) is what prediction and the localisation metric use;
``gradcam`` explains one image the same way; ``reference_gradcam`` is
pytorch-grad-cam's computation of the same map.
"""
from __future__ import annotations

import importlib
from typing import Any

# Lazy re-exports (PEP 562): importing a submodule that needs no torch (names.py,
# for checkpoint validation) must not import torch through this package. The
# ``gradcam`` function is not re-exported: ``fracture.explain.gradcam`` is its module
# (import it from there), which a lazy attribute of the same name would shadow.
_HOMES = {
    "draw_boxes": "annotate", "METHODS": "names", "LAYER_PRESETS": "names", "CamChoice": "forward",
    "forward_with_cam": "forward", "stored_choice": "forward", "CAM_METHODS": "gradcam", "COLORMAPS": "gradcam",
    "heatmap_to_original": "gradcam", "overlay_heatmap": "gradcam",
    "reference_gradcam": "gradcam", "available_layers": "layers",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'fracture.explain' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fracture.explain.{_HOMES[name]}"), name)


__all__ = [
    "CAM_METHODS", "COLORMAPS", "LAYER_PRESETS", "METHODS", "CamChoice", "available_layers", "draw_boxes",
    "forward_with_cam", "heatmap_to_original", "overlay_heatmap", "reference_gradcam", "stored_choice",
]
