"""The Preprocessing Lab's variants: named step lists built from the page's sliders."""
from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np
import streamlit as st

#: Longest side of the image the lab works on: diffusion and Grad-CAM stay interactive.
LAB_MAX_SIDE = 768
DEFAULT_VARIANTS = ("Original", "CLAHE", "Canny edges", "Diffusion", "Diffusion → CLAHE",
                    "CLAHE + Canny overlay")


def lab_variants(clahe: dict[str, Any], canny: dict[str, Any], diffusion: dict[str, Any],
                 *, overlay_alpha: float = 0.5) -> dict[str, list[dict[str, Any]]]:
    """The variants shown side by side, each a preprocessing spec (list of steps).

    Args:
        clahe, canny, diffusion: complete steps from the sliders
            (``{"op": "clahe", ...}``, ``{"op": "canny", ...}``, ``{"op": "diffusion", ...}``).
        overlay_alpha: edge brightening of the Canny overlay combination.
    """
    overlay = {"op": "canny_overlay", **{k: v for k, v in canny.items() if k != "op"},
               "alpha": overlay_alpha}
    return {
        "Original": [],
        "CLAHE": [clahe],
        "Canny edges": [canny],
        "Diffusion": [diffusion],
        "Diffusion → CLAHE": [diffusion, clahe],
        "CLAHE + Canny overlay": [clahe, overlay],
    }


def fit_image(image: np.ndarray, max_side: int = LAB_MAX_SIDE) -> np.ndarray:
    """Scale an image down (never up) so that its longer side is at most ``max_side``."""
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@st.cache_data(max_entries=64, show_spinner=False)
def _apply(digest: str, spec_key: str, _image: np.ndarray, _spec: list[dict[str, Any]]) -> np.ndarray:
    from fracture.preprocess.pipeline import Pipeline

    return Pipeline.from_spec(_spec)(_image)


def apply_spec(image: np.ndarray, spec: list[dict[str, Any]]) -> np.ndarray:
    """Run a preprocessing spec on an image (cached on pixels and spec).

    Raises:
        PreprocessError: an unknown step or a bad value.
    """
    from fracture.ui.loaders import image_digest

    if not spec:
        return image
    return _apply(image_digest(image), json.dumps(spec, sort_keys=True), image, spec)
