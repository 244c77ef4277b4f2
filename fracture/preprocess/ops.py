"""Preprocessing operations: pure functions on uint8 arrays.

Every operation takes a uint8 array, never modifies it, and returns a new uint8
array. Grayscale operations take and return ``(H, W)``; :func:`resize_square`
also takes ``(H, W, C)``; :func:`canny_channel` returns ``(H, W, 3)``. OpenCV
does the work wherever it has the operation (CLAHE, Canny, Gaussian blur,
resize, lookup tables); Perona-Malik diffusion is vectorised numpy because
``cv2.ximgproc`` is not part of ``opencv-python-headless``.

Parameter ranges live in :data:`OP_PARAMS`, one table shared by these functions
and by :mod:`fracture.preprocess.pipeline` (whose schema the UI turns into
sliders), so a value the UI offers is a value the function accepts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import cv2
import numpy as np

from fracture.errors import PreprocessError

#: How an image becomes a square: keep the aspect ratio and pad, or distort. Defined here only.
RESIZE_MODES = ("letterbox", "stretch")

__all__ = [
    "OP_PARAMS",
    "Param",
    "anisotropic_diffusion",
    "canny_channel",
    "canny_edges",
    "canny_overlay",
    "clahe",
    "normalize_intensity",
    "resize_square",
]


@dataclass(frozen=True)
class Param:
    """One parameter of a preprocessing step: type, default and allowed range.

    Attributes:
        name: keyword name of the parameter.
        type: ``"int"``, ``"float"`` or ``"str"``.
        default: value used when a spec leaves the parameter out.
        min: smallest allowed value (numbers only), inclusive.
        max: largest allowed value (numbers only), inclusive.
        choices: the only allowed values, when the parameter is categorical.
        help: one line for tooltips and ``describe``.
        step: slider step the UI should use.
        odd_or_zero: integer must be 0 or odd (Gaussian kernel sizes).
    """

    name: str
    type: str
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    step: float | None = None
    odd_or_zero: bool = False

    def validate(self, op: str, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise.

        Raises:
            PreprocessError: wrong type, outside ``[min, max]``, not one of
                ``choices``, or an even kernel size; the message names ``op``
                and the parameter.
        """
        where = f"preprocessing step {op!r}, parameter {self.name!r}"
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, Real):
                raise PreprocessError(f"{where}: expected an integer, got {value!r}")
            if not isinstance(value, Integral):
                if not float(value).is_integer():
                    raise PreprocessError(f"{where}: expected an integer, got {value!r}")
            value = int(value)
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, Real):
                raise PreprocessError(f"{where}: expected a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise PreprocessError(f"{where}: expected a finite number, got {value!r}")
        elif self.type == "str":
            if not isinstance(value, str):
                raise PreprocessError(f"{where}: expected a string, got {value!r}")
        else:  # a programming error in the table below
            raise PreprocessError(f"{where}: unknown parameter type {self.type!r}")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            raise PreprocessError(f"{where}: {value!r} is not one of {allowed}")
        if self.min is not None and value < self.min:
            raise PreprocessError(f"{where}: {value!r} is below the minimum {self.min!r}")
        if self.max is not None and value > self.max:
            raise PreprocessError(f"{where}: {value!r} is above the maximum {self.max!r}")
        if self.odd_or_zero and value != 0 and value % 2 == 0:
            raise PreprocessError(f"{where}: {value!r} must be 0 (off) or an odd number")
        return value

    def to_schema(self) -> dict[str, Any]:
        """JSON-able description (what :func:`pipeline.list_ops` returns)."""
        schema: dict[str, Any] = {"type": self.type, "default": self.default, "help": self.help}
        if self.min is not None:
            schema["min"] = self.min
        if self.max is not None:
            schema["max"] = self.max
        if self.choices is not None:
            schema["choices"] = list(self.choices)
        if self.step is not None:
            schema["step"] = self.step
        if self.odd_or_zero:
            schema["odd_or_zero"] = True
        return schema


def _params(*params: Param) -> dict[str, Param]:
    return {p.name: p for p in params}


_CANNY = (
    Param("low", "int", 50, 0, 1000, help="lower hysteresis threshold on the gradient", step=1),
    Param("high", "int", 150, 0, 1000, help="upper hysteresis threshold on the gradient", step=1),
    Param("blur", "int", 3, 0, 31, help="Gaussian blur kernel before Canny (0 = none, odd)",
          step=2, odd_or_zero=True),
)

#: Parameter table of every operation, keyed by the step name a spec uses.
OP_PARAMS: dict[str, dict[str, Param]] = {
    "resize": _params(
        Param("size", "int", 224, 16, 2048, help="side of the square output in pixels", step=1),
        Param("mode", "str", "letterbox", choices=RESIZE_MODES,
              help="letterbox keeps the aspect ratio and pads black; stretch distorts"),
    ),
    "clahe": _params(
        Param("clip_limit", "float", 2.0, 0.1, 40.0, help="contrast limit per tile", step=0.1),
        Param("tile_grid", "int", 8, 1, 64, help="tiles per side", step=1),
    ),
    "canny": _params(*_CANNY),
    "canny_overlay": _params(
        *_CANNY,
        Param("alpha", "float", 0.5, 0.0, 1.0, help="how far edges are brightened towards white",
              step=0.05),
    ),
    "canny_channel": _params(*_CANNY),
    "diffusion": _params(
        Param("iterations", "int", 10, 0, 200, help="number of diffusion steps", step=1),
        Param("kappa", "float", 30.0, 1.0, 255.0,
              help="edge threshold: gradients above it are kept", step=1.0),
        Param("gamma", "float", 0.15, 0.01, 0.25,
              help="step size (at most 0.25 for stability)", step=0.01),
        Param("option", "int", 1, choices=(1, 2),
              help="1: exp conduction (favours high-contrast edges); 2: 1/(1+x^2) (wide regions)"),
    ),
    "normalize": _params(
        Param("low_pct", "float", 0.5, 0.0, 49.9, help="percentile mapped to black", step=0.1),
        Param("high_pct", "float", 99.5, 50.0, 100.0, help="percentile mapped to white", step=0.1),
    ),
}


def _check(op: str, **values: Any) -> list[Any]:
    table = OP_PARAMS[op]
    return [table[name].validate(op, value) for name, value in values.items()]


def _check_image(img: Any, op: str, *, allow_channels: bool = False) -> np.ndarray:
    """Raise PreprocessError unless ``img`` is a non-empty uint8 image."""
    if not isinstance(img, np.ndarray):
        raise PreprocessError(f"preprocessing step {op!r}: expected a numpy array, got "
                              f"{type(img).__name__}")
    if img.dtype != np.uint8:
        raise PreprocessError(f"preprocessing step {op!r}: expected a uint8 image, got dtype "
                              f"{img.dtype}; load images with fracture.data.load_image")
    if img.ndim == 3 and allow_channels:
        if not 1 <= img.shape[2] <= 4:
            raise PreprocessError(f"preprocessing step {op!r}: expected 1 to 4 channels, got "
                                  f"shape {img.shape}")
    elif img.ndim != 2:
        wanted = "(H, W) or (H, W, C)" if allow_channels else "a grayscale (H, W)"
        raise PreprocessError(f"preprocessing step {op!r}: expected {wanted} image, got shape "
                              f"{img.shape}; put channel-adding steps last (before resize)")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise PreprocessError(f"preprocessing step {op!r}: the image is empty (shape {img.shape})")
    return img


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with INTER_AREA on shrinking axes and INTER_LINEAR on enlarging ones."""
    h, w = img.shape[:2]
    if (width, height) == (w, h):
        return img.copy()
    shrink_w, shrink_h = width <= w, height <= h
    if shrink_w == shrink_h:  # both axes shrink, or both enlarge: one pass
        interp = cv2.INTER_AREA if shrink_w else cv2.INTER_LINEAR
        out = cv2.resize(img, (width, height), interpolation=interp)
    else:  # one axis each way: one pass per axis so each gets its own filter
        out = cv2.resize(img, (width, h),
                         interpolation=cv2.INTER_AREA if shrink_w else cv2.INTER_LINEAR)
        out = cv2.resize(out, (width, height),
                         interpolation=cv2.INTER_AREA if shrink_h else cv2.INTER_LINEAR)
    if img.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[:, :, None]
    return out


def letterbox_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """``(top, left, new_h, new_w)`` of an image inside its ``size`` letterbox square.

    The one place this arithmetic lives: the resize below, heatmaps mapped back
    onto the original and boxes mapped into the model input all use it.
    """
    scale = size / max(height, width)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    return (size - new_h) // 2, (size - new_w) // 2, new_h, new_w


def resize_square(img: np.ndarray, size: int = 224, mode: str = "letterbox") -> np.ndarray:
    """Resize to ``size`` x ``size`` without ever cropping.

    Centre cropping cuts away the borders where fractures of the distal
    bones often sit (and hurt accuracy on FracAtlas), so the whole image is
    always kept: ``letterbox`` scales the long side to ``size`` and pads the
    short side with black, centred; ``stretch`` scales each axis on its own.
    Shrinking uses ``INTER_AREA`` (no aliasing), enlarging ``INTER_LINEAR``.

    Args:
        img: uint8 ``(H, W)`` or ``(H, W, C)``.
        size: side of the output in pixels (16 to 2048).
        mode: ``"letterbox"`` or ``"stretch"``.

    Returns:
        uint8 ``(size, size)`` or ``(size, size, C)``.

    Raises:
        PreprocessError: a bad image or parameter.
    """
    _check_image(img, "resize", allow_channels=True)
    size, mode = _check("resize", size=size, mode=mode)
    h, w = img.shape[:2]
    if mode == "stretch":
        return _resize(img, size, size)
    top, left, new_h, new_w = letterbox_geometry(h, w, size)
    out = np.zeros((size, size) + img.shape[2:], dtype=np.uint8)
    out[top:top + new_h, left:left + new_w] = _resize(img, new_w, new_h)
    return out


def clahe(img: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV).

    Raises local contrast so faint cortical lines stand out, without the
    noise blow-up of global equalisation.

    Args:
        img: uint8 ``(H, W)``.
        clip_limit: contrast limit per tile (0.1 to 40).
        tile_grid: number of tiles per side (1 to 64).

    Returns:
        uint8 ``(H, W)``.

    Raises:
        PreprocessError: a bad image or parameter.
    """
    _check_image(img, "clahe")
    clip_limit, tile_grid = _check("clahe", clip_limit=clip_limit, tile_grid=tile_grid)
    equaliser = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    return equaliser.apply(np.ascontiguousarray(img))


def _canny(img: np.ndarray, op: str, low: int, high: int, blur: int) -> np.ndarray:
    _check_image(img, op)
    low, high, blur = _check(op, low=low, high=high, blur=blur)
    if low > high:
        raise PreprocessError(f"preprocessing step {op!r}: parameter 'low' ({low}) must not "
                              f"exceed parameter 'high' ({high})")
    source = img if blur == 0 else cv2.GaussianBlur(img, (blur, blur), 0)
    return cv2.Canny(np.ascontiguousarray(source), low, high)


def canny_edges(img: np.ndarray, low: int = 50, high: int = 150, blur: int = 3) -> np.ndarray:
    """Canny edge map (0 or 255) of a Gaussian-blurred copy of the image.

    Args:
        img: uint8 ``(H, W)``.
        low: lower hysteresis threshold (0 to 1000, at most ``high``).
        high: upper hysteresis threshold (0 to 1000).
        blur: Gaussian kernel size before edge detection: 0 for none, else odd.

    Returns:
        uint8 ``(H, W)`` with edges 255 and everything else 0.

    Raises:
        PreprocessError: a bad image or parameter.
    """
    return _canny(img, "canny", low, high, blur)


def canny_overlay(img: np.ndarray, low: int = 50, high: int = 150, blur: int = 3,
                  alpha: float = 0.5) -> np.ndarray:
    """The image with its Canny edges brightened towards white.

    Args:
        img: uint8 ``(H, W)``.
        low, high, blur: as in :func:`canny_edges`.
        alpha: 0 leaves the image as it is, 1 paints edges white.

    Returns:
        uint8 ``(H, W)``.

    Raises:
        PreprocessError: a bad image or parameter.
    """
    edges = _canny(img, "canny_overlay", low, high, blur)
    (alpha,) = _check("canny_overlay", alpha=alpha)
    brightened = img.astype(np.float32)
    brightened += alpha * (255.0 - brightened)
    out = img.copy()
    mask = edges > 0
    out[mask] = np.rint(brightened[mask]).astype(np.uint8)
    return out


def canny_channel(img: np.ndarray, low: int = 50, high: int = 150, blur: int = 3) -> np.ndarray:
    """Stack ``[image, edges, image]`` so a 3-channel network sees edges as a channel.

    Args:
        img: uint8 ``(H, W)``.
        low, high, blur: as in :func:`canny_edges`.

    Returns:
        uint8 ``(H, W, 3)``: channel 0 and 2 the image, channel 1 the edge map.

    Raises:
        PreprocessError: a bad image or parameter.
    """
    edges = _canny(img, "canny_channel", low, high, blur)
    return np.dstack([img, edges, img])


def anisotropic_diffusion(img: np.ndarray, iterations: int = 10, kappa: float = 30.0,
                          gamma: float = 0.15, option: int = 1) -> np.ndarray:
    """Perona-Malik anisotropic diffusion: smooths noise, keeps strong edges.

    Four-neighbour explicit scheme in float32 with zero flux across the image
    border. Conduction ``exp(-(d/kappa)^2)`` (option 1) or
    ``1 / (1 + (d/kappa)^2)`` (option 2) lets intensity flow within regions
    but hardly across gradients larger than ``kappa``. The scheme is stable
    for ``gamma <= 0.25``, the largest value accepted.

    Args:
        img: uint8 ``(H, W)``.
        iterations: number of steps (0 to 200; 0 returns a copy).
        kappa: gradient threshold in grey levels (1 to 255).
        gamma: step size (0.01 to 0.25).
        option: conduction function, 1 or 2.

    Returns:
        uint8 ``(H, W)``.

    Raises:
        PreprocessError: a bad image or parameter.

    References:
        P. Perona and J. Malik, "Scale-space and edge detection using
        anisotropic diffusion", IEEE TPAMI 12(7), 1990.
    """
    _check_image(img, "diffusion")
    iterations, kappa, gamma, option = _check(
        "diffusion", iterations=iterations, kappa=kappa, gamma=gamma, option=option)
    u = img.astype(np.float32)
    south = np.zeros_like(u)
    east = np.zeros_like(u)
    inv_k2 = np.float32(1.0 / (kappa * kappa))
    gamma32 = np.float32(gamma)
    for _ in range(iterations):
        south[:-1, :] = u[1:, :] - u[:-1, :]  # the last row has no southern neighbour
        east[:, :-1] = u[:, 1:] - u[:, :-1]
        if option == 1:
            flux_s = south * np.exp(-(south * south) * inv_k2)
            flux_e = east * np.exp(-(east * east) * inv_k2)
        else:
            flux_s = south / (1.0 + (south * south) * inv_k2)
            flux_e = east / (1.0 + (east * east) * inv_k2)
        # Divergence: what flows in from the south/east minus what flows out north/west.
        update = flux_s + flux_e
        update[1:, :] -= flux_s[:-1, :]
        update[:, 1:] -= flux_e[:, :-1]
        u += gamma32 * update
    return np.clip(np.rint(u), 0, 255).astype(np.uint8)


def normalize_intensity(img: np.ndarray, low_pct: float = 0.5,
                        high_pct: float = 99.5) -> np.ndarray:
    """Percentile contrast stretch: ``low_pct`` becomes 0, ``high_pct`` 255.

    Evens out exposure differences between machines. An image whose two
    percentiles coincide (for example a constant image) is returned unchanged.

    Args:
        img: uint8 ``(H, W)``.
        low_pct: lower percentile (0 to 49.9).
        high_pct: upper percentile (50 to 100).

    Returns:
        uint8 ``(H, W)``.

    Raises:
        PreprocessError: a bad image or parameter.
    """
    _check_image(img, "normalize")
    low_pct, high_pct = _check("normalize", low_pct=low_pct, high_pct=high_pct)
    low, high = np.percentile(img, [low_pct, high_pct])
    if high - low < 1e-6:
        return img.copy()
    levels = np.arange(256, dtype=np.float32)
    lut = np.clip(np.rint((levels - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut)
