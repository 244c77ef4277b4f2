"""uint8 images to normalised float tensors for a network, and back for display.

torch is imported inside the functions, so importing :mod:`fracture.preprocess`
keeps the data layer light.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fracture.errors import PreprocessError

if TYPE_CHECKING:
    import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "denormalize", "to_batch", "to_tensor"]

#: ImageNet channel statistics (RGB), what timm's pretrained models expect.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _channel_stats(values: float | Sequence[float], in_chans: int, name: str) -> np.ndarray:
    """Broadcast mean/std to ``in_chans`` values.

    One value serves every channel; three values for a one-channel model are
    averaged (as timm does when it adapts a 3-channel stem to gray input).
    """
    arr = np.atleast_1d(np.asarray(values, dtype=np.float32)).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, in_chans)
    elif arr.size == 3 and in_chans == 1:
        arr = arr.mean(keepdims=True)
    if arr.size != in_chans:
        raise PreprocessError(f"{name} has {arr.size} values but the model takes {in_chans} "
                              f"channel(s); give 1 or {in_chans} values")
    if name == "std" and np.any(arr <= 0):
        raise PreprocessError(f"std must be positive, got {arr.tolist()}")
    return arr


def _to_chw(img: np.ndarray, in_chans: int) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        got = img.dtype if isinstance(img, np.ndarray) else type(img).__name__
        raise PreprocessError(f"to_tensor expects a uint8 numpy image, got {got}")
    if in_chans not in (1, 3):
        raise PreprocessError(f"in_chans must be 1 or 3, got {in_chans!r}")
    if img.ndim == 2:
        chw = img[None, :, :]
    elif img.ndim == 3 and img.shape[2] in (1, 3):
        chw = np.transpose(img, (2, 0, 1))
    else:
        raise PreprocessError(f"to_tensor expects an (H, W), (H, W, 1) or (H, W, 3) image, "
                              f"got shape {img.shape}")
    chw = chw.astype(np.float32) / np.float32(255.0)
    if chw.shape[0] == in_chans:
        return chw
    if in_chans == 3:  # gray -> the same plane three times
        return np.repeat(chw, 3, axis=0)
    return chw.mean(axis=0, keepdims=True)  # three channels -> their mean


def to_tensor(img: np.ndarray, in_chans: int = 3,
              mean: float | Sequence[float] = IMAGENET_MEAN,
              std: float | Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Turn a uint8 image into a normalised ``(C, H, W)`` float32 tensor.

    Args:
        img: uint8 ``(H, W)`` or ``(H, W, 3)`` (e.g. from ``canny_channel``).
        in_chans: channels the model takes, 1 or 3. Gray is replicated to 3
            channels; 3 channels are averaged down to 1.
        mean: per-channel mean on the 0-1 scale (1 or ``in_chans`` values; 3
            values for a 1-channel model are averaged).
        std: per-channel standard deviation, same rules as ``mean``.

    Returns:
        ``torch.FloatTensor`` of shape ``(in_chans, H, W)``.

    Raises:
        PreprocessError: not a uint8 image, a shape or channel count that does
            not fit, or mean/std of the wrong length.
    """
    import torch

    chw = _to_chw(img, in_chans)
    mean_arr = _channel_stats(mean, in_chans, "mean")[:, None, None]
    std_arr = _channel_stats(std, in_chans, "std")[:, None, None]
    return torch.from_numpy(np.ascontiguousarray((chw - mean_arr) / std_arr))


def to_batch(images: Sequence[np.ndarray], in_chans: int = 3,
             mean: float | Sequence[float] = IMAGENET_MEAN,
             std: float | Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Stack images of one size into a ``(B, C, H, W)`` float32 tensor.

    Args:
        images: uint8 images of identical height and width (resize first).
        in_chans, mean, std: as in :func:`to_tensor`.

    Returns:
        ``torch.FloatTensor`` of shape ``(B, in_chans, H, W)``.

    Raises:
        PreprocessError: an empty list, images of different sizes, or any
            error of :func:`to_tensor`.
    """
    import torch

    if len(images) == 0:
        raise PreprocessError("to_batch needs at least one image")
    sizes = {tuple(img.shape[:2]) for img in images}
    if len(sizes) > 1:
        raise PreprocessError(f"to_batch needs images of one size, got {sorted(sizes)}; add a "
                              f"resize step to the preprocessing pipeline")
    return torch.stack([to_tensor(img, in_chans, mean, std) for img in images])


def denormalize(tensor: torch.Tensor, mean: float | Sequence[float] = IMAGENET_MEAN,
                std: float | Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Undo :func:`to_tensor` for display.

    Args:
        tensor: ``(C, H, W)`` or ``(B, C, H, W)`` with C of 1 or 3.
        mean, std: the values used to normalise.

    Returns:
        uint8 numpy ``(H, W)`` for one channel or ``(H, W, 3)`` for three, with
        a leading batch axis when the input had one.

    Raises:
        PreprocessError: a tensor of another rank or channel count.
    """
    array = tensor.detach().to("cpu").float().numpy()
    if array.ndim not in (3, 4) or array.shape[-3] not in (1, 3):
        raise PreprocessError(f"denormalize expects (C, H, W) or (B, C, H, W) with 1 or 3 "
                              f"channels, got shape {tuple(array.shape)}")
    chans = array.shape[-3]
    mean_arr = _channel_stats(mean, chans, "mean")[:, None, None]
    std_arr = _channel_stats(std, chans, "std")[:, None, None]
    pixels = np.clip(np.rint((array * std_arr + mean_arr) * 255.0), 0, 255).astype(np.uint8)
    pixels = np.moveaxis(pixels, -3, -1)
    return pixels[..., 0] if chans == 1 else pixels
