"""Heatmap method and layer names, importable without torch.

Why: checkpoint validation (fracture/checkpoints/meta.py), the CLI's ``--help``
and pages list the methods; none of them should pay for importing torch.
"""
from __future__ import annotations

#: Method names and what the UI calls them. All are computed from one forward
#: and one partial backward pass (EigenCAM needs no backward at all).
METHODS = {
    "gradcam": "Grad-CAM",
    "hirescam": "HiResCAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "layercam": "LayerCAM",
    "gradcamelementwise": "Grad-CAM (element-wise)",
    "eigengradcam": "EigenGrad-CAM",
    "eigencam": "EigenCAM (class-agnostic)",
}
GRADIENT_FREE = frozenset({"eigencam"})
FINAL = "final"
LAYER_PRESETS = ("final", "stride16", "stride8", "fused")
