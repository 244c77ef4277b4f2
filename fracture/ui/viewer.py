"""The one X-ray viewer of the app: Predict, the Preprocessing Lab (and the Reader Study may use it).

What a PACS viewer gives a reader, sized for a laptop and a projector: the
image fits the viewport with its controls beside it, zoom and pan (a Plotly
image figure: drag to pan, scroll or box to zoom, double-click to reset),
an *Enlarge* dialog, window/level (brightness/contrast) and invert, the
heatmap's opacity or the X-ray and its heatmap side by side with linked zoom,
and the annotated box on or off. The pixels come from
:func:`fracture.viz.xray.render_view`; this module only draws widgets.

Presentation mode (a sidebar toggle kept in the URL) enlarges the type and
shows one image at a time, for the back of a classroom.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from fracture.viz.xray import MODES, ViewSettings, render_view, xray_figure

PRESENT_KEY = "present"
#: Figure height (px) that keeps an image and its controls in one 1280x720 viewport.
VIEW_HEIGHT = 440
PRESENT_HEIGHT = 620
ENLARGED_HEIGHT = 760
#: Root font size in presentation mode (Streamlit sizes its type in rem).
PRESENT_FONT_PX = 22
#: Space above a viewer page's title (Streamlit's own is 6rem).
TOP_PADDING_REM = 2.5
MODE_LABELS = {"overlay": "blended", "side by side": "side by side", "image only": "hidden"}
#: Scroll to zoom, drag to pan, double-click to reset; no plotly toolbar over the picture (full screen:
#: Streamlit's own element toolbar and the Enlarge button).
PLOTLY_CONFIG = {"displaylogo": False, "scrollZoom": True, "displayModeBar": False, "doubleClick": "reset"}
HEATMAP_HOW_TO_READ = ("Red and yellow: the regions that pushed the probability up most; blue: those that "
                       "mattered least. It shows where the model looked, not where a fracture is.")
JET_STOPS = ("#00007f", "#0000ff", "#007fff", "#00ffff", "#7fff7f", "#ffff00", "#ff7f00", "#ff0000", "#7f0000")


def presentation_mode() -> bool:
    """The sidebar's *Presentation mode* toggle (in the URL); on, it enlarges the page's type."""
    on = st.sidebar.toggle("Presentation mode", key=PRESENT_KEY, bind="query-params",
                           help="Large type and one image at a time, for a projector.")
    tight_top(large_type=bool(on))
    return bool(on)


def tight_top(*, large_type: bool = False) -> None:
    """Less empty space above the title of a viewer page (the X-ray starts higher on a 720 px screen);
    with ``large_type``, presentation mode's larger root font."""
    style = f"[data-testid='stMainBlockContainer'] {{ padding-top: {TOP_PADDING_REM}rem; }}"
    if large_type:
        style += f" html {{ font-size: {PRESENT_FONT_PX}px; }}"
    st.html(f"<style>{style}</style>")


def colour_bar_html() -> str:
    """The heatmap colour scale (low -> high) as a CSS gradient strip with its two ends named."""
    return (f'<div style="height:12px;border-radius:3px;background:linear-gradient(to right, '
            f'{", ".join(JET_STOPS)})"></div>'
            '<div style="display:flex;justify-content:space-between;font-size:0.8em;opacity:0.8">'
            "<span>low attention</span><span>high</span></div>")


def view_controls(key: str, *, heatmap: bool = True, boxes: bool = False, mode: str = "overlay",
                  horizontal: bool = False) -> ViewSettings:
    """Window/level, invert, heatmap view and opacity, box on/off, drawn in the current container.

    Args:
        key: widget key prefix, unique on the page (the settings persist per key).
        heatmap: offer the heatmap controls.
        boxes: offer the box toggle (only when an annotated box is known).
        mode: the heatmap view first offered (one of :data:`MODES`).
        horizontal: in one row above a grid of images (else stacked, for a column beside an image).
    """
    slots = iter(st.columns(5 if heatmap else 3)) if horizontal else None

    def place():
        return next(slots) if slots is not None else st.container()

    default_mode, mode = mode, "image only"
    opacity = 0.45
    if heatmap:
        mode = place().radio("Heatmap", MODES, index=MODES.index(default_mode), key=f"{key}-mode",
                             format_func=MODE_LABELS.get,  # a list: a narrow column never cuts a choice
                             help="Blend it over the X-ray, or the X-ray and its heatmap side by side "
                                  "(zoom and pan move both).")
        opacity = place().slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key=f"{key}-opacity",
                                 disabled=mode == "image only")
    brightness = place().slider("Brightness (level)", -0.5, 0.5, 0.0, 0.05, key=f"{key}-level",
                                help="Window centre: move it to lighten or darken the image.")
    contrast = place().slider("Contrast (window)", 0.5, 4.0, 1.0, 0.1, key=f"{key}-contrast",
                              help="Above 1 narrows the grey window: more contrast, clipped ends.")
    last = place()
    invert = last.toggle("Invert", key=f"{key}-invert", help="Bone dark on white, as some films show it.")
    show_boxes = last.toggle("Annotated box", value=True, key=f"{key}-boxes") if boxes else False
    return ViewSettings(level=0.5 - brightness, width=1.0 / contrast, invert=invert, opacity=opacity,
                        mode=mode, boxes=show_boxes)


@st.dialog("X-ray", width="large")
def _enlarged(image: np.ndarray, heatmap: np.ndarray | None, settings: ViewSettings, boxes: Sequence,
              caption: str, titles: Sequence[str]) -> None:
    st.plotly_chart(xray_figure(render_view(image, heatmap, settings, boxes), height=ENLARGED_HEIGHT,
                                titles=titles, max_side=2048), config=PLOTLY_CONFIG)
    st.caption(caption)


def show_xray(image: np.ndarray, heatmap: np.ndarray | None, settings: ViewSettings, *, key: str,
              caption: str, heatmap_label: str | None = None, boxes: Sequence = (),
              height: int | None = None, enlarge: bool = True) -> None:
    """Draw one X-ray as the settings say, with its caption and an *Enlarge* button.

    Args:
        heatmap_label: the heatmap method actually used (named in the caption).
        boxes: normalised annotated fracture boxes (drawn when ``settings.boxes``).
        height: figure height in px (default: :data:`VIEW_HEIGHT`).
    """
    panels = render_view(image, heatmap, settings, boxes)
    titles = ("X-ray", heatmap_label or "heatmap") if len(panels) == 2 else ()
    st.plotly_chart(xray_figure(panels, height=height or VIEW_HEIGHT, titles=titles),
                    key=f"{key}-figure", config=PLOTLY_CONFIG)
    notes = [caption]
    if heatmap is not None and settings.mode != "image only" and heatmap_label:
        notes.append(f"heatmap: {heatmap_label}")
    if settings.boxes and len(boxes):
        notes.append("green box: annotated fracture")
    st.caption(" · ".join(notes))
    if enlarge and st.button("Enlarge", icon=":material/fullscreen:", type="tertiary", key=f"{key}-enlarge",
                             help="A larger view in a dialog (the chart's own full-screen button works too)"):
        _enlarged(image, heatmap, settings, boxes, " · ".join(notes), titles)


def heatmap_legend() -> None:
    """The colour scale and how to read a heatmap (once per page, not once per image)."""
    scale, text = st.columns([1, 3], vertical_alignment="center")
    scale.markdown(colour_bar_html(), unsafe_allow_html=True)
    text.caption(HEATMAP_HOW_TO_READ)


def xray_viewer(image: np.ndarray, heatmap: np.ndarray | None = None, *, key: str, caption: str,
                heatmap_label: str | None = None, boxes: Sequence = (), height: int | None = None) -> ViewSettings:
    """One X-ray with its controls beside it (the layout for a single image).

    Returns:
        The settings chosen (so a page can render a download with them).
    """
    picture, controls = st.columns([3, 1])
    with controls:
        settings = view_controls(key, heatmap=heatmap is not None, boxes=bool(len(boxes)))
    with picture:
        show_xray(image, heatmap, settings, key=key, caption=caption, heatmap_label=heatmap_label,
                  boxes=boxes, height=height)
    return settings


def grid_columns(n_images: int, *, present: bool = False) -> int:
    """Images per row: one in presentation mode or for a single image, two otherwise (never overlapping:
    every figure takes its column's width)."""
    return 1 if present or n_images <= 1 else 2
