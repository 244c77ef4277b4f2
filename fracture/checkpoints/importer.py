"""Bring an EfficientNet (or other registered model) trained elsewhere into the app.

A state dict in timm layout or in the EfficientNet-PyTorch layout (``_conv_stem``,
``_blocks``, ``_fc``) becomes a project checkpoint: the backbone weights go into
the registered timm backbone (EfficientNet-PyTorch keys mapped in order, shape
by shape), and the classifier becomes the fracture head. A 2-class softmax head
is folded into one logit (``logit = z1 - z0`` gives the same probability), a
1-class head is taken as it is. Files are read with ``torch.load(weights_only=True)``
or safetensors only, never unpickling code.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from fracture.errors import CheckpointError, ModelError

log = logging.getLogger(__name__)

CLASSIFIER_KEYS = (("classifier.weight", "classifier.bias"), ("_fc.weight", "_fc.bias"), ("fc.weight", "fc.bias"),
                   ("head.fc.weight", "head.fc.bias"))


def _split_classifier(state: dict[str, torch.Tensor], source: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    for weight_key, bias_key in CLASSIFIER_KEYS:
        if weight_key in state and bias_key in state:
            rest = {k: v for k, v in state.items() if k not in (weight_key, bias_key)}
            return rest, state[weight_key], state[bias_key]
    raise CheckpointError(
        f"{source}: no classifier found (looked for {', '.join(w for w, _ in CLASSIFIER_KEYS)}); "
        "the file must hold a trained model with its final layer"
    )


def _fold_classifier(weight: torch.Tensor, bias: torch.Tensor, positive_index: int, source: str):
    classes = weight.shape[0]
    if classes == 1:
        return weight, bias
    if classes == 2:
        negative = 1 - positive_index
        return (weight[positive_index] - weight[negative]).unsqueeze(0), (bias[positive_index] - bias[negative]).unsqueeze(0)
    raise CheckpointError(
        f"{source}: classifier has {classes} outputs; only binary models (1 logit or 2-class softmax) can be imported"
    )


def import_state_dict(
    weights: str | Path,
    model_name: str,
    out: str | Path,
    *,
    num_classes: int | None = None,
    positive_index: int = 1,
    image_size: int | None = None,
    resize_mode: str = "letterbox",
    class_names: tuple[str, str] = ("normal", "abnormal"),
    threshold: float = 0.5,
    in_chans: int = 3,
) -> Path:
    """Write a project checkpoint built from a foreign state dict; return its path.

    Raises:
        CheckpointError: unreadable file, no or non-binary classifier, or
            ``num_classes`` that disagrees with the file.
        ModelError: unknown ``model_name`` or weights that do not fit it.
    """
    from fracture.checkpoints.format import save_checkpoint
    from fracture.models.network import model_normalization
    from fracture.models import create_model, get_model_spec
    from fracture.models.pretrained import _fit_to_backbone, _is_efficientnet_pytorch_layout, map_state_dict_in_order, read_state_dict

    source = str(weights)
    spec = get_model_spec(model_name)
    state = dict(read_state_dict(weights))
    body, weight, bias = _split_classifier(state, source)
    if num_classes is not None and weight.shape[0] != num_classes:
        raise CheckpointError(f"{source}: classifier has {weight.shape[0]} outputs, --num-classes says {num_classes}")
    model = create_model(model_name, pretrained=False, in_chans=in_chans)
    if _is_efficientnet_pytorch_layout(body):
        target = {k: v.shape for k, v in model.backbone.state_dict().items()}
        body = dict(map_state_dict_in_order(body, target, source_name=source, target_name=f"{model_name} backbone"))
    fitted = _fit_to_backbone(spec, model.backbone, body, source)
    model.backbone.load_state_dict(fitted, strict=True)
    head_w, head_b = _fold_classifier(weight.float(), bias.float(), positive_index, source)
    if head_w.shape != model.fracture_head.weight.shape:
        raise ModelError(
            f"{source}: classifier input width {head_w.shape[1]} does not match {model_name}'s "
            f"{model.fracture_head.weight.shape[1]} pooled features"
        )
    with torch.no_grad():
        model.fracture_head.weight.copy_(head_w)
        model.fracture_head.bias.copy_(head_b)
    mean, std = model_normalization(model)
    size = image_size or spec.default_image_size
    meta: dict[str, Any] = {
        "image_size": size,
        "preprocess": [{"op": "resize", "size": size, "mode": resize_mode}],
        "normalization": {"mean": list(mean), "std": list(std)},
        "class_names": list(class_names),
        "body_parts": [],
        "multitask": False,
        "threshold": float(threshold),
        "threshold_rule": "given at import (not validated)",
        "train_config": {"imported_from": Path(source).name},
        "metrics": {},
        "dataset_fingerprint": None,
    }
    path = save_checkpoint(out, model, meta)
    log.info("imported %s as %s into %s", source, model_name, path)
    return Path(path)
