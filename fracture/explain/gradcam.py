"""Grad-CAM heatmaps for FractureModel, and their geometry.

:func:`gradcam` explains one image with the fast engine of
:mod:`fracture.explain.cam` (one forward pass, gradients only above the target
layer; nothing on the model is changed except, for the duration of the call,
its train/eval mode). :func:`reference_gradcam` computes the same map with
pytorch-grad-cam (:data:`CAM_METHODS`), the library the engine's formulas come
from; tests hold the two together. A missing target layer is a ModelError
naming the model, never a silent fallback to some other convolution.

The heatmap is computed on the network input (letterboxed or stretched square);
:func:`heatmap_to_original` undoes that resize so the map lies on the original
radiograph, and :func:`overlay_heatmap` blends it over a grayscale image.
"""
from __future__ import annotations

import importlib
import logging
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from fracture.errors import ModelError
from fracture.explain.cam import METHODS, TARGETS, capture, maps_from_capture
from fracture.explain.layers import LAYER_PRESETS, resolve_layers

logger = logging.getLogger(__name__)

#: The offered methods and the class of pytorch-grad-cam that computes each (the reference).
#: By name: pytorch-grad-cam is imported only by :func:`reference_gradcam` (it takes seconds to import).
CAM_METHODS = {
    "gradcam": "GradCAM",
    "hirescam": "HiResCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "gradcamelementwise": "GradCAMElementWise",
    "eigengradcam": "EigenGradCAM",
    "eigencam": "EigenCAM",
}
COLORMAPS = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "plasma": cv2.COLORMAP_PLASMA,
    "hot": cv2.COLORMAP_HOT,
}
from fracture.preprocess.ops import RESIZE_MODES, letterbox_geometry  # noqa: E402  (defined once, by preprocessing)


class _ScoreOutput(nn.Module):
    """Expose one output of a FractureModel as the (B, K) score tensor pytorch-grad-cam wants."""

    def __init__(self, model: nn.Module, target: str, body_part) -> None:
        super().__init__()
        self.model = model
        self.target = target
        self.body_part = body_part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit, body_logits = self.model(x, body_part=self.body_part)
        if self.target == "fracture":
            return logit.unsqueeze(1)
        return body_logits


def _resolve_target_layer(model: nn.Module, target_layer: nn.Module | str | None) -> nn.Module:
    """The layer Grad-CAM reads: given, or the model's own (``gradcam_target_layer``).

    Raises:
        ModelError: the named layer is not in the model, or the model names none.
    """
    if isinstance(target_layer, nn.Module):
        return target_layer
    arch = getattr(model, "arch", type(model).__name__)
    try:
        if isinstance(target_layer, str):
            return model.get_submodule(target_layer)
        return model.gradcam_target_layer
    except (AttributeError, ModelError) as exc:
        raise ModelError(
            f"{arch}: no Grad-CAM target layer ({exc}); name one of its modules, or a preset "
            f"({', '.join(LAYER_PRESETS)})"
        ) from exc


def _target_modules(model: nn.Module, target_layer) -> list[nn.Module]:
    """Modules for a module, a preset name (``final``, ``stride16``, ``fused``...), a dotted name or None."""
    if isinstance(target_layer, (list, tuple)) or (isinstance(target_layer, str) and target_layer in LAYER_PRESETS
                                                   and target_layer != "final"):
        return resolve_layers(model, target_layer)[1]
    if target_layer == "final":
        target_layer = None
    return [_resolve_target_layer(model, target_layer)]


def _check_args(input_tensor: torch.Tensor, model: nn.Module, method: str, target: str) -> torch.Tensor:
    if method not in METHODS:
        raise ModelError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
    if target not in TARGETS:
        raise ModelError(f"unknown Grad-CAM target {target!r}; choose one of {', '.join(TARGETS)}")
    if input_tensor.ndim == 3:
        input_tensor = input_tensor.unsqueeze(0)
    if input_tensor.ndim != 4 or input_tensor.shape[0] != 1:
        raise ModelError(f"Grad-CAM takes one image (1, C, H, W), got shape {tuple(input_tensor.shape)}")
    if target == "body_part" and not getattr(model, "num_body_parts", 0):
        raise ModelError("target 'body_part' needs a multi-task model (this one has no body-part head)")
    return input_tensor


def gradcam(
    model: nn.Module,
    input_tensor: torch.Tensor,
    *,
    target: str = "fracture",
    method: str = "gradcam",
    body_part: int | None = None,
    target_layer: nn.Module | str | Sequence[str] | None = None,
) -> np.ndarray:
    """Class-activation heatmap of one image (fast engine, :mod:`fracture.explain.cam`).

    Args:
        model: a FractureModel (its ``gradcam_target_layer`` is used).
        input_tensor: the normalised network input, (1, C, H, W) or (C, H, W).
        target: ``"fracture"`` explains the fracture logit (evidence for
            "fractured"); ``"body_part"`` explains the body-part prediction.
        method: one of :data:`CAM_METHODS`.
        body_part: known body-part index for a multi-task model (-1 or None:
            the model's own guess); with ``target="body_part"`` the class to
            explain (None: the predicted one).
        target_layer: override the layer: a module, a dotted name in
            ``model``, a preset of :data:`fracture.explain.layers.LAYER_PRESETS`
            or a list of those (their maps are averaged).

    Returns:
        float32 (H, W) in [0, 1], aligned with the input tensor.

    Raises:
        ModelError: unknown method or target, a body-part target on a
            single-task model, or a bad input shape.
    """
    input_tensor = _check_args(input_tensor, model, method, target)
    layers = _target_modules(model, target_layer)
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    x = input_tensor.detach().to(device=device, dtype=torch.float32)
    was_training = model.training
    embed_part = body_part if target == "fracture" else None
    class_index = body_part if target == "body_part" and body_part is not None and body_part >= 0 else None
    try:
        model.eval()
        cap = capture(model, x, layers, target=target, body_part=embed_part, class_index=class_index,
                      need_grads=method != "eigencam")
    finally:
        model.train(was_training)
    return maps_from_capture(cap, method)[0].cpu().numpy().astype(np.float32)


def reference_gradcam(
    model: nn.Module,
    input_tensor: torch.Tensor,
    *,
    target: str = "fracture",
    method: str = "gradcam",
    body_part: int | None = None,
    target_layer: nn.Module | str | Sequence[str] | None = None,
) -> np.ndarray:
    """The same map computed by pytorch-grad-cam (slow: every parameter gets a gradient).

    For checking the engine and for comparison; arguments as :func:`gradcam`.
    The model's mode, ``requires_grad`` flags and ``.grad`` tensors are put back.
    """
    input_tensor = _check_args(input_tensor, model, method, target)
    layers = _target_modules(model, target_layer)
    params = list(model.parameters())
    was_training = model.training
    saved_requires_grad = [p.requires_grad for p in params]
    saved_grads = [p.grad for p in params]
    device = params[0].device if params else torch.device("cpu")
    input_tensor = input_tensor.detach().to(device=device, dtype=torch.float32)
    try:
        # Activations only carry gradients when something upstream requires them
        # (a frozen backbone would give an all-zero map otherwise).
        for param in params:
            param.requires_grad_(True)
        model.eval()
        embed_part = body_part if target == "fracture" else None
        wrapper = _ScoreOutput(model, target, embed_part)
        class_index = 0
        if target == "body_part":
            if body_part is None or body_part < 0:
                with torch.no_grad():
                    class_index = int(wrapper(input_tensor).argmax(dim=1).item())
            else:
                class_index = int(body_part)
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam_class = getattr(importlib.import_module("pytorch_grad_cam"), CAM_METHODS[method])
        with cam_class(model=wrapper, target_layers=layers) as cam:
            heatmap = cam(input_tensor=input_tensor, targets=[ClassifierOutputTarget(class_index)])[0]
    finally:
        model.train(was_training)
        for param, flag, grad in zip(params, saved_requires_grad, saved_grads):
            param.requires_grad_(flag)
            param.grad = grad
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    return np.clip(heatmap, 0.0, 1.0)


def heatmap_to_original(
    heatmap: np.ndarray, original_shape: Sequence[int], resize_mode: str = "letterbox"
) -> np.ndarray:
    """Map a heatmap on the square network input back onto the original image.

    Inverts :func:`fracture.preprocess.ops.resize_square`: ``letterbox`` scaled
    the longest side to ``size`` (``scale = size / max(h, w)``, new sides
    ``round(side * scale)`` clipped to [1, size]) and padded centred with
    zeros (``top = (size - new_h) // 2``, ``left = (size - new_w) // 2``);
    here the padding is cut off and the content resized to (h, w). ``stretch``
    is a plain resize.

    Args:
        heatmap: (size, size) float map.
        original_shape: (h, w[, ...]) of the image before resizing.
        resize_mode: ``"letterbox"`` or ``"stretch"``, as in the preprocessing.

    Returns:
        float32 (h, w) in the heatmap's value range.

    Raises:
        ModelError: unknown mode, or a non-square heatmap in letterbox mode.
    """
    if resize_mode not in RESIZE_MODES:
        raise ModelError(f"unknown resize mode {resize_mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    heatmap = np.asarray(heatmap, dtype=np.float32)
    h, w = int(original_shape[0]), int(original_shape[1])
    if resize_mode == "letterbox":
        size = heatmap.shape[0]
        if heatmap.ndim != 2 or heatmap.shape[1] != size:
            raise ModelError(f"letterbox heatmaps are square, got shape {heatmap.shape}")
        top, left, new_h, new_w = letterbox_geometry(h, w, size)
        heatmap = heatmap[top:top + new_h, left:left + new_w]
    if heatmap.shape == (h, w):
        return heatmap.copy()
    return cv2.resize(heatmap, (w, h), interpolation=cv2.INTER_LINEAR)


def overlay_heatmap(
    gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet"
) -> np.ndarray:
    """Blend a colour-mapped heatmap over a grayscale image.

    Args:
        gray: uint8 (H, W) (or (H, W, 3), used as is).
        heatmap: float map in [0, 1]; resized to (H, W) when its shape differs.
        alpha: heatmap weight (0: the image only, 1: the heatmap only).
        colormap: one of :data:`COLORMAPS`.

    Returns:
        uint8 RGB (H, W, 3).

    Raises:
        ModelError: unknown colormap, alpha outside [0, 1] or a bad image.
    """
    if colormap not in COLORMAPS:
        raise ModelError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    if not 0.0 <= alpha <= 1.0:
        raise ModelError(f"alpha must be in [0, 1], got {alpha}")
    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim not in (2, 3) or (gray.ndim == 3 and gray.shape[2] != 3):
        raise ModelError(f"overlay needs a uint8 (H, W) or (H, W, 3) image, got {gray.dtype} {gray.shape}")
    h, w = gray.shape[:2]
    heatmap = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if heatmap.shape != (h, w):
        heatmap = cv2.resize(heatmap, (w, h), interpolation=cv2.INTER_LINEAR)
    colored = cv2.cvtColor(cv2.applyColorMap(np.uint8(np.round(heatmap * 255)), COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)
    base = gray if gray.ndim == 3 else cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(colored, alpha, base, 1.0 - alpha, 0.0)
