"""Model registry, the FractureModel wrapper and offline pretrained weights.

Public API (timm style): ``create_model(name, ...)``, ``list_models()``,
``get_model_spec(name)``; everything else is an implementation detail.
"""
from __future__ import annotations

from fracture.errors import ModelError, WeightsUnavailableError
from fracture.models.network import FractureModel
from fracture.models.registry import (
    ModelInfo,
    ModelSpec,
    count_parameters,
    create_model,
    get_model_spec,
    list_models,
    model_names,
)

__all__ = [
    "FractureModel",
    "ModelError",
    "ModelInfo",
    "ModelSpec",
    "WeightsUnavailableError",
    "count_parameters",
    "create_model",
    "get_model_spec",
    "list_models",
    "model_names",
]
