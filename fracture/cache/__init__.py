"""Caches that let training and evaluation skip repeated work.

``ImageCache`` holds every image already decoded, preprocessed and resized,
as one memory-mapped uint8 array per (file list, pipeline spec).
"""
from __future__ import annotations

from fracture.cache.images import (
    CACHE_FORMAT_VERSION,
    ImageCache,
    ImageFailure,
    cache_info,
    clear_cache,
    compute_cache_key,
    default_cache_root,
)

__all__ = [
    "CACHE_FORMAT_VERSION",
    "ImageCache",
    "ImageFailure",
    "cache_info",
    "clear_cache",
    "compute_cache_key",
    "default_cache_root",
]
