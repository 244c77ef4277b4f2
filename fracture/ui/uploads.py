"""Uploaded files to images, in memory, one error per bad file.

Uploads are never written to disk: the bytes go straight to
:func:`fracture.data.load_image`, which checks the format and the pixel count
before decoding. A file that fails is reported with its reason and the other
files of the study are still used, so one bad file never takes the page down.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np

from fracture.data.imageio import load_image
from fracture.errors import ImageLoadError

#: Extensions the uploader offers (the loader sniffs the real format from the bytes).
UPLOAD_TYPES = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "dcm", "dicom")


class UploadLike(Protocol):
    """What Streamlit's ``UploadedFile`` offers and this module uses."""

    name: str

    def getvalue(self) -> bytes: ...


@dataclass(frozen=True)
class LoadedUpload:
    """One decoded upload: its file name, uint8 grayscale pixels and a content digest."""

    name: str
    image: np.ndarray
    digest: str


@dataclass(frozen=True)
class UploadProblem:
    """One upload that could not be used, with a message for the person who sent it."""

    name: str
    reason: str
    message: str


def read_uploads(
    files: Iterable[UploadLike | tuple[str, bytes]],
    *,
    max_mb: float,
) -> tuple[list[LoadedUpload], list[UploadProblem]]:
    """Decode uploaded files in memory.

    Args:
        files: Streamlit ``UploadedFile`` objects, or ``(name, bytes)`` pairs.
        max_mb: the largest accepted file in megabytes (the server setting;
            the browser-side limit of the uploader is only a first check).

    Returns:
        The decoded images in upload order, and one problem per file that was
        too large or not a readable image (``ImageLoadError`` reasons such as
        ``not_an_image``, ``truncated``, ``too_many_pixels``, ``no_pixels``).
    """
    loaded: list[LoadedUpload] = []
    problems: list[UploadProblem] = []
    limit = int(max_mb * 1024 * 1024)
    for item in files:
        if isinstance(item, tuple):
            name, data = item
        else:
            name, data = item.name, item.getvalue()
        if len(data) > limit:
            problems.append(UploadProblem(
                name, "too_large",
                f"{name}: {len(data) / 1024 / 1024:.1f} MB is over the {max_mb:g} MB upload "
                "limit of this server (FRACTURE_MAX_UPLOAD_MB); downscale or crop it first",
            ))
            continue
        try:
            image = load_image(bytes(data), name=name)
        except ImageLoadError as exc:
            problems.append(UploadProblem(name, exc.reason, str(exc)))
            continue
        loaded.append(LoadedUpload(name, image, hashlib.sha256(data).hexdigest()[:16]))
    return loaded, problems
