"""Dataset readers: each turns one folder layout into a :class:`~fracture.data.manifest.Manifest`.

Every reader has the same shape, ``read_<layout>(root, *, seed=0, ...) -> Manifest``,
and a ``find_<layout>_root(root) -> Path | None`` that says whether ``root``
looks like its layout (used by :func:`fracture.data.detect.open_dataset`).
"""
from __future__ import annotations

from fracture.data.readers.folders import find_folders_root, read_folders
from fracture.data.readers.fracatlas import find_fracatlas_root, read_fracatlas
from fracture.data.readers.mura import find_mura_root, read_mura

__all__ = [
    "find_folders_root",
    "find_fracatlas_root",
    "find_mura_root",
    "read_folders",
    "read_fracatlas",
    "read_mura",
]
