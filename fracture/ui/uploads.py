"""Uploaded files to images, in memory, one error per bad file, within a memory budget.

Uploads are never written to disk: the bytes go straight to
:func:`fracture.data.imageio.decode_image`, which checks the format and the
pixel count before decoding. A file that fails is reported with its reason and
the other files of the study are still used, so one bad file never takes the
page down.

What one upload may cost is bounded, because a 30 KB file can decode to
gigabytes: at most ``FRACTURE_MAX_UPLOAD_FILES`` files are read, each image is
kept at most ``FRACTURE_MAX_IMAGE_MEGAPIXELS`` (a larger one is reduced by a
whole factor while it is decoded, with a note), and all images of the upload
together at most ``FRACTURE_MAX_UPLOAD_MEGAPIXELS``; each file's size comes
from its header, so a file past the budget is reported without being decoded.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

import numpy as np

from fracture.data.imageio import MAX_PIXELS, decode_image, read_image_header, reduced_size
from fracture.errors import ImageLoadError
from fracture.gate.radiograph import SourceFacts

#: Extensions the uploader offers (the loader sniffs the real format from the bytes).
UPLOAD_TYPES = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "dcm", "dicom")


class UploadLike(Protocol):
    """What Streamlit's ``UploadedFile`` offers and this module uses."""

    name: str

    def getvalue(self) -> bytes: ...


@dataclass(frozen=True)
class LoadedUpload:
    """One decoded upload: its file name, uint8 grayscale pixels, a content digest and
    notes for the person who sent it (first frame only, reduced to fit the budget)."""

    name: str
    image: np.ndarray
    digest: str
    notes: tuple[str, ...] = ()
    source: Any = None  # what the file said about itself (fracture.gate.radiograph.SourceFacts), for the gate


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
    max_files: int | None = None,
    pixel_budget: int | None = None,
    upload_pixel_budget: int | None = None,
) -> tuple[list[LoadedUpload], list[UploadProblem]]:
    """Decode uploaded files in memory, within the server's limits.

    Args:
        files: Streamlit ``UploadedFile`` objects, or ``(name, bytes)`` pairs.
        max_mb: the largest accepted file in megabytes (the server setting;
            the browser-side limit of the uploader is only a first check).
        max_files: files read at most (default: ``FRACTURE_MAX_UPLOAD_FILES``).
        pixel_budget: pixels each image is kept at at most (default:
            ``FRACTURE_MAX_IMAGE_MEGAPIXELS``); larger images are reduced.
        upload_pixel_budget: pixels all kept images together may have (default:
            ``FRACTURE_MAX_UPLOAD_MEGAPIXELS``).

    Returns:
        The decoded images in upload order, and one problem per file that was
        too large, past the upload's budget or not a readable image
        (``ImageLoadError`` reasons such as ``not_an_image``, ``truncated``,
        ``too_many_pixels``, ``no_pixels``; ``too_large``, ``over_budget``),
        plus one ``too_many_files`` problem for the files past ``max_files``.
    """
    if max_files is None or pixel_budget is None or upload_pixel_budget is None:
        from fracture.settings import get_settings

        settings = get_settings()
        max_files = settings.max_upload_files if max_files is None else max_files
        pixel_budget = settings.max_image_pixels if pixel_budget is None else pixel_budget
        upload_pixel_budget = settings.max_upload_pixels if upload_pixel_budget is None else upload_pixel_budget
    loaded: list[LoadedUpload] = []
    problems: list[UploadProblem] = []
    limit = int(max_mb * 1024 * 1024)
    used = 0
    skipped: list[str] = []
    for index, item in enumerate(files):
        name = item[0] if isinstance(item, tuple) else item.name
        if index >= max_files:  # never read: Streamlit holds the bytes, we do not decode them
            skipped.append(name)
            continue
        data = item[1] if isinstance(item, tuple) else item.getvalue()
        if len(data) > limit:
            problems.append(UploadProblem(
                name, "too_large",
                f"{name}: {len(data) / 1024 / 1024:.1f} MB is over the {max_mb:g} MB upload "
                "limit of this server (FRACTURE_MAX_UPLOAD_MB); downscale or crop it first",
            ))
            continue
        try:
            header = read_image_header(bytes(data), name=name)
            pixels = header.width * header.height
            if pixels <= MAX_PIXELS:  # larger ones are refused by the decoder with their size
                kept_w, kept_h, _ = reduced_size(header.width, header.height, pixel_budget)
                if used + kept_w * kept_h > upload_pixel_budget:
                    problems.append(_over_budget(name, kept_w * kept_h, used, upload_pixel_budget))
                    continue
            decoded = decode_image(bytes(data), name=name, pixel_budget=pixel_budget)
        except ImageLoadError as exc:
            problems.append(UploadProblem(name, exc.reason, str(exc)))
            continue
        used += decoded.image.size
        loaded.append(LoadedUpload(name, decoded.image, hashlib.sha256(data).hexdigest()[:16], decoded.notes,
                                   SourceFacts.of(decoded)))
    if skipped:
        problems.append(UploadProblem(
            skipped[0], "too_many_files",
            f"{len(skipped)} file(s) not read ({_names(skipped)}): one upload may have at most {max_files} files "
            "on this server (FRACTURE_MAX_UPLOAD_FILES); upload the study in parts",
        ))
    return loaded, problems


def _over_budget(name: str, pixels: int, used: int, budget: int) -> UploadProblem:
    return UploadProblem(
        name, "over_budget",
        f"{name}: not decoded: its {pixels / 1e6:.1f} megapixels would take this upload past the "
        f"{budget / 1e6:g} megapixels one upload may hold (FRACTURE_MAX_UPLOAD_MEGAPIXELS; "
        f"{used / 1e6:.1f} used by the files before it); upload fewer or smaller files",
    )


def _names(names: list[str], shown: int = 3) -> str:
    listed = ", ".join(names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")
