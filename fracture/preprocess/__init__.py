"""Preprocessing: pure uint8 operations, named pipelines, and tensor conversion.

Importing this package does not import torch (``tensor`` imports it inside
its functions).
"""
from __future__ import annotations

from fracture.preprocess.ops import (
    anisotropic_diffusion,
    canny_channel,
    canny_edges,
    canny_overlay,
    clahe,
    normalize_intensity,
    resize_square,
)
from fracture.preprocess.pipeline import OPS, PRESETS, Pipeline, Step, list_ops, list_presets
from fracture.preprocess.tensor import IMAGENET_MEAN, IMAGENET_STD, denormalize, to_batch, to_tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPS",
    "PRESETS",
    "Pipeline",
    "Step",
    "anisotropic_diffusion",
    "canny_channel",
    "canny_edges",
    "canny_overlay",
    "clahe",
    "denormalize",
    "list_ops",
    "list_presets",
    "normalize_intensity",
    "resize_square",
    "to_batch",
    "to_tensor",
]
