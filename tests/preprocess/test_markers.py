"""Burn-in stamps: a fixed bank, and a paste that reports exactly where it drew."""
from __future__ import annotations

import numpy as np
import pytest

from fracture.preprocess.markers import LABEL_TEXTS, MARKER_TEXTS, paste_stamp, render_stamp, scaled_mask, stamp_bank


def test_stamp_bank_is_the_same_every_time_it_is_built():
    first = stamp_bank("all")
    stamp_bank.cache_clear()
    second = stamp_bank("all")
    assert first is not second  # really rebuilt, not the cached tuple
    assert [s.text for s in first] == [s.text for s in second]
    assert all(np.array_equal(a.mask, b.mask) and a.boxed == b.boxed for a, b in zip(first, second))
    assert [s.text for s in first] == [s.text for s in stamp_bank("marker") + stamp_bank("text")]
    assert {s.text for s in stamp_bank("marker")} == set(MARKER_TEXTS)
    assert {s.text for s in stamp_bank("text")} == set(LABEL_TEXTS)
    for stamp in first:
        assert stamp.mask.dtype == np.float32 and 0.0 <= stamp.mask.min() and stamp.mask.max() <= 1.0
        # cropped to its ink: every border row and column carries some
        assert stamp.mask[0].any() and stamp.mask[-1].any() and stamp.mask[:, 0].any() and stamp.mask[:, -1].any()


def test_scaled_mask_has_the_asked_height_and_keeps_the_aspect():
    stamp = render_stamp("LAT")
    h, w = stamp.mask.shape
    mask = scaled_mask(stamp, 20)
    assert mask.shape[0] == 20 and abs(mask.shape[1] - w * 20 / h) <= 1
    assert scaled_mask(stamp, 0).shape[0] == 2  # never thinner than 2 px


@pytest.mark.parametrize("value", [255, 0])
def test_paste_returns_the_box_it_drew_in(value):
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (90, 160), dtype=np.uint8)
    original = image.copy()
    for stamp in stamp_bank("all")[::7]:
        out, (x0, y0, x1, y1) = paste_stamp(image, stamp, height=24, x=13, y=21, value=value)
        ys, xs = np.nonzero(out != image)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert (x0, y0, y1 - y0) == (13, 21, 24)
        inside = out[y0:y1, x0:x1].astype(int) - image[y0:y1, x0:x1]
        assert (inside >= 0).all() if value == 255 else (inside <= 0).all()
    assert np.array_equal(image, original)  # the caller's image is never drawn on


def test_paste_clips_at_the_edges_and_outside_draws_nothing():
    image = np.zeros((40, 40), np.uint8)
    stamp = render_stamp("R")
    out, box = paste_stamp(image, stamp, height=20, x=-5, y=30)
    ys, xs = np.nonzero(out)
    assert box == (0, 30, box[2], 40) and (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == box
    out, box = paste_stamp(image, stamp, height=20, x=50, y=5)
    assert not out.any() and box[0] == box[2] and out is not image
