"""Annotated lesion boxes: read them, and map them into a model's input geometry.

A box is ``(x_min, y_min, x_max, y_max)`` normalised to [0, 1] of the
original image (x across, y down), so it survives any resize. The manifest
carries a ``boxes`` column: a tuple of boxes per image, empty where the
source has none (MURA, class folders, normal images). FracAtlas ships YOLO
files (``annotations/YOLO/<image>.txt``: ``class cx cy w h`` per line,
normalised); the demo set's sidecar gives each lesion's centre in pixels,
which becomes a square box of a stated size.

Why a module of its own: the localisation metric, box-guided training, the
gallery and the pages all need the same geometry, and the letterbox padding
is easy to get subtly wrong in four places.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from fracture.data.manifest import DataProblem
from fracture.preprocess.ops import letterbox_geometry

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

YOLO_DIR = ("annotations", "YOLO")
MAX_BOX_FILE_BYTES = 64 * 1024
"""A YOLO label file holds a few lines; anything larger is not one."""

DEMO_FRACTURE_HALF_SIDE = 0.07
"""Half side of a demo fracture's box, as a fraction of the image's long side: the
break line crosses one bone, whose radius is at most ~6% of the long side."""
DEMO_HARDWARE_HALF_SIDE = 0.14
"""Hardware (plates, nails) is longer than a break; its box is twice as large."""


def _clip_box(x0: float, y0: float, x1: float, y1: float) -> Box | None:
    x0, x1 = sorted((min(max(x0, 0.0), 1.0), min(max(x1, 0.0), 1.0)))
    y0, y1 = sorted((min(max(y0, 0.0), 1.0), min(max(y1, 0.0), 1.0)))
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None
    return (round(x0, 6), round(y0, 6), round(x1, 6), round(y1, 6))


def parse_yolo(text: str, source: str, problems: list[DataProblem] | None = None) -> tuple[Box, ...]:
    """Boxes from a YOLO label file's text; malformed lines go to ``problems`` (named by line)."""
    boxes: list[Box] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 5:
                raise ValueError(f"{len(parts)} fields")
            cx, cy, w, h = (float(v) for v in parts[1:])
            if not all(math.isfinite(v) for v in (cx, cy, w, h)):
                raise ValueError("a value is not finite")
        except ValueError as exc:
            if problems is not None:
                problems.append(DataProblem(source, f"line {number}: not a YOLO box 'class cx cy w h' ({exc}); line ignored"))
            continue
        box = _clip_box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if box is None:
            if problems is not None:
                problems.append(DataProblem(source, f"line {number}: box of zero area after clipping to the image; ignored"))
            continue
        boxes.append(box)
    return tuple(boxes)


def read_fracatlas_boxes(folder: Path, image_ids: Iterable[str], problems: list[DataProblem]) -> dict[str, tuple[Box, ...]]:
    """``{image_id: boxes}`` from ``annotations/YOLO/<stem>.txt``; missing files mean no boxes."""
    from fracture.util.files import read_bytes_bounded
    from fracture.errors import FractureError

    yolo_dir = folder.joinpath(*YOLO_DIR)
    out: dict[str, tuple[Box, ...]] = {}
    if not yolo_dir.is_dir():
        return out
    for image_id in image_ids:
        path = yolo_dir / (Path(image_id).stem + ".txt")
        if not path.exists():
            continue
        try:
            text = read_bytes_bounded(path, MAX_BOX_FILE_BYTES).decode("utf-8", errors="replace")
        except (OSError, FractureError) as exc:
            problems.append(DataProblem(str(path), f"box file unreadable ({exc}); image kept without boxes"))
            continue
        boxes = parse_yolo(text, str(path), problems)
        if boxes:
            out[image_id] = boxes
    return out


def demo_boxes(root: Path, paths: Sequence[str]) -> list[tuple[Box, ...]]:
    """Boxes for demo images from the lesion sidecar (centre in pixels -> a square box).

    Hardware gets :data:`DEMO_HARDWARE_HALF_SIDE`, fractures
    :data:`DEMO_FRACTURE_HALF_SIDE` (fractions of the long side). Image sizes
    come from the PNG headers (no decoding).
    """
    from PIL import Image

    from fracture.data.demo import read_fracture_locations
    from fracture.errors import DatasetError

    try:
        table = read_fracture_locations(root)
    except DatasetError as exc:
        logger.warning("demo set without lesion boxes: %s", exc)
        return [() for _ in paths]
    by_path: dict[str, list[Box]] = {}
    for row in table.itertuples(index=False):
        try:
            with Image.open(row.path) as im:
                width, height = im.size
        except OSError:
            continue
        long_side = max(width, height)
        half = (DEMO_HARDWARE_HALF_SIDE if row.kind == "hardware" else DEMO_FRACTURE_HALF_SIDE) * long_side
        box = _clip_box((row.x - half) / width, (row.y - half) / height, (row.x + half) / width, (row.y + half) / height)
        if box is not None:
            by_path.setdefault(str(Path(row.path).resolve()), []).append(box)
    return [tuple(by_path.get(str(Path(p).resolve()), ())) for p in paths]


# --------------------------------------------------------------------------
# Geometry.


def boxes_to_input(boxes: Sequence[Box], original_hw: tuple[int, int], size: int, mode: str = "letterbox") -> tuple[Box, ...]:
    """Boxes (normalised to the original) -> normalised to the ``size`` x ``size`` model input."""
    if mode == "stretch":
        return tuple(tuple(b) for b in boxes)  # type: ignore[misc]
    top, left, new_h, new_w = letterbox_geometry(original_hw[0], original_hw[1], size)
    out = []
    for x0, y0, x1, y1 in boxes:
        out.append(((left + x0 * new_w) / size, (top + y0 * new_h) / size,
                    (left + x1 * new_w) / size, (top + y1 * new_h) / size))
    return tuple(out)


def box_mask(boxes: Sequence[Box], height: int, width: int) -> np.ndarray:
    """A float32 ``(height, width)`` mask: 1 on pixels whose centre lies in any box."""
    mask = np.zeros((height, width), dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        c0 = int(math.floor(x0 * width + 0.5))
        c1 = max(c0 + 1, int(math.ceil(x1 * width - 0.5)))
        r0 = int(math.floor(y0 * height + 0.5))
        r1 = max(r0 + 1, int(math.ceil(y1 * height - 0.5)))
        mask[max(r0, 0):min(r1, height), max(c0, 0):min(c1, width)] = 1.0
    return mask
