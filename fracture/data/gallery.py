"""The shipped gallery: a few real radiographs (FracAtlas, CC BY 4.0) inside the package.

A fresh machine has no real dataset, and the shipped model is trained on
FracAtlas: without these, Predict and the Preprocessing Lab could only show a
real model's opinion of synthetic drawings. The gallery lives in
``fracture/gallery/`` (images, ``gallery.json``, the attribution README) and is
written by ``python -m fracture.gallery.build`` from the project's own test
split, so no shipped image was seen in training.

``gallery.json``::

    {"format": 1, "dataset": "fracatlas", "split": "test", "split_seed": 0, ...,
     "items": [{"file": "images/IMG0000123.jpg", "source_id": "IMG0000123.jpg",
                "label": 1, "body_part": "hand", "boxes": [[x0, y0, x1, y1], ...]}, ...]}

Boxes are ``(x_min, y_min, x_max, y_max)`` normalised to [0, 1] of the image
(see :mod:`fracture.data.boxes`), so they hold for the downscaled copies.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from fracture.data.boxes import Box
from fracture.errors import DatasetError

GALLERY_DIR = Path(__file__).resolve().parent.parent / "gallery"
"""Where the shipped gallery lives (``fracture/gallery``)."""
INDEX_NAME = "gallery.json"
FORMAT_VERSION = 1
CLASS_NAMES = ("not fractured", "fractured")
"""FracAtlas's label names (as the FracAtlas reader names them)."""


@dataclass(frozen=True)
class GalleryItem:
    """One shipped radiograph.

    Attributes:
        path: the JPEG inside the gallery folder.
        label: 1 fractured, 0 not fractured (FracAtlas's ``fractured`` column).
        body_part: FracAtlas region (hand, leg, hip, shoulder, mixed).
        boxes: the fracture boxes, normalised ``(x0, y0, x1, y1)``; empty for label 0.
        source_id: the original FracAtlas file name.
    """

    path: Path
    label: int
    body_part: str
    boxes: tuple[Box, ...]
    source_id: str

    @property
    def key(self) -> str:
        """A short, URL-safe id (the FracAtlas stem, e.g. ``IMG0000123``)."""
        return Path(self.source_id).stem

    @property
    def label_name(self) -> str:
        return CLASS_NAMES[self.label]

    def describe(self) -> str:
        """``IMG0000123 · hand · fractured (1 box)`` for pickers and captions."""
        boxes = f" ({len(self.boxes)} box{'es' if len(self.boxes) != 1 else ''})" if self.boxes else ""
        return f"{self.key} · {self.body_part} · {self.label_name}{boxes}"


def load_gallery(folder: str | os.PathLike[str] | None = None) -> list[GalleryItem]:
    """Read the gallery index (the shipped one by default).

    Args:
        folder: a folder holding ``gallery.json`` and the images it names.

    Returns:
        The items in the index's order (fractured first, then by body part).

    Raises:
        DatasetError: the index is missing or malformed, or names an image
            that is not there; the message names the file and the entry.
    """
    folder = Path(folder) if folder is not None else GALLERY_DIR
    index = folder / INDEX_NAME
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{index}: no gallery index; build it with `python -m fracture.gallery.build`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{index}: unreadable gallery index ({exc}); rebuild it with "
                           "`python -m fracture.gallery.build`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION or not isinstance(data.get("items"), list):
        raise DatasetError(f"{index}: not a format-{FORMAT_VERSION} gallery index (needs 'format' and 'items')")
    items = [_item(folder, index, number, entry) for number, entry in enumerate(data["items"])]
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise DatasetError(f"{index}: an image is listed twice")
    return items


def _item(folder: Path, index: Path, number: int, entry: object) -> GalleryItem:
    where = f"{index}: items[{number}]"
    if not isinstance(entry, dict):
        raise DatasetError(f"{where} is not an object")
    try:
        file, source_id = str(entry["file"]), str(entry["source_id"])
        label, body_part = entry["label"], str(entry["body_part"])
        raw_boxes = entry.get("boxes", [])
    except KeyError as exc:
        raise DatasetError(f"{where} lacks {exc}; each item needs file, source_id, label, body_part") from None
    if label not in (0, 1) or isinstance(label, bool):
        raise DatasetError(f"{where}: label must be 0 or 1, got {label!r}")
    path = (folder / file).resolve()
    if folder.resolve() not in path.parents or not path.is_file():
        raise DatasetError(f"{where}: image {file!r} is not a file inside {folder}")
    boxes: list[Box] = []
    for box in raw_boxes if isinstance(raw_boxes, list) else [None]:
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1 for v in box)
                or not (box[0] < box[2] and box[1] < box[3])):
            raise DatasetError(f"{where}: box {box!r} is not [x0, y0, x1, y1] normalised to [0, 1]")
        boxes.append(tuple(float(v) for v in box))  # type: ignore[arg-type]
    return GalleryItem(path=path, label=int(label), body_part=body_part, boxes=tuple(boxes), source_id=source_id)
