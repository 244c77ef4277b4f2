"""One safe image loader for radiographs: files or uploaded bytes to uint8 grayscale.

Every image the project touches (dataset files, uploads on the Predict page,
CLI arguments) goes through :func:`load_image`, so that a broken file fails the
same way everywhere: one :class:`~fracture.errors.ImageLoadError` that names the
file and a machine-readable ``reason``. Nothing is silently repaired: Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` stays ``False`` (a truncated JPEG would
otherwise get a grey band that a model can learn as a shortcut) and the pixel
count is checked from the header before any pixel is decoded.

Conversions to grayscale:

* 8-bit ``L``/``P``/``RGB``/``CMYK``/``YCbCr``: Pillow's ITU-R 601 luma, values kept.
* 16-bit (``I;16*``), 32-bit integer (``I``) and float (``F``) images: scaled
  linearly from the image's own min..max to 0..255 (not clipped to 0..255); a
  constant image becomes all zeros.
* Alpha (``LA``, ``RGBA``, ``PA``): composited onto **black**, because the
  background of a radiograph is black (air), so transparent padding reads as
  background rather than as bright bone.
* DICOM: modality LUT (rescale slope/intercept), then VOI LUT or windowing,
  then min..max to 0..255; ``MONOCHROME1`` (and an ``INVERSE`` presentation
  LUT shape) inverted so bone is bright; multi-frame -> first frame.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from fracture.errors import ImageLoadError

logger = logging.getLogger(__name__)

MAX_PIXELS = 64_000_000
"""Default pixel-count limit (width * height): 64 megapixels, far above any radiograph."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
"""File name endings the dataset readers treat as images (lower case)."""

DICOM_EXTENSIONS = (".dcm", ".dicom")

# Magic numbers of the formats we read; a file that starts like one of these
# but cannot be opened is reported as truncated, not as "not an image".
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"

# Elements any image DICOM has; a preamble-less file with none of them is not DICOM.
_DICOM_TELLTALES = ("SOPClassUID", "Modality", "Rows", "PixelData", "StudyInstanceUID", "PatientID")

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_HIGH_DEPTH_MODE_PREFIXES = ("I;16", "I", "F")
_BIT_DEPTHS = {"1": 1, "L": 8, "LA": 8, "La": 8, "P": 8, "PA": 8, "RGB": 8, "RGBA": 8,
               "RGBa": 8, "RGBX": 8, "CMYK": 8, "YCbCr": 8, "LAB": 8, "HSV": 8,
               "I": 32, "F": 32}


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image file says, read without decoding pixels.

    ``width`` and ``height`` are as displayed (EXIF rotations by 90 degrees
    swap them, as :func:`load_image` would). ``mode`` is Pillow's mode or the
    DICOM photometric interpretation; ``format`` is e.g. ``PNG`` or ``DICOM``.
    """

    width: int
    height: int
    mode: str
    format: str
    bit_depth: int


def has_image_extension(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode an image file or uploaded bytes into a uint8 grayscale array.

    Args:
        source: a path, or the raw bytes of an upload.
        name: what to call the image in error messages (defaults to the path,
            or ``"<upload>"`` for bytes).
        max_pixels: refuse images with more than this many pixels, checked
            from the header before decoding (decompression-bomb guard).
            Pillow's own guard (``Image.MAX_IMAGE_PIXELS``, twice its value
            is refused) still applies above it, also as ``too_many_pixels``.

    Returns:
        A C-contiguous ``uint8`` array of shape (H, W).

    Raises:
        ImageLoadError: with ``reason`` one of ``empty``, ``not_an_image``,
            ``truncated``, ``too_many_pixels``, ``unsupported``,
            ``no_pixels``, ``unreadable``.
    """
    data, label, suffix = _read_source(source, name)
    if _is_dicom(data, suffix):
        image = _load_dicom(data, label, max_pixels)
    else:
        image = _load_pillow(data, label, max_pixels)
    return np.ascontiguousarray(image, dtype=np.uint8)


def read_image_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Read an image's size, mode and format from its header only.

    Cheap enough for tens of thousands of files: Pillow opens lazily and
    pydicom stops before the pixel data.

    Args:
        path: the image file.

    Returns:
        The :class:`ImageHeader`.

    Raises:
        ImageLoadError: ``unreadable``, ``empty``, ``not_an_image``,
            ``truncated`` (the header itself is cut short) or ``unsupported``.
    """
    path = Path(path)
    label = str(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError as exc:
        raise ImageLoadError(label, "unreadable", _os_error_detail(exc)) from exc
    if not head:
        raise ImageLoadError(label, "empty", "the file has 0 bytes")
    if _is_dicom(head, path.suffix.lower()):
        return _dicom_header(path, label)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.format != "PNG" and _exif_swaps_axes(img):
                width, height = height, width
            return ImageHeader(width, height, img.mode, img.format or "", _bit_depth(img))
    except UnidentifiedImageError as exc:
        raise _unidentified(label, head, exc) from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(label, "too_many_pixels", str(exc)) from exc
    except OSError as exc:
        raise _open_failed(label, head, exc) from exc


# --------------------------------------------------------------------- sources


def _read_source(source, name: str | None) -> tuple[bytes, str, str]:
    """Return (bytes, label for messages, lower-case file suffix)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<upload>"
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageLoadError(label, "unreadable", _os_error_detail(exc)) from exc
    else:
        raise TypeError(f"load_image expects a path or bytes, got {type(source).__name__}")
    if not data:
        raise ImageLoadError(label, "empty", "the file has 0 bytes")
    return data, label, Path(label).suffix.lower()


def _os_error_detail(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file; check the path"
    if isinstance(exc, PermissionError):
        return "permission denied; check the file's permissions"
    if isinstance(exc, IsADirectoryError):
        return "this is a folder, not a file"
    return exc.strerror or str(exc)


def _is_dicom(data: bytes, suffix: str) -> bool:
    """DICOM by its 'DICM' preamble; a .dcm name also counts (preamble-less files)."""
    end = _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)
    return data[_DICOM_MAGIC_OFFSET:end] == _DICOM_MAGIC or suffix in DICOM_EXTENSIONS


def _known_signature(data: bytes) -> str | None:
    for magic, fmt in _SIGNATURES.items():
        if data.startswith(magic):
            return fmt
    return None


def _unidentified(label: str, data: bytes, exc: Exception) -> ImageLoadError:
    fmt = _known_signature(data)
    if fmt is not None:
        return ImageLoadError(label, "truncated", f"starts like a {fmt} file but its header is incomplete")
    return ImageLoadError(
        label, "not_an_image",
        "not a PNG, JPEG, BMP, TIFF or DICOM file (is it a renamed document?)",
    )


def _open_failed(label: str, data: bytes, exc: OSError) -> ImageLoadError:
    """Map an OSError raised by Pillow to a reason."""
    message = str(exc)
    lowered = message.lower()
    if ("decoder" in lowered and "not available" in lowered) or "unsupported" in lowered:
        return ImageLoadError(label, "unsupported", message)
    if "truncat" in lowered or _known_signature(data) is not None:
        return ImageLoadError(label, "truncated", f"truncated or corrupt image data: {message}")
    return ImageLoadError(label, "not_an_image", message)


# ---------------------------------------------------------------------- Pillow


def _load_pillow(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise _unidentified(label, data, exc) from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(label, "too_many_pixels", str(exc)) from exc
    except OSError as exc:
        raise _open_failed(label, data, exc) from exc
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by another module): "
            "truncated images will be filled instead of rejected; %s", label,
        )
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageLoadError(
                label, "too_many_pixels",
                f"{width}x{height} = {width * height:,} pixels, limit {max_pixels:,}",
            )
        try:
            img.load()
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(label, "too_many_pixels", str(exc)) from exc
        except OSError as exc:
            raise _open_failed(label, data, exc) from exc
        img = ImageOps.exif_transpose(img)
        return _to_gray(img, label)


def _to_gray(img: Image.Image, label: str) -> np.ndarray:
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = img.mode
    if mode in _ALPHA_MODES:
        return _composite_on_black(img)
    if mode.startswith(_HIGH_DEPTH_MODE_PREFIXES):
        return rescale_to_uint8(np.asarray(img))
    try:
        return np.asarray(img.convert("L"))
    except ValueError as exc:
        raise ImageLoadError(label, "unsupported", f"colour mode {mode!r}: {exc}") from exc


def _composite_on_black(img: Image.Image) -> np.ndarray:
    """Multiply gray by alpha: transparent pixels become black background."""
    if img.mode == "PA":
        img = img.convert("RGBA")
    rgba_or_la = img.convert("LA" if img.mode in ("LA", "La") else "RGBA")
    alpha = np.asarray(rgba_or_la.getchannel("A"), dtype=np.float32) / 255.0
    gray_img = rgba_or_la.convert("L") if rgba_or_la.mode == "RGBA" else rgba_or_la.getchannel("L")
    gray = np.asarray(gray_img, dtype=np.float32)
    return np.rint(gray * alpha).astype(np.uint8)


def rescale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale an array linearly from its own min..max to 0..255 (uint8).

    Non-finite values are ignored for the range and map to 0; a constant
    array becomes zeros (never NaN).

    Args:
        values: any real-valued array.

    Returns:
        A uint8 array of the same shape.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low = values[finite].min()
    high = values[finite].max()
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.where(finite, values, low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _bit_depth(img: Image.Image) -> int:
    if img.mode.startswith("I;16"):
        return 16
    return _BIT_DEPTHS.get(img.mode, 8)


def _exif_swaps_axes(img: Image.Image) -> bool:
    """True when the EXIF orientation (5..8) rotates by 90 degrees."""
    orientation = img.getexif().get(0x0112)  # ExifTags.Base.Orientation
    return orientation in (5, 6, 7, 8)


# ----------------------------------------------------------------------- DICOM


def _read_dicom(source, label: str, *, stop_before_pixels: bool):
    """Parse a DICOM file; ``force`` lets preamble-less ``.dcm`` files through."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(source, force=True, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise ImageLoadError(label, "not_an_image", f"not a DICOM file: {exc}") from exc
    except (EOFError, ValueError, KeyError) as exc:
        raise ImageLoadError(label, "truncated", f"DICOM header is cut short or corrupt: {exc}") from exc
    except OSError as exc:
        raise ImageLoadError(label, "unreadable", _os_error_detail(exc)) from exc
    file_meta = getattr(ds, "file_meta", None)
    has_meta = file_meta is not None and "TransferSyntaxUID" in file_meta
    if not has_meta and not any(keyword in ds for keyword in _DICOM_TELLTALES):
        # a forced parse of something that is not DICOM at all
        raise ImageLoadError(label, "not_an_image", "no DICOM elements found (named .dcm but not DICOM?)")
    return ds


def _dicom_size(ds, label: str) -> tuple[int, int]:
    rows = ds.get("Rows")
    columns = ds.get("Columns")
    if rows is None or columns is None:
        raise ImageLoadError(label, "no_pixels", "DICOM has no Rows/Columns (no image in this file)")
    return int(columns), int(rows)


def _dicom_header(path: Path, label: str) -> ImageHeader:
    ds = _read_dicom(path, label, stop_before_pixels=True)
    width, height = _dicom_size(ds, label)
    mode = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    return ImageHeader(width, height, mode, "DICOM", bits)


def _load_dicom(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    ds = _read_dicom(io.BytesIO(data), label, stop_before_pixels=False)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageLoadError(label, "no_pixels", "the DICOM file holds no image (a report or structured document?)")
    width, height = _dicom_size(ds, label)
    if width * height > max_pixels:
        raise ImageLoadError(
            label, "too_many_pixels",
            f"{width}x{height} = {width * height:,} pixels, limit {max_pixels:,}",
        )
    try:
        frame = pixel_array(ds, index=0)  # decodes the first frame only
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "?")
        raise ImageLoadError(
            label, "unsupported",
            f"cannot decode transfer syntax {syntax} (install its pydicom decoder plugin): {exc}",
        ) from exc
    except (ValueError, EOFError) as exc:
        raise ImageLoadError(label, "truncated", f"DICOM pixel data: {exc}") from exc

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if frame.ndim == 3:  # colour (RGB after pydicom's YBR conversion): luma
        values = frame[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    else:
        values = apply_voi_lut(apply_modality_lut(frame, ds), ds)
    gray = rescale_to_uint8(values)
    inverse = photometric == "MONOCHROME1"
    if str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE":
        inverse = not inverse
    if inverse:
        gray = 255 - gray
    logger.debug("%s: DICOM %s %dx%d", label, photometric, width, height)
    return gray
