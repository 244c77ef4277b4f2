"""Radiograph burn-ins: L/R lead markers and text labels, as pure uint8 stamps.

Real radiographs carry lead side markers ("L", "R"), technologist initials
and printed labels. Networks learn to read them instead of the bone (the
classic shortcut: a hospital's marker style predicts its disease rate). One
home for drawing them, so the training augmentation that teaches the model to
ignore them and the shortcut lab that measures whether it does paste the same
kind of thing.

A stamp is a float mask in [0, 1] (the glyph's coverage); :func:`paste_stamp`
burns it into a uint8 image at a given place, bright (lead marker) or dark.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

MARKER_TEXTS = ("L", "R", "LT", "RT", "L", "R")
"""Lead side markers; L and R twice, as they are the common ones."""
LABEL_TEXTS = ("AP", "LAT", "PA", "OBL", "WB", "ER", "A12", "2", "7", "SUPINE", "PORTABLE", "HOSP 3")
"""Printed labels and initials of the kind burnt into digitised films."""
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX,
          cv2.FONT_HERSHEY_PLAIN)
_STAMP_HEIGHT = 48


@dataclass(frozen=True)
class Stamp:
    """One glyph mask (float32 in [0, 1], tight box) and what it says."""

    text: str
    mask: np.ndarray
    boxed: bool


def render_stamp(text: str, font: int = 0, thickness: int = 3, boxed: bool = False) -> Stamp:
    """Draw ``text`` white-on-black at ~48 px height and crop it to its ink (a box frame if ``boxed``)."""
    face = _FONTS[font % len(_FONTS)]
    scale = cv2.getFontScaleFromHeight(face, _STAMP_HEIGHT, thickness)
    (width, height), baseline = cv2.getTextSize(text, face, scale, thickness)
    pad = 8
    canvas = np.zeros((height + baseline + 2 * pad, width + 2 * pad), np.uint8)
    cv2.putText(canvas, text, (pad, pad + height), face, scale, 255, thickness, cv2.LINE_AA)
    if boxed:
        cv2.rectangle(canvas, (1, 1), (canvas.shape[1] - 2, canvas.shape[0] - 2), 255, max(2, thickness - 1))
    ys, xs = np.nonzero(canvas)
    crop = canvas[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    return Stamp(text, crop.astype(np.float32) / 255.0, boxed)


@lru_cache(maxsize=4)
def stamp_bank(kind: str = "all") -> tuple[Stamp, ...]:
    """Every stamp of a kind (``marker``, ``text`` or ``all``) in every font: a fixed, ordered bank."""
    texts = {"marker": MARKER_TEXTS, "text": LABEL_TEXTS, "all": MARKER_TEXTS + LABEL_TEXTS}[kind]
    stamps = []
    for i, text in enumerate(texts):
        for font in range(len(_FONTS)):
            stamps.append(render_stamp(text, font=font, thickness=2 + (i + font) % 3, boxed=(i + font) % 4 == 0))
    return tuple(stamps)


def scaled_mask(stamp: Stamp, height: int) -> np.ndarray:
    """The stamp's mask resized to ``height`` pixels tall (aspect kept, at least 1 px wide)."""
    h, w = stamp.mask.shape
    height = max(2, int(height))
    width = max(1, round(w * height / h))
    return cv2.resize(stamp.mask, (width, height), interpolation=cv2.INTER_AREA)


def paste_stamp(image: np.ndarray, stamp: Stamp, *, height: int, x: int, y: int,
                value: int = 255, opacity: float = 1.0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Burn ``stamp`` into a copy of a uint8 grayscale image with its top-left corner at (x, y).

    Returns the new image and the stamp's box ``(x0, y0, x1, y1)`` in pixels
    (clipped to the image), so a caller can ask whether a heatmap's maximum
    landed on it.
    """
    mask = scaled_mask(stamp, height) * float(opacity)
    out = image.astype(np.float32, copy=True)
    h, w = mask.shape
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(image.shape[1], x + w), min(image.shape[0], y + h)
    if x1 <= x0 or y1 <= y0:
        return image.copy(), (x0, y0, x0, y0)
    m = mask[y0 - y: y1 - y, x0 - x: x1 - x]
    out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1.0 - m) + float(value) * m
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), (x0, y0, x1, y1)
