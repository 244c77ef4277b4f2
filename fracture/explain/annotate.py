"""Draw the annotated fracture boxes on an image or its heatmap overlay.

Shown next to the heatmap, the truth lets a class see at a glance whether the
model looks where the fracture is. Boxes are ``(x_min, y_min, x_max, y_max)``
normalised to the original image (:mod:`fracture.data.boxes`), so they are
drawn on anything that has the original's aspect: the radiograph, the overlay
(:func:`fracture.explain.gradcam.overlay_heatmap`), or a resized copy.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from fracture.errors import ModelError

BOX_COLOR = (0, 255, 0)
"""RGB green: distinct from every colour of the jet/turbo heatmap's hot end."""
OUTLINE_COLOR = (0, 0, 0)


def draw_boxes(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]],
    *,
    color: tuple[int, int, int] = BOX_COLOR,
    thickness: int | None = None,
) -> np.ndarray:
    """A copy of ``image`` with each box drawn as a rectangle (dark outline, coloured line).

    Args:
        image: uint8 (H, W) grayscale or (H, W, 3) RGB.
        boxes: normalised boxes; with none, ``image`` itself is returned (any shape).
        color: RGB line colour.
        thickness: line width in pixels (default: ~0.6% of the longer side, at least 2).

    Returns:
        uint8 (H, W, 3) RGB (``image`` unchanged when there are no boxes).

    Raises:
        ModelError: an image that is not uint8 (H, W) or (H, W, 3), or a box
            without four finite coordinates.
    """
    image = np.asarray(image)
    if len(boxes) == 0:
        return image
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ModelError(f"boxes are drawn on a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    h, w = out.shape[:2]
    line = thickness or max(2, round(0.006 * max(h, w)))
    for box in boxes:
        coords = [float(v) for v in box]
        if len(coords) != 4 or not np.all(np.isfinite(coords)):
            raise ModelError(f"a box is (x_min, y_min, x_max, y_max) normalised to [0, 1], got {box!r}")
        x0, y0, x1, y1 = coords
        p0 = (int(round(min(x0, x1) * (w - 1))), int(round(min(y0, y1) * (h - 1))))
        p1 = (int(round(max(x0, x1) * (w - 1))), int(round(max(y0, y1) * (h - 1))))
        cv2.rectangle(out, p0, p1, OUTLINE_COLOR, line + 2, lineType=cv2.LINE_AA)
        cv2.rectangle(out, p0, p1, color, line, lineType=cv2.LINE_AA)
    return out
