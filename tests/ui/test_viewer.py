"""The X-ray viewer's image maths (fracture.viz.xray) and figure: window/level, invert, heatmap, boxes."""
from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from fracture.errors import PreprocessError
from fracture.viz.xray import ViewSettings, heatmap_rgb, invert, render_view, window_level, xray_figure

RAMP = np.tile(np.arange(256, dtype=np.uint8), (4, 1))  # every grey level once per row


def test_window_level_maps_the_window_onto_the_full_range():
    assert window_level(RAMP) is RAMP  # the default window is the identity
    narrow = window_level(RAMP, level=0.5, width=0.5)  # window 63.75 .. 191.25
    assert narrow[0, 0] == 0 and narrow[0, 63] == 0, "below the window: black"
    assert narrow[0, 192] == 255 and narrow[0, 255] == 255, "above it: white"
    assert abs(int(narrow[0, 128]) - 128) <= 1, "the window centre stays mid grey"
    assert np.all(np.diff(narrow[0].astype(int)) >= 0), "monotone"
    darker = window_level(RAMP, level=0.7, width=1.0)
    assert darker[0, 128] < 128, "a higher window centre darkens"


def test_invert_and_bad_inputs():
    assert np.array_equal(invert(RAMP)[0], 255 - np.arange(256))
    with pytest.raises(PreprocessError, match="uint8"):
        window_level(RAMP.astype(np.float32))
    with pytest.raises(PreprocessError, match="out of range"):
        ViewSettings(opacity=1.5)
    with pytest.raises(PreprocessError, match="unknown view mode"):
        ViewSettings(mode="3d")


def test_render_view_blends_the_heatmap_as_the_settings_say():
    image = np.full((40, 60), 100, np.uint8)
    heat = np.zeros((10, 15), np.float32)
    heat[:5] = 1.0  # hot top half
    base, = render_view(image, heat, ViewSettings(opacity=0.0))
    assert np.array_equal(base, np.full((40, 60, 3), 100, np.uint8)), "opacity 0: the X-ray alone"
    full, = render_view(image, heat, ViewSettings(opacity=1.0))
    assert np.array_equal(full, heatmap_rgb(heat, (40, 60))), "opacity 1: the heatmap alone"
    assert full[2, 30, 0] > 100 and full[38, 30, 2] > 100, "hot top is red, cold bottom blue (jet)"
    left, right = render_view(image, heat, ViewSettings(mode="side by side", opacity=0.2))
    assert np.array_equal(left, base) and not np.array_equal(right, base)
    only, = render_view(image, heat, ViewSettings(mode="image only", invert=True))
    assert np.all(only == 155), "image only + invert: 255 - 100, no heatmap"
    no_map, = render_view(image, None, ViewSettings(mode="side by side"))
    assert no_map.shape == (40, 60, 3)


def test_boxes_are_drawn_only_when_switched_on():
    image = np.full((50, 50), 30, np.uint8)
    box = [(0.2, 0.2, 0.8, 0.8)]
    on, = render_view(image, None, ViewSettings(boxes=True), box)
    off, = render_view(image, None, ViewSettings(boxes=False), box)
    green = (on[..., 1] == 255) & (on[..., 0] < 50)
    assert green.sum() > 20 and green[10, 10:40].any(), "a green line along the box's top edge"
    assert np.all(off == 30)


def test_xray_figure_links_zoom_and_carries_each_panel_once():
    panels = render_view(RAMP, np.ones((4, 256), np.float32), ViewSettings(mode="side by side"))
    fig = xray_figure(panels, height=300, titles=("X-ray", "Grad-CAM"))
    images = [t for t in fig.data if t.type == "image"]
    assert len(images) == 2 and fig.layout.height == 300
    assert fig.layout.xaxis2.matches == "x" and fig.layout.yaxis2.matches == "y", "zoom/pan move both panels"
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(images[0].source.split(",", 1)[1]), np.uint8),
                           cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (4, 256, 3)
    big = xray_figure([np.zeros((3000, 1500, 3), np.uint8)], max_side=600)
    small = cv2.imdecode(np.frombuffer(base64.b64decode(big.data[0].source.split(",", 1)[1]), np.uint8),
                         cv2.IMREAD_UNCHANGED)
    assert small.shape[:2] == (600, 300), "sent shrunk to max_side, aspect kept"


def test_the_model_card_table_never_prints_none():
    from fracture.ui.widgets import metric_table

    table = metric_table([{"split": "val", "level": "image", "roc_auc": 0.81234, "n": 40.0, "f1": None}])
    assert table.loc[0, "roc_auc"] == "0.812" and table.loc[0, "n"] == "40" and table.loc[0, "f1"] == "–"
    assert "None" not in table.to_string()
