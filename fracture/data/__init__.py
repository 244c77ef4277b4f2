"""Data layer: one safe image loader, dataset readers into one manifest table, splits, statistics.

Nothing here imports torch or streamlit. The names below are lazy re-exports (PEP 562), so a
one-image ``predict`` that needs only the loader (:mod:`fracture.data.imageio`) does not import
pandas and every dataset reader through this package.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "detect_layout": "detect", "open_dataset": "detect",
    "MAX_PIXELS": "imageio", "DecodedImage": "imageio", "ImageHeader": "imageio", "decode_image": "imageio",
    "load_image": "imageio", "read_image_header": "imageio",
    "MANIFEST_COLUMNS": "manifest", "SPLITS": "manifest", "DataProblem": "manifest", "Manifest": "manifest",
    "validate_frame": "manifest",
    "DatasetStats": "stats", "dataset_stats": "stats", "intensity_histogram": "stats",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'fracture.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fracture.data.{_HOMES[name]}"), name)


__all__ = sorted(_HOMES)
