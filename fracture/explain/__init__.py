"""Explanations of model decisions: Grad-CAM heatmaps and overlays."""
from __future__ import annotations

from fracture.explain.gradcam import CAM_METHODS, COLORMAPS, gradcam, heatmap_to_original, overlay_heatmap

__all__ = ["CAM_METHODS", "COLORMAPS", "gradcam", "heatmap_to_original", "overlay_heatmap"]
