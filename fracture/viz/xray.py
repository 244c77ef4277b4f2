"""What the X-ray viewer draws, as pure array maths (no streamlit, no torch).

A PACS viewer lets a reader change window/level (brightness and contrast),
invert the image, fade a heatmap in and out and hide the annotation box; the
page only picks the settings (:class:`ViewSettings`) and shows the array
:func:`render_view` returns, so the same pixels come out of a test, the CLI
or any page. :func:`xray_figure` wraps them in a Plotly image figure, which
gives zoom and pan for free.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fracture.errors import PreprocessError
from fracture.explain.annotate import draw_boxes  # the one box drawing (annotate owns it)

#: The heatmap colours (OpenCV's "jet", the scale the colour bar under a heatmap names).
HEATMAP_COLORMAP = cv2.COLORMAP_JET
#: Longest side a panel is sent to the browser at (zooming in further shows its pixels).
DISPLAY_MAX_SIDE = 1280
#: How the heatmap is shown: blended over the X-ray, or the X-ray and its heatmap side by side.
MODES = ("overlay", "side by side", "image only")


@dataclass(frozen=True)
class ViewSettings:
    """How one X-ray is shown.

    Attributes:
        level: window centre as a fraction of the grey range (0.5: mid grey).
        width: window width as a fraction of the grey range (1.0: the whole range;
            smaller stretches the contrast).
        invert: black bone on white (as MONOCHROME1 films show it).
        opacity: heatmap weight in the blend (0: the X-ray only, 1: the heatmap only).
        mode: one of :data:`MODES`.
        boxes: draw the annotated fracture box(es).
    """

    level: float = 0.5
    width: float = 1.0
    invert: bool = False
    opacity: float = 0.45
    mode: str = "overlay"
    boxes: bool = True

    def __post_init__(self) -> None:
        if not (0.0 <= self.level <= 1.0 and 0.0 < self.width <= 2.0 and 0.0 <= self.opacity <= 1.0):
            raise PreprocessError(
                f"view settings out of range: level {self.level} (0..1), width {self.width} (0..2], "
                f"opacity {self.opacity} (0..1)")
        if self.mode not in MODES:
            raise PreprocessError(f"unknown view mode {self.mode!r}; choose one of {', '.join(MODES)}")


def _check_gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise PreprocessError(f"the viewer shows a uint8 (H, W) grayscale image, got {image.dtype} {image.shape}")
    return image


def window_level(image: np.ndarray, level: float = 0.5, width: float = 1.0) -> np.ndarray:
    """Map the grey window ``[level - width/2, level + width/2]`` (fractions of 0..255) onto 0..255.

    Values below the window go black, above it white; ``level=0.5, width=1``
    returns the image unchanged.
    """
    image = _check_gray(image)
    if not 0.0 < width:
        raise PreprocessError(f"window width must be positive, got {width}")
    if level == 0.5 and width == 1.0:
        return image
    low = (level - width / 2.0) * 255.0
    scale = 255.0 / (width * 255.0)
    lut = np.clip((np.arange(256, dtype=np.float32) - low) * scale, 0, 255).round().astype(np.uint8)
    return lut[image]


def invert(image: np.ndarray) -> np.ndarray:
    """The negative of a uint8 image."""
    return 255 - _check_gray(image)


def heatmap_rgb(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A [0, 1] heatmap coloured with :data:`HEATMAP_COLORMAP`, resized to ``shape`` (H, W); uint8 RGB."""
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if heat.ndim != 2:
        raise PreprocessError(f"a heatmap is (H, W), got shape {heat.shape}")
    if heat.shape != tuple(shape):
        heat = cv2.resize(heat, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    coloured = cv2.applyColorMap(np.uint8(np.round(heat * 255)), HEATMAP_COLORMAP)
    return cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)


def blend(image_rgb: np.ndarray, overlay_rgb: np.ndarray, opacity: float) -> np.ndarray:
    """``opacity * overlay + (1 - opacity) * image`` on uint8 RGB arrays of one shape."""
    if image_rgb.shape != overlay_rgb.shape:
        raise PreprocessError(f"blend needs one shape, got {image_rgb.shape} and {overlay_rgb.shape}")
    return cv2.addWeighted(overlay_rgb, float(opacity), image_rgb, 1.0 - float(opacity), 0.0)


def adjusted(image: np.ndarray, settings: ViewSettings) -> np.ndarray:
    """The grayscale image after window/level and invert (uint8 (H, W))."""
    shown = window_level(image, settings.level, settings.width)
    return invert(shown) if settings.invert else shown


def render_view(image: np.ndarray, heatmap: np.ndarray | None, settings: ViewSettings,
                boxes: Sequence[Sequence[float]] = ()) -> list[np.ndarray]:
    """The panel(s) the viewer shows, as uint8 RGB arrays.

    One panel ("overlay": the heatmap blended at ``settings.opacity``; "image
    only"), or two ("side by side": the adjusted X-ray, then the heatmap at
    full strength over it at ``max(opacity, 0.5)``). Boxes go on every panel
    when ``settings.boxes``. Without a heatmap every mode shows the X-ray alone.
    """
    gray = adjusted(image, settings)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    panels = [base]
    if heatmap is not None and settings.mode != "image only":
        coloured = heatmap_rgb(heatmap, gray.shape)
        if settings.mode == "overlay":
            panels = [blend(base, coloured, settings.opacity)]
        else:
            panels = [base, blend(base, coloured, max(settings.opacity, 0.5))]
    if settings.boxes and len(boxes):
        panels = [draw_boxes(panel, boxes) for panel in panels]
    return panels


def png_data_uri(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> str:
    """A uint8 image as a ``data:image/png;base64`` URI, shrunk to ``max_side`` (a figure carries
    the picture once as PNG, not as a JSON list of millions of numbers)."""
    h, w = image.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise PreprocessError(f"cannot encode an array of shape {image.shape} as PNG")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def xray_figure(panels: Sequence[np.ndarray], *, height: int = 520, titles: Sequence[str] = (),
                max_side: int = DISPLAY_MAX_SIDE) -> go.Figure:
    """A Plotly figure of one or two image panels with linked zoom and pan, no axes, no margins.

    Args:
        panels: uint8 RGB arrays (from :func:`render_view`).
        height: figure height in px; the width follows the container.
        titles: one short title per panel (optional).
        max_side: longest side, in pixels, a panel is sent to the browser at.
    """
    if not 1 <= len(panels) <= 2:
        raise PreprocessError(f"the viewer draws one or two panels, got {len(panels)}")
    titles = list(titles) + [""] * (len(panels) - len(titles))
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.01,
                        subplot_titles=titles if any(titles) else None)
    for column, panel in enumerate(panels, start=1):
        fig.add_trace(go.Image(source=png_data_uri(panel, max_side), hoverinfo="skip"), row=1, col=column)
    fig.update_xaxes(visible=False, matches="x", constrain="domain")
    fig.update_yaxes(visible=False, matches="y", scaleanchor="x", scaleratio=1, constrain="domain")
    top = 28 if any(titles) else 0
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=top, b=0), dragmode="pan",
                      paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    return fig
