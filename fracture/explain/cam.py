"""Class-activation maps from the prediction's own forward pass.

pytorch-grad-cam runs a second forward pass with every parameter tracked and
backpropagates through the whole network: on a 2-core CPU that made a
prediction with a heatmap ~5x slower than one without. Here the prediction's
forward pass runs without autograd up to the first target layer; a hook on
that layer turns its output into a fresh leaf that requires grad and switches
autograd on for the rest of the network. So the graph holds only the layers
above the target (for the last block: activation, pooling and the head), the
backward pass computes no parameter gradient and no gradient below the target,
and the logit the heatmap explains is the same number the prediction reports.
The model's parameters, ``requires_grad`` flags and ``.grad`` are never
touched, and the hooks act only on the forward pass of the thread that set
them, so two threads (two app sessions) may predict and explain with one model.

The maps follow pytorch-grad-cam 1.5 exactly (per layer: the method's map,
ReLU, min-max scaling to [0, 1], bilinear upsampling to the input; several
layers: their mean, scaled again); ``tests/explain/test_gradcam.py`` checks each
method against pytorch-grad-cam. One deliberate difference: the eigen methods
fix the sign of the principal component (the larger of |min| and |max| is
positive, Chung & Ying 2025), where pytorch-grad-cam's sign is arbitrary.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fracture.errors import ModelError

from fracture.explain.names import GRADIENT_FREE, METHODS  # noqa: E402,F401  (names live without torch)
TARGETS = ("fracture", "body_part")
_EPS_SCALE = 1e-7  # pytorch_grad_cam.utils.image.scale_cam_image


@dataclass
class Capture:
    """One forward pass with the target layers' activations and the score's gradients.

    Attributes:
        logit: (B,) fracture logits, detached (the prediction's own numbers).
        body_logits: (B, P) or None, detached.
        activations: per target layer (in the order asked), (B, C, h, w).
        gradients: the explained score's gradient w.r.t. each activation, or
            None where it was not computed (``need_grads=False``).
        input_size: (H, W) of the network input.
    """

    logit: torch.Tensor
    body_logits: torch.Tensor | None
    activations: list[torch.Tensor]
    gradients: list[torch.Tensor | None]
    input_size: tuple[int, int]


def capture(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[nn.Module],
    *,
    target: str = "fracture",
    body_part=None,
    class_index: torch.Tensor | Sequence[int] | int | None = None,
    need_grads: bool = True,
) -> Capture:
    """Run ``model`` once on ``x``, keeping the target layers' activations and gradients.

    Args:
        model: a FractureModel (or any module returning ``(logit, body_logits)``),
            already in the mode wanted (eval for explanations).
        x: (B, C, H, W) input batch.
        layers: modules inside ``model`` to read, in any order.
        target: ``"fracture"`` explains each image's fracture logit;
            ``"body_part"`` the body-part logit of ``class_index`` (None: the
            predicted part).
        body_part: passed to the model (the known body part of a multi-task model).
        need_grads: False skips the backward pass (EigenCAM).

    Raises:
        ModelError: unknown target, a layer that does not run (or runs twice)
            in the forward pass, or one whose output is not a 4-d tensor.
    """
    if target not in TARGETS:
        raise ModelError(f"unknown Grad-CAM target {target!r}; choose one of {', '.join(TARGETS)}")
    if x.ndim != 4:
        raise ModelError(f"a CAM needs a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    slots: dict[int, torch.Tensor] = {}
    index_of = {id(module): i for i, module in enumerate(layers)}
    owner = threading.get_ident()

    def hook(module: nn.Module, _inputs, output):
        if threading.get_ident() != owner:  # another thread's forward through a shared model (the app)
            return None
        i = index_of[id(module)]
        if i in slots:
            raise ModelError(f"CAM layer {type(module).__name__} runs twice in one forward pass; pick another layer")
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise ModelError(
                f"CAM layer {type(module).__name__} returns {type(output).__name__} "
                f"{tuple(getattr(output, 'shape', ()))}, not a (B, C, h, w) feature map"
            )
        if need_grads and not output.requires_grad:
            # The first target layer to run: the graph starts here. Later ones
            # are downstream of it and already carry gradients.
            output = output.detach().requires_grad_(True)
            torch.set_grad_enabled(True)
        slots[i] = output
        return output

    handles = [module.register_forward_hook(hook) for module in layers]
    try:
        with torch.no_grad():  # the hook turns autograd on at the first target layer
            logit, body_logits = model(x, body_part=body_part)
            score = None
            if need_grads:
                score = _score(logit, body_logits, target, class_index)
    finally:
        for handle in handles:
            handle.remove()
    missing = [type(layers[i]).__name__ for i in range(len(layers)) if i not in slots]
    if missing:
        raise ModelError(f"CAM layer(s) {', '.join(missing)} did not run in the model's forward pass")
    activations = [slots[i] for i in range(len(layers))]
    gradients: list[torch.Tensor | None] = [None] * len(layers)
    if need_grads:
        if not score.requires_grad:
            raise ModelError("the explained score does not depend on the CAM layer(s); pick a layer the output uses")
        wanted = [i for i, a in enumerate(activations) if a.requires_grad]
        found = torch.autograd.grad(score, [activations[i] for i in wanted], allow_unused=True)
        for i, grad in zip(wanted, found):
            gradients[i] = torch.zeros_like(activations[i]) if grad is None else grad
    return Capture(
        logit=logit.detach(),
        body_logits=None if body_logits is None else body_logits.detach(),
        activations=[a.detach() for a in activations],
        gradients=gradients,
        input_size=(int(x.shape[-2]), int(x.shape[-1])),
    )


def _score(logit: torch.Tensor, body_logits, target: str, class_index) -> torch.Tensor:
    """The sum over the batch of each image's explained output (images do not interact in eval mode)."""
    if target == "fracture":
        return logit.float().sum()
    if body_logits is None:
        raise ModelError("target 'body_part' needs a multi-task model (this one has no body-part head)")
    if class_index is None:
        index = body_logits.detach().argmax(dim=1)
    else:
        index = torch.as_tensor(class_index, dtype=torch.long, device=body_logits.device)
        if index.ndim == 0:
            index = index.expand(body_logits.shape[0])
    return body_logits.float().gather(1, index.view(-1, 1)).sum()


def _sum_hw(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=(2, 3), keepdim=True)


def _projection(t: torch.Tensor) -> torch.Tensor:
    """First principal component of each image's (h*w, C) matrix, sign-fixed; (B, h, w)."""
    b, c, h, w = t.shape
    flat = torch.nan_to_num(t.float()).reshape(b, c, h * w).transpose(1, 2)
    flat = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    proj = (flat @ vh[:, 0, :].unsqueeze(2)).reshape(b, h, w)
    flip = proj.amin(dim=(1, 2)).abs() > proj.amax(dim=(1, 2)).abs()
    return torch.where(flip.view(b, 1, 1), -proj, proj)


def layer_map(method: str, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
    """The raw (B, h, w) map of one layer, before ReLU and scaling (pytorch-grad-cam's formulas)."""
    a = activations.float()
    if method == "eigencam":
        return _projection(a)
    if gradients is None:
        raise ModelError(f"{method} needs gradients; capture with need_grads=True")
    g = gradients.float()
    if method == "gradcam":
        return (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)
    if method == "hirescam":
        return (g * a).sum(dim=1)
    if method == "gradcamelementwise":
        return F.relu(g * a).sum(dim=1)
    if method == "layercam":
        return (F.relu(g) * a).sum(dim=1)
    if method == "eigengradcam":
        return _projection(g * a)
    if method == "gradcam++":
        g2 = g * g
        aij = g2 / (2 * g2 + _sum_hw(a) * g2 * g + 1e-6)
        aij = torch.where(g != 0, aij, torch.zeros_like(aij))
        weights = (F.relu(g) * aij).sum(dim=(2, 3), keepdim=True)
        return (weights * a).sum(dim=1)
    if method == "xgradcam":
        weights = (g * a / (_sum_hw(a) + 1e-7)).sum(dim=(2, 3), keepdim=True)
        return (weights * a).sum(dim=1)
    raise ModelError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")


def _scale(maps: torch.Tensor) -> torch.Tensor:
    """Per image: subtract the minimum, divide by (1e-7 + maximum)."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    maps = maps - low
    return maps / (_EPS_SCALE + maps.amax(dim=(-2, -1), keepdim=True))


def maps_from_capture(
    cap: Capture, method: str, *, layer_indices: Sequence[int] | None = None, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """(B, H, W) float32 heatmaps in [0, 1] at ``size`` (default: the input size).

    Args:
        cap: from :func:`capture`.
        method: a key of :data:`METHODS`.
        layer_indices: which captured layers to combine (default: all); their
            maps are averaged, as pytorch-grad-cam does with several layers.
        size: (H, W) of the output maps.

    Raises:
        ModelError: unknown method, or gradients missing for a gradient method.
    """
    if method not in METHODS:
        raise ModelError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
    indices = list(range(len(cap.activations))) if layer_indices is None else list(layer_indices)
    height, width = size or cap.input_size
    per_layer = []
    for i in indices:
        raw = F.relu(layer_map(method, cap.activations[i], cap.gradients[i]))
        scaled = _scale(raw).unsqueeze(1)
        per_layer.append(F.interpolate(scaled, size=(height, width), mode="bilinear", align_corners=False))
    out = _scale(F.relu(torch.cat(per_layer, dim=1)).mean(dim=1))
    return torch.nan_to_num(out, nan=0.0).clamp_(0.0, 1.0)
