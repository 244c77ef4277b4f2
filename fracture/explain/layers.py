"""Which layers a class-activation map reads, by name.

The last convolutional block (``final``, stride 32 on the timm backbones) is
what Grad-CAM classically reads, but at 288 px it is a 9 x 9 grid: a fracture
line of a few pixels cannot be pointed at more finely than a ninth of the
image. Earlier stages see finer grids (``stride16``: 18 x 18, ``stride8``:
36 x 36) at the cost of less class-specific features; ``fused`` averages the
maps of ``stride16`` and ``final`` (pytorch-grad-cam's multi-layer rule). Which
one localises best is an empirical question per checkpoint, answered on the
validation split by :mod:`fracture.assess.heatmap_select`.

Presets come from timm's ``feature_info`` (the last module at each reduction),
from the registry's ``cam_layers`` for our own networks, and fall back to the
model's ``gradcam_target_layer``. A dotted module name (``backbone.blocks.5``)
is accepted as well.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from fracture.errors import ModelError

from fracture.explain.names import FINAL, LAYER_PRESETS  # noqa: E402,F401  (names live without torch)
_FUSED = ("stride16", "final")
_STRIDES = {"stride16": 16, "stride8": 8}


def _stride_layer(model: nn.Module, stride: int) -> str | None:
    """Dotted name (in ``model``) of the last backbone module at ``stride``, if known."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return None
    info = getattr(backbone, "feature_info", None)
    names = []
    if info is not None:
        entries = info.get_dicts() if hasattr(info, "get_dicts") else info
        names = [entry["module"] for entry in entries if entry.get("reduction") == stride]
    if not names:
        from fracture.models import get_model_spec

        try:
            spec = get_model_spec(getattr(model, "arch", ""))
        except ModelError:
            return None
        named = dict(spec.cam_layers)
        if f"stride{stride}" in named:
            names = [named[f"stride{stride}"]]
    return f"backbone.{names[-1]}" if names else None


def available_layers(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """``{preset: (dotted module names in model, ...)}`` for the presets this model has.

    ``final`` is always there (it is the model's ``gradcam_target_layer``).
    """
    final = f"backbone.{model.gradcam_layer_name}" if hasattr(model, "gradcam_layer_name") else None
    out: dict[str, tuple[str, ...]] = {}
    if final is not None:
        out[FINAL] = (final,)
    for preset, stride in _STRIDES.items():
        name = _stride_layer(model, stride)
        if name is not None and name != final:
            out[preset] = (name,)
    if all(part in out for part in _FUSED):
        out["fused"] = tuple(out[part][0] for part in _FUSED)
    return out


def resolve_layers(model: nn.Module, layer: str | Sequence[str] | None) -> tuple[tuple[str, ...], list[nn.Module]]:
    """Dotted names and modules for a preset, a dotted name, or several of either.

    Args:
        model: usually a FractureModel.
        layer: ``None`` (= ``final``), a preset from :data:`LAYER_PRESETS`, a
            dotted module name inside ``model``, or a sequence of those.

    Raises:
        ModelError: a preset this model does not have, or a name that is not
            one of its modules (the message lists the presets it has).
    """
    wanted = [FINAL] if layer is None else ([layer] if isinstance(layer, str) else list(layer))
    presets = available_layers(model)
    names: list[str] = []
    for item in wanted:
        if item in presets:
            names.extend(presets[item])
        elif item in LAYER_PRESETS:
            raise ModelError(
                f"{getattr(model, 'arch', type(model).__name__)} has no {item!r} layer; "
                f"it has {', '.join(presets) or 'none'}"
            )
        else:
            names.append(item)
    modules = []
    for name in dict.fromkeys(names):
        try:
            modules.append(model.get_submodule(name))
        except AttributeError:
            raise ModelError(
                f"{name!r} is not a layer of {getattr(model, 'arch', type(model).__name__)}; "
                f"use a dotted module name or one of {', '.join(presets) or 'its presets'}"
            ) from None
    return tuple(dict.fromkeys(names)), modules
