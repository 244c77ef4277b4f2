"""Data layer: one safe image loader, dataset readers into one manifest table, splits, statistics.

Nothing here imports torch or streamlit, so the CLI and the Data page can use
it cheaply.
"""
from __future__ import annotations

from fracture.data.detect import detect_layout, open_dataset
from fracture.data.imageio import MAX_PIXELS, DecodedImage, ImageHeader, decode_image, load_image, read_image_header
from fracture.data.manifest import MANIFEST_COLUMNS, SPLITS, DataProblem, Manifest, validate_frame
from fracture.data.stats import DatasetStats, dataset_stats, intensity_histogram

__all__ = [
    "MANIFEST_COLUMNS",
    "MAX_PIXELS",
    "SPLITS",
    "DataProblem",
    "DatasetStats",
    "DecodedImage",
    "ImageHeader",
    "Manifest",
    "dataset_stats",
    "decode_image",
    "detect_layout",
    "intensity_histogram",
    "load_image",
    "open_dataset",
    "read_image_header",
    "validate_frame",
]
