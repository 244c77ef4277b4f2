"""One safe image loader for radiographs: files or uploaded bytes to uint8 grayscale.

Every image the project touches (dataset files, uploads on the Predict page,
CLI arguments) goes through :func:`decode_image` (or :func:`load_image`, its
array-only form), so that a broken or hostile file fails the same way
everywhere: one :class:`~fracture.errors.ImageLoadError` that names the file
and a machine-readable ``reason``.

Nothing is silently repaired. Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES``
stays ``False`` (a file cut short raises instead of getting a grey band that a
model can learn as a shortcut), and a JPEG cut short *with an end-of-image
marker appended* -- which libjpeg decodes without an error, filling the
missing rows with flat grey -- is caught too: by a lower bound on the
entropy-coded bytes the header's size needs (a 7900x7900 header over 51 KB of
data), and by checking whether the last block is libjpeg's fill (all 128) and,
only then, decoding once more with extra data before the end marker: a
complete stream ignores it, a truncated one changes. Only a progressive JPEG
cut inside a later refinement scan (less detail, no grey) passes.

Bounded memory. Paths are opened only when they are regular files (a FIFO
named ``x.jpg`` or a link to ``/dev/zero`` is refused at once) and read up to
:data:`MAX_FILE_BYTES`. The pixel count is checked from the header before any
pixel is decoded (:data:`MAX_PIXELS`). ``pixel_budget`` keeps a large image at
most that many pixels: JPEGs are decoded at a reduced scale by libjpeg
(``draft``), other formats are reduced by a whole factor (box average) right
after decoding, before any float conversion. 16-bit, 32-bit and float images
are scaled to 8 bits in chunks through integer or row-block arithmetic, so no
full-size float64 copy is ever made (a 64-megapixel 16-bit PNG takes ~0.3 GB,
not 2.4 GB).

Conversions to grayscale:

* 8-bit ``L``/``P``/``RGB``/``CMYK``/``YCbCr``: Pillow's ITU-R 601 luma, values kept.
* 1-bit: 0 and 255.
* 16-bit (``I;16*``), 32-bit integer (``I``) and float (``F``) images: scaled
  linearly from the image's own min..max to 0..255 (not clipped to 0..255); a
  constant image becomes all zeros.
* Alpha (``LA``, ``RGBA``, ``PA``): composited onto **black**, because the
  background of a radiograph is black (air), so transparent padding reads as
  background rather than as bright bone.
* DICOM: modality LUT (rescale slope/intercept), then VOI LUT or windowing,
  then min..max to 0..255; ``MONOCHROME1`` (and an ``INVERSE`` presentation
  LUT shape) inverted so bone is bright.

Several frames (an animated GIF, a multi-page TIFF, a multi-frame DICOM): the
first is used and :attr:`DecodedImage.notes` says so (``load_image`` logs it).
"""
from __future__ import annotations

import io
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from fracture.util.files import FileTooLargeError, NotRegularFileError, open_regular, read_bytes_bounded
from fracture.errors import ImageLoadError

logger = logging.getLogger(__name__)

MAX_PIXELS = 64_000_000
"""Default pixel-count limit (width * height): 64 megapixels, far above any radiograph."""

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Largest image file read (512 MiB: a 64-megapixel 16-bit RGB TIFF stored uncompressed is 384 MB)."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
"""File name endings the dataset readers treat as images (lower case)."""

DICOM_EXTENSIONS = (".dcm", ".dicom")

PIL_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "GIF", "WEBP")
"""Pillow formats the loader opens (a multi-picture JPEG opens as JPEG, its format then reads ``MPO``);
anything else Pillow knows (EPS, PSD, ICO ...) is ``not_an_image``."""

# Magic numbers of the formats we read; a file that starts like one of these
# but cannot be opened is reported as truncated, not as "not an image".
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
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

#: Values per block when scaling deep images to 8 bits (bounds the float64 temporaries to 8 MB each).
_CHUNK_VALUES = 1 << 20
#: How much of a JPEG file the header reader looks through for the start of scan.
_JPEG_HEADER_PROBE = 1 << 18


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


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image and what the caller should tell the person who gave it.

    ``width``/``height`` are the file's own size (before any reduction);
    ``reduction`` is the whole factor the image was reduced by to fit the
    pixel budget (1: full size); ``notes`` are sentences such as "only the
    first of 12 frames was used" or "reduced by 3 to 2667x2667".
    """

    image: np.ndarray
    width: int
    height: int
    format: str
    reduction: int = 1
    notes: tuple[str, ...] = ()
    # What the file says about its source, for the "is this a radiograph?" gate (fracture.gate):
    # bits per sample as stored, the colourfulness of the colour pixels before the gray conversion
    # (Hasler & Suesstrunk; 0 for gray files) and a few DICOM tags (DICOM_SOURCE_TAGS) when present.
    bit_depth: int = 8
    colourfulness: float = 0.0
    dicom: tuple[tuple[str, str], ...] = ()


#: DICOM elements kept in :attr:`DecodedImage.dicom` (what the modality gate and the level-(b) warning read).
DICOM_SOURCE_TAGS = ("Modality", "SOPClassUID", "BodyPartExamined", "PatientAge", "ImageType")


def has_image_extension(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def reduced_size(width: int, height: int, pixel_budget: int | None) -> tuple[int, int, int]:
    """The size an image is kept at under ``pixel_budget``: ``(width, height, factor)``.

    The factor is the smallest whole number that brings ``ceil(w/f) * ceil(h/f)``
    within the budget (1 when the image already fits or there is no budget).
    """
    if pixel_budget is None or width * height <= pixel_budget:
        return width, height, 1
    factor = max(2, math.ceil(math.sqrt(width * height / max(1, pixel_budget))))
    while math.ceil(width / factor) * math.ceil(height / factor) > pixel_budget:
        factor += 1
    return math.ceil(width / factor), math.ceil(height / factor), factor


def load_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    pixel_budget: int | None = None,
) -> np.ndarray:
    """Decode an image file or uploaded bytes into a uint8 grayscale array.

    The array-only form of :func:`decode_image` (its notes are logged).

    Args:
        source: a path, or the raw bytes of an upload.
        name: what to call the image in error messages (defaults to the path,
            or ``"<upload>"`` for bytes).
        max_pixels: refuse images with more than this many pixels, checked
            from the header before decoding (decompression-bomb guard).
            Pillow's own guard (``Image.MAX_IMAGE_PIXELS``, twice its value
            is refused) still applies above it, also as ``too_many_pixels``.
        pixel_budget: keep the image at most this many pixels (reduced by a
            whole factor while decoding); ``None`` keeps the full size.

    Returns:
        A C-contiguous ``uint8`` array of shape (H, W).

    Raises:
        ImageLoadError: with ``reason`` one of ``empty``, ``not_an_image``,
            ``truncated`` (data cut short), ``invalid`` (a header value is
            invalid, or the decoder failed on the file: never a traceback),
            ``too_many_pixels``, ``too_large``, ``unsupported`` (a valid file
            this loader cannot decode, e.g. a float64 RGB TIFF),
            ``no_pixels``, ``unreadable`` (missing, no permission, or not a
            regular file: a FIFO, a device, a folder).
    """
    decoded = decode_image(source, name=name, max_pixels=max_pixels, pixel_budget=pixel_budget)
    for note in decoded.notes:
        logger.info("%s", note)
    return decoded.image


def decode_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    pixel_budget: int | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> DecodedImage:
    """Decode an image like :func:`load_image` and also say what was done to it.

    Args:
        source, name, max_pixels, pixel_budget: as :func:`load_image`.
        max_bytes: refuse files larger than this (``too_large``), before reading them.

    Returns:
        The :class:`DecodedImage` (uint8 (H, W) array, the file's size, notes).

    Raises:
        ImageLoadError: as :func:`load_image`.
    """
    data, label, suffix = _read_source(source, name, max_bytes)
    try:
        if _is_dicom(data, suffix):
            decoded = _load_dicom(data, label, max_pixels, pixel_budget)
        else:
            decoded = _load_pillow(data, label, max_pixels, pixel_budget)
    except (ImageLoadError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a parser of hostile bytes may raise anything: one typed reason
        logger.debug("%s: the decoder failed", label, exc_info=True)  # the traceback goes to the log only
        raise ImageLoadError(label, "invalid", f"the decoder failed on this file ({type(exc).__name__}: {exc})") \
            from exc
    image = np.ascontiguousarray(decoded.image, dtype=np.uint8)
    return DecodedImage(image, decoded.width, decoded.height, decoded.format, decoded.reduction, decoded.notes,
                        decoded.bit_depth, decoded.colourfulness, decoded.dicom)


def read_image_header(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, name: str | None = None
) -> ImageHeader:
    """Read an image's size, mode and format from its header only.

    Cheap enough for tens of thousands of files: Pillow opens lazily and
    pydicom stops before the pixel data. Only regular files are opened.

    Args:
        source: the image file, or the raw bytes of an upload.
        name: what to call it in error messages (default: the path, or ``"<upload>"``).

    Returns:
        The :class:`ImageHeader`.

    Raises:
        ImageLoadError: ``unreadable`` (also a FIFO or device), ``empty``,
            ``not_an_image``, ``truncated`` (the header itself is cut short, or
            a JPEG holds far less data than its stated size needs) or
            ``unsupported``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<upload>"
        handle = io.BytesIO(bytes(source))
        size = len(handle.getbuffer())
    elif isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        try:
            handle = open_regular(source)
            size = os.fstat(handle.fileno()).st_size
        except NotRegularFileError as exc:
            raise ImageLoadError(label, "unreadable", _not_regular_detail(exc, source)) from exc
        except OSError as exc:
            raise ImageLoadError(label, "unreadable", _os_error_detail(exc)) from exc
    else:
        raise TypeError(f"read_image_header expects a path or bytes, got {type(source).__name__}")
    with handle:
        try:
            head = handle.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
            handle.seek(0)
        except OSError as exc:
            raise ImageLoadError(label, "unreadable", _os_error_detail(exc)) from exc
        if not head:
            raise ImageLoadError(label, "empty", "the file has 0 bytes")
        if _is_dicom(head, Path(label).suffix.lower()):
            return _dicom_header(handle, label)
        try:
            with Image.open(handle, formats=PIL_FORMATS) as img:
                width, height = img.size
                if img.format != "PNG" and _exif_swaps_axes(img):
                    width, height = height, width
                header = ImageHeader(width, height, img.mode, img.format or "", _bit_depth(img))
                fmt = img.format
        except UnidentifiedImageError as exc:
            raise _unidentified(label, _prefix(handle, head), exc) from exc
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(label, "too_many_pixels", str(exc)) from exc
        except OSError as exc:
            raise _open_failed(label, head, exc) from exc
        if fmt in ("JPEG", "MPO"):
            try:
                handle.seek(0)
                prefix = handle.read(_JPEG_HEADER_PROBE)
            except OSError as exc:
                raise ImageLoadError(label, "unreadable", _os_error_detail(exc)) from exc
            layout = _jpeg_layout(prefix)
            if layout is not None:
                _check_jpeg_data_size(layout, size - layout.scan_start, label)
    return header


# --------------------------------------------------------------------- sources


def _read_source(source, name: str | None, max_bytes: int) -> tuple[bytes, str, str]:
    """Return (bytes, label for messages, lower-case file suffix); paths must be regular files."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<upload>"
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        try:
            data = read_bytes_bounded(source, max_bytes)
        except NotRegularFileError as exc:
            raise ImageLoadError(label, "unreadable", _not_regular_detail(exc, source)) from exc
        except FileTooLargeError as exc:
            raise ImageLoadError(
                label, "too_large", f"the file is larger than the {max_bytes / 2**20:.0f} MiB an image may be"
            ) from exc
        except OSError as exc:
            raise ImageLoadError(label, "unreadable", _os_error_detail(exc)) from exc
    else:
        raise TypeError(f"load_image expects a path or bytes, got {type(source).__name__}")
    if not data:
        raise ImageLoadError(label, "empty", "the file has 0 bytes")
    return data, label, Path(label).suffix.lower()


def _not_regular_detail(exc: NotRegularFileError, path) -> str:
    """The helper's message without the path (the ImageLoadError names it already)."""
    message = str(exc)
    prefix = f"{os.fspath(path)}: "
    message = message[len(prefix):] if message.startswith(prefix) else message
    return "this is a folder, not a file" if message.startswith("is a directory") else message


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
    if fmt == "TIFF":
        layout = _tiff_layout(data)
        if layout is not None:
            return ImageLoadError(label, "unsupported", f"{layout}, which Pillow cannot decode; save it as an 8- "
                                  "or 16-bit grayscale or 8-bit RGB PNG or TIFF")
    if fmt is not None:
        return ImageLoadError(label, "truncated", f"starts like a {fmt} file but its header is incomplete")
    return ImageLoadError(
        label, "not_an_image",
        "not a PNG, JPEG, BMP, TIFF, GIF, WebP or DICOM file (is it a renamed document?)",
    )


def _prefix(handle, head: bytes) -> bytes:
    """The file's first :data:`_JPEG_HEADER_PROBE` bytes (enough for a TIFF's first directory), else ``head``."""
    try:
        handle.seek(0)
        return handle.read(_JPEG_HEADER_PROBE) or head
    except (OSError, ValueError):
        return head


def _tiff_layout(data: bytes) -> str | None:
    """What a TIFF's first directory says (size, samples, bits, number kind) when the header is whole."""
    from PIL import TiffImagePlugin

    try:
        with warnings.catch_warnings():  # Pillow warns about the cut directories this is asked about
            warnings.simplefilter("ignore")
            ifd = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
            handle = io.BytesIO(data)
            handle.seek(ifd.next)
            ifd.load(handle)
            width, height = int(ifd[256]), int(ifd[257])
    except Exception:  # noqa: BLE001 - a cut or garbled header: the caller says truncated
        return None
    bits = ifd.get(258, (1,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = int(ifd.get(277, len(bits)) or 1)
    sample_format = ifd.get(339, 1)
    code = sample_format[0] if isinstance(sample_format, tuple) and sample_format else sample_format
    kind = {1: "unsigned integer", 2: "signed integer", 3: "floating point"}.get(int(code or 1), "other")
    return f"a valid {width}x{height} TIFF with {samples} sample(s) of {bits[0]}-bit {kind} per pixel"


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


def _open_pillow(data: bytes, label: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except UnidentifiedImageError as exc:
        raise _unidentified(label, data, exc) from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(label, "too_many_pixels", str(exc)) from exc
    except OSError as exc:
        raise _open_failed(label, data, exc) from exc


def _load_into(img: Image.Image, label: str, data: bytes) -> None:
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(label, "too_many_pixels", str(exc)) from exc
    except OSError as exc:
        raise _open_failed(label, data, exc) from exc
    except (ValueError, SyntaxError, EOFError) as exc:  # Pillow's parsers raise these on corrupt data
        raise ImageLoadError(label, "truncated", f"corrupt image data: {exc}") from exc


def _load_pillow(data: bytes, label: str, max_pixels: int, pixel_budget: int | None) -> DecodedImage:
    img = _open_pillow(data, label)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by another module): "
            "truncated images will be filled instead of rejected; %s", label,
        )
    with img:
        width, height = img.size
        fmt = img.format or ""
        if width * height > max_pixels:
            raise ImageLoadError(
                label, "too_many_pixels",
                f"{width}x{height} = {width * height:,} pixels, limit {max_pixels:,}",
            )
        notes = []
        frames = _frame_count(img)
        if frames > 1:
            kind = "pages" if fmt == "TIFF" else "frames"
            notes.append(f"{label}: a {fmt} with {frames} {kind}; only the first was used")
        target_w, target_h, factor = reduced_size(width, height, pixel_budget)
        jpeg = _jpeg_layout(data) if fmt in ("JPEG", "MPO") else None
        if jpeg is not None:
            _check_jpeg_data_size(jpeg, _jpeg_end(data, jpeg) - jpeg.scan_start, label)
        draft = (img.mode, (target_w, target_h)) if factor > 1 and fmt in ("JPEG", "MPO") else None
        if draft is not None:
            img.draft(*draft)  # libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below the target
        _load_into(img, label, data)
        if jpeg is not None:
            _check_jpeg_fill(img, data, jpeg, draft, label)
        swapped = _exif_swaps_axes(img)
        ImageOps.exif_transpose(img, in_place=True)
        bits, colour = _bit_depth(img), _colourfulness_pil(img)
        gray = _to_gray(img, label)
    if factor > 1:
        target = (target_h, target_w) if not swapped else (target_w, target_h)
        gray = _shrink(gray, target)
        notes.append(
            f"{label}: {width}x{height} is over the {pixel_budget:,}-pixel limit per image; "
            f"reduced by {factor} to {gray.shape[1]}x{gray.shape[0]}"
        )
    return DecodedImage(gray, width, height, fmt, factor, tuple(notes), bits, colour)


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk's colourfulness of an (H, W, 3) image: ~0 for gray, > 15 for most photos."""
    rgb = np.asarray(rgb, dtype=np.float64)[..., :3]
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def _colourfulness_pil(img: Image.Image) -> float:
    """Colourfulness of a 8-bit colour image from a small thumbnail (0 for gray modes)."""
    if img.mode not in ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "P", "PA", "LAB", "HSV"):
        return 0.0
    thumb = img.convert("RGB")
    thumb.thumbnail((128, 128))
    return colourfulness(np.asarray(thumb))


def _frame_count(img: Image.Image) -> int:
    try:
        return int(getattr(img, "n_frames", 1) or 1)
    except (OSError, ValueError, EOFError, SyntaxError):  # a broken later frame: the first may still load
        return 1


def _shrink(gray: np.ndarray, target_hw: tuple[int, int]) -> np.ndarray:
    """Box-average a uint8 image down to ``target_hw`` (whole-factor ``reduce`` when it fits)."""
    height, width = gray.shape
    target_h, target_w = target_hw
    if (height, width) == (target_h, target_w):
        return gray
    pil = Image.fromarray(np.ascontiguousarray(gray))
    factor = max(1, width // max(1, target_w))
    if factor > 1 and math.ceil(width / factor) == target_w and math.ceil(height / factor) == target_h:
        return np.asarray(pil.reduce(factor))
    return np.asarray(pil.resize((target_w, target_h), Image.Resampling.BOX))


def _to_gray(img: Image.Image, label: str) -> np.ndarray:
    """Any Pillow mode to uint8 gray, a band of rows at a time: besides Pillow's decoded
    image only the uint8 result is full size (no converted copy, no float copy)."""
    mode = img.mode
    if mode.startswith(_HIGH_DEPTH_MODE_PREFIXES):
        return _rescale_pil(img)
    if mode == "P" and "transparency" in img.info:
        convert = lambda band: _composite_on_black(band.convert("RGBA"))  # noqa: E731
    elif mode in _ALPHA_MODES:
        convert = _composite_on_black
    elif mode == "L":
        convert = np.asarray
    else:
        convert = lambda band: np.asarray(band.convert("L"))  # noqa: E731
    try:
        return _by_bands(img, convert)
    except ValueError as exc:
        raise ImageLoadError(label, "unsupported", f"colour mode {mode!r}: {exc}") from exc


def _by_bands(img: Image.Image, convert) -> np.ndarray:
    """``convert`` (a Pillow image of some rows -> uint8 rows) over the image, band by band."""
    width, height = img.size
    if width * height <= _CHUNK_VALUES:
        return np.asarray(convert(img))
    out = np.empty((height, width), dtype=np.uint8)
    band = max(1, _CHUNK_VALUES // width)
    for top in range(0, height, band):
        bottom = min(height, top + band)
        out[top:bottom] = convert(img.crop((0, top, width, bottom)))
    return out


def _composite_on_black(img: Image.Image) -> np.ndarray:
    """Multiply gray by alpha: transparent pixels become black background.

    Integer arithmetic, ``round(gray * alpha / 255)`` (never a tie: 255 is odd).
    """
    if img.mode == "PA":
        img = img.convert("RGBA")
    rgba_or_la = img.convert("LA" if img.mode in ("LA", "La") else "RGBA")
    alpha = np.asarray(rgba_or_la.getchannel("A"))
    gray_img = rgba_or_la.convert("L") if rgba_or_la.mode == "RGBA" else rgba_or_la.getchannel("L")
    product = np.asarray(gray_img).astype(np.uint32) * alpha
    return ((product + 127) // 255).astype(np.uint8)


def rescale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale an array linearly from its own min..max to 0..255 (uint8).

    Non-finite values are ignored for the range and map to 0; a constant
    array becomes zeros (never NaN). Works in row blocks (8- and 16-bit
    integers through a lookup table), so a 64-megapixel 16-bit image needs
    no full-size float copy.

    Args:
        values: any real-valued array.

    Returns:
        A uint8 array of the same shape.
    """
    values = np.asarray(values)
    shape = values.shape
    rows = values.reshape(-1, 1) if values.ndim < 2 else values
    out = _rescale_rows(lambda start, stop: rows[start:stop], rows.shape[0], int(np.prod(rows.shape[1:])))
    return out.reshape(shape)


def _rescale_pil(img: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit or float Pillow image to uint8, a band of rows at a time
    (no full-size copy besides Pillow's own and the uint8 result)."""
    width, height = img.size
    return _rescale_rows(lambda start, stop: np.asarray(img.crop((0, start, width, stop))), height, width)


def _rescale_rows(get_rows, n_rows: int, per_row: int, transform=None) -> np.ndarray:
    """``rescale_to_uint8(transform(all rows))`` computed a band of rows at a time.

    ``get_rows(start, stop)`` returns those rows; ``transform`` must act
    element by element (or pixel by pixel), as the DICOM LUTs and the
    colour-to-luma product do (``None``: identity). The result equals the
    whole-array computation. Integers of 16 bits or less go through a lookup
    table; anything else through float64, one band (~8 MB) at a time.
    """
    band = max(1, _CHUNK_VALUES // max(1, per_row))
    starts = range(0, n_rows, band)

    def rows(start: int) -> np.ndarray:
        part = get_rows(start, min(n_rows, start + band))
        return part if transform is None else np.asarray(transform(part))

    low = high = None
    out_shape = None
    integer = transform is None
    cached = None
    for start in starts:
        part = rows(start)
        if out_shape is None:
            out_shape = (n_rows,) + part.shape[1:]
            integer = integer and part.dtype.kind in "uib" and part.dtype.itemsize <= 2
        if len(starts) == 1:
            cached = part
        if integer:
            if part.size:
                part_low, part_high = int(part.min()), int(part.max())
            else:
                continue
        else:
            finite = part[np.isfinite(part)]
            if not finite.size:
                continue
            part_low, part_high = float(finite.min()), float(finite.max())
        low = part_low if low is None else min(low, part_low)
        high = part_high if high is None else max(high, part_high)
    out = np.zeros(out_shape if out_shape is not None else (0, per_row), dtype=np.uint8)
    if low is None or high <= low:
        return out
    scale = 255.0 / (high - low)
    lut = None
    if integer:  # the same arithmetic as below, once per level
        levels = np.arange(low, high + 1, dtype=np.float64)
        lut = np.clip(np.rint((levels - low) * scale), 0, 255).astype(np.uint8)
    for start in starts:
        part = cached if cached is not None else rows(start)
        stop = start + part.shape[0]
        if lut is not None:
            out[start:stop] = lut[part.astype(np.int32) - low]
        else:
            part = part.astype(np.float64, copy=False)
            scaled = (np.where(np.isfinite(part), part, low) - low) * scale
            out[start:stop] = np.clip(np.rint(scaled), 0, 255)
    return out


def _bit_depth(img: Image.Image) -> int:
    if img.mode.startswith("I;16"):
        return 16
    return _BIT_DEPTHS.get(img.mode, 8)


def _exif_swaps_axes(img: Image.Image) -> bool:
    """True when the EXIF orientation (5..8) rotates by 90 degrees."""
    orientation = img.getexif().get(0x0112)  # ExifTags.Base.Orientation
    return orientation in (5, 6, 7, 8)


# ------------------------------------------------------------ JPEG truncation


@dataclass(frozen=True)
class _JpegLayout:
    """What the frame header says, and where the first scan's entropy-coded data starts."""

    sof: int
    width: int
    height: int
    sampling: tuple[tuple[int, int], ...]  # (h, v) per component
    scan_start: int

    @property
    def mcu_size(self) -> tuple[int, int]:
        """(width, height) in pixels of one MCU of an interleaved scan."""
        return 8 * max(h for h, _ in self.sampling), 8 * max(v for _, v in self.sampling)


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: Least bits a block can take: Huffman sequential needs a DC code and an AC code (EOB),
#: progressive at least the DC code of the first scan. Lossless / arithmetic: no bound.
_MIN_BITS_PER_BLOCK = {0xC0: 2, 0xC1: 2, 0xC2: 1}
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
#: Data put before the end marker to see whether the decoder still wanted some (no 0xFF bytes).
_FILLER = bytes(np.random.default_rng(20240613).integers(0, 255, 4096, dtype=np.uint8))


def _jpeg_layout(data: bytes) -> _JpegLayout | None:
    """Walk the markers up to the first start of scan; ``None`` when there is none (Pillow decides)."""
    pos, end = 2, len(data)
    sof = None
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        if marker == 0xD9:
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            return None
        if marker in _SOF_MARKERS and pos + 10 <= end:
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            count = data[pos + 9]
            comps = data[pos + 10:pos + 10 + 3 * count]
            if len(comps) < 3 * count or count == 0:
                return None
            sampling = tuple((max(1, comps[3 * i + 1] >> 4), max(1, comps[3 * i + 1] & 0x0F)) for i in range(count))
            sof = (marker, width, height, sampling)
        if marker == 0xDA:
            if sof is None:
                return None
            return _JpegLayout(sof[0], sof[1], sof[2], sof[3], pos + 2 + length)
        pos += 2 + length
    return None


def _jpeg_end(data: bytes, layout: _JpegLayout) -> int:
    """Offset of the end-of-image marker of the first image (entropy data never holds FF D9)."""
    end = data.find(b"\xff\xd9", layout.scan_start)
    return len(data) if end < 0 else end


def _check_jpeg_data_size(layout: _JpegLayout, entropy_bytes: int, label: str) -> None:
    """Refuse a JPEG whose data cannot hold the blocks its header promises (every block costs bits)."""
    bits = _MIN_BITS_PER_BLOCK.get(layout.sof)
    if bits is None or layout.width == 0 or layout.height == 0:
        return
    h_max = max(h for h, _ in layout.sampling)
    v_max = max(v for _, v in layout.sampling)
    blocks = sum(
        math.ceil(math.ceil(layout.width * h / h_max) / 8) * math.ceil(math.ceil(layout.height * v / v_max) / 8)
        for h, v in layout.sampling
    )
    needed = math.ceil(blocks * bits / 8)
    if entropy_bytes < needed:
        raise ImageLoadError(
            label, "truncated",
            f"the header says {layout.width}x{layout.height} but the file holds {max(0, entropy_bytes):,} bytes "
            f"of image data, less than the {needed:,} that size needs at the least; the file is cut short",
        )


def _check_jpeg_fill(img: Image.Image, data: bytes, layout: _JpegLayout, draft, label: str) -> None:
    """Refuse a JPEG whose data ended early: libjpeg fills the missing blocks with flat 128.

    The last block is always among the missing ones, so only when it is all
    128 is the file decoded again with extra bytes before its end marker: a
    complete stream ends before them and decodes the same, a truncated one
    reads them and changes. A progressive JPEG cut short is not grey (its
    last scans only add detail), so it is always decoded twice.
    """
    if layout.sof not in _PROGRESSIVE_SOF and not _last_block_is_fill(img, layout):
        return
    end = _jpeg_end(data, layout)
    probe = _open_pillow(data[:end] + _FILLER + data[end:], label)
    with probe:
        if draft is not None:
            probe.draft(*draft)
        try:
            probe.load()
        except Exception:  # noqa: BLE001 - the complete stream never fails here; a cut one may
            same = False
        else:
            same = probe.size == img.size and np.array_equal(np.asarray(probe), np.asarray(img))
    if not same:
        raise ImageLoadError(
            label, "truncated",
            "the JPEG data ends early: an end marker follows data cut short, and the decoder would fill "
            "what is missing with flat grey (or leave it blurred)",
        )


def _last_block_is_fill(img: Image.Image, layout: _JpegLayout) -> bool:
    """True when the bottom-right MCU (at the decoded scale) is all 128, libjpeg's fill for missing data."""
    width, height = img.size
    mcu_w, mcu_h = layout.mcu_size
    last_h = layout.height - ((layout.height - 1) // mcu_h) * mcu_h  # rows in the last MCU row
    last_w = layout.width - ((layout.width - 1) // mcu_w) * mcu_w
    rows = min(height, max(1, last_h * height // max(1, layout.height)))
    cols = min(width, max(1, last_w * width // max(1, layout.width)))
    corner = np.asarray(img.crop((width - cols, height - rows, width, height)))
    return corner.size > 0 and bool((corner == 128).all())


# ----------------------------------------------------------------------- DICOM


def _read_dicom(source, label: str, *, stop_before_pixels: bool):
    """Parse a DICOM file; ``force`` lets preamble-less ``.dcm`` files through."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(source, force=True, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise ImageLoadError(label, "not_an_image", f"not a DICOM file: {exc}") from exc
    except EOFError as exc:
        raise ImageLoadError(label, "truncated", f"DICOM header is cut short: {exc}") from exc
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ImageLoadError(label, "invalid", f"DICOM header is corrupt or holds an invalid value: {exc}") from exc
    except OSError as exc:
        raise ImageLoadError(label, "unreadable", _os_error_detail(exc)) from exc
    file_meta = getattr(ds, "file_meta", None)
    has_meta = file_meta is not None and "TransferSyntaxUID" in file_meta
    if not has_meta and not any(keyword in ds for keyword in _DICOM_TELLTALES):
        # a forced parse of something that is not DICOM at all
        raise ImageLoadError(label, "not_an_image", "no DICOM elements found (named .dcm but not DICOM?)")
    return ds


def _default_transfer_syntax(ds) -> None:
    """A file without file meta (no Transfer Syntax UID) is uncompressed, in the encoding it was read
    with; say so, as pydicom's reader does for the data set, so its pixel decoder can run."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if little is False:
        syntax = ExplicitVRBigEndian
    else:
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax


def _dicom_size(ds, label: str) -> tuple[int, int]:
    rows = ds.get("Rows")
    columns = ds.get("Columns")
    if rows is None or columns is None:
        raise ImageLoadError(label, "no_pixels", "DICOM has no Rows/Columns (no image in this file)")
    return int(columns), int(rows)


def _dicom_header(source, label: str) -> ImageHeader:
    ds = _read_dicom(source, label, stop_before_pixels=True)
    width, height = _dicom_size(ds, label)
    mode = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    return ImageHeader(width, height, mode, "DICOM", bits)


def _load_dicom(data: bytes, label: str, max_pixels: int, pixel_budget: int | None) -> DecodedImage:
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
    _default_transfer_syntax(ds)
    try:
        frame = pixel_array(ds, index=0)  # decodes the first frame only
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric == "PALETTE COLOR" and frame.ndim == 2:  # indices -> the colours they stand for
            from pydicom.pixels import apply_color_lut

            frame = apply_color_lut(frame, ds)
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "?")
        raise ImageLoadError(
            label, "unsupported",
            f"cannot decode transfer syntax {syntax} (install its pydicom decoder plugin): {exc}",
        ) from exc
    except EOFError as exc:
        raise ImageLoadError(label, "truncated", f"DICOM pixel data: {exc}") from exc
    except (ValueError, AttributeError, KeyError, TypeError, IndexError) as exc:
        cut = "less than expected" in str(exc)  # pydicom's words for pixel data shorter than the header says
        raise ImageLoadError(label, "truncated" if cut else "invalid", f"DICOM pixel data: {exc}") from exc

    notes = []
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        notes.append(f"{label}: a DICOM with {frames} frames; only the first was used")
    target_w, target_h, factor = reduced_size(width, height, pixel_budget)
    if factor > 1:  # average before the LUTs, so they run on the kept pixels only
        import cv2

        if frame.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
            frame = frame.astype(np.float32)
        frame = cv2.resize(frame, (target_w, target_h), interpolation=cv2.INTER_AREA)
        notes.append(
            f"{label}: {width}x{height} is over the {pixel_budget:,}-pixel limit per image; "
            f"reduced by {factor} to {target_w}x{target_h}"
        )
    rows = lambda start, stop: frame[start:stop]  # noqa: E731
    try:
        if frame.ndim == 3:  # colour (RGB after pydicom's YBR conversion, or a palette applied): luma
            luma = np.array([0.299, 0.587, 0.114])
            gray = _rescale_rows(rows, frame.shape[0], frame.shape[1] * frame.shape[2],
                                 lambda part: part[..., :3].astype(np.float64) @ luma)
        else:
            gray = _rescale_rows(rows, frame.shape[0], frame.shape[1],
                                 lambda part: apply_voi_lut(apply_modality_lut(part, ds), ds))
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:  # numpy's UFuncTypeError too
        raise ImageLoadError(
            label, "invalid",
            f"a DICOM rescale or window value is invalid (RescaleSlope/Intercept, WindowCenter/Width, LUTs): {exc}",
        ) from exc
    inverse = photometric == "MONOCHROME1"
    if str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE":
        inverse = not inverse
    if inverse:
        gray = 255 - gray
    logger.debug("%s: DICOM %s %dx%d", label, photometric, width, height)
    colour = colourfulness(frame[::max(1, frame.shape[0] // 128), ::max(1, frame.shape[1] // 128)]) \
        if frame.ndim == 3 and frame.shape[-1] >= 3 else 0.0
    tags = tuple((key, str(ds.get(key))) for key in DICOM_SOURCE_TAGS if ds.get(key) not in (None, ""))
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    return DecodedImage(gray, width, height, "DICOM", factor, tuple(notes), bits, colour, tags)
