"""FractureModel: a backbone, a fracture head and an optional body-part head.

The multi-task design follows the EfficientNet-B0 MURA model this project
reproduces: the network also predicts the body part, and a 32-d embedding of the
body part (the known one, or its own guess) is concatenated to the pooled
features before the fracture head, so the fracture decision can depend on which
bone it looks at.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fracture.errors import ModelError

BODY_EMBED_DIM = 32


class FractureModel(nn.Module):
    """Backbone returning pooled features, plus the fracture (and body-part) heads.

    Args:
        backbone: a module whose ``forward`` returns pooled features (B, F),
            e.g. a timm model created with ``num_classes=0``.
        arch: registry name, stored in checkpoints to rebuild the model.
        num_features: F, the width of the pooled features.
        gradcam_layer: dotted name, inside ``backbone``, of the layer Grad-CAM
            reads (the last convolutional block).
        in_chans: input channels.
        num_body_parts: P; 0 for a single-task model.
        drop_rate: dropout before the heads.
        default_image_size: the side length the architecture is meant for.

    Attributes:
        arch, in_chans, num_body_parts, num_features, default_image_size,
        gradcam_layer_name; ``gradcam_target_layer`` resolves the module.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        arch: str,
        num_features: int,
        gradcam_layer: str,
        in_chans: int = 3,
        num_body_parts: int = 0,
        drop_rate: float = 0.2,
        default_image_size: int = 224,
    ) -> None:
        super().__init__()
        if num_body_parts < 0:
            raise ModelError(f"num_body_parts must be 0 (single task) or more, got {num_body_parts}")
        if not 0.0 <= drop_rate < 1.0:
            raise ModelError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.backbone = backbone
        self.arch = arch
        self.in_chans = in_chans
        self.num_body_parts = num_body_parts
        self.num_features = num_features
        self.default_image_size = default_image_size
        self.drop_rate = drop_rate
        # A name, not the module: storing the module would register it twice and
        # duplicate its weights in the state dict.
        self.gradcam_layer_name = gradcam_layer
        self.head_drop = nn.Dropout(drop_rate)
        if num_body_parts > 0:
            self.body_head = nn.Linear(num_features, num_body_parts)
            self.body_embedding = nn.Embedding(num_body_parts, BODY_EMBED_DIM)
            self.fracture_head = nn.Linear(num_features + BODY_EMBED_DIM, 1)
        else:
            self.body_head = None
            self.body_embedding = None
            self.fracture_head = nn.Linear(num_features, 1)

    @property
    def multitask(self) -> bool:
        return self.num_body_parts > 0

    @property
    def gradcam_target_layer(self) -> nn.Module:
        """The backbone's last convolutional block (where Grad-CAM reads activations).

        Raises:
            ModelError: the configured layer name does not exist in the backbone.
        """
        try:
            return self.backbone.get_submodule(self.gradcam_layer_name)
        except AttributeError as exc:
            raise ModelError(
                f"{self.arch}: Grad-CAM layer {self.gradcam_layer_name!r} is not in the backbone"
            ) from exc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, F)."""
        return self.backbone(x)

    def forward_head(
        self,
        features: torch.Tensor,
        body_part: torch.Tensor | Sequence[int] | int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Heads on pooled features.

        Args:
            features: (B, F) from :meth:`forward_features`.
            body_part: body-part index per image (LongTensor (B,), a sequence or
                one int for all); ``None`` or ``-1`` means unknown, in which case
                the model's own (detached) body-part prediction is embedded.
                Ignored by a single-task model.

        Returns:
            ``(fracture_logit (B,), body_logits (B, P) or None)``.

        Raises:
            ModelError: a body-part index outside ``[-1, P)``.
        """
        features = self.head_drop(features)
        if self.body_head is None:
            return self.fracture_head(features).squeeze(1), None
        body_logits = self.body_head(features)
        index = self._body_index(body_part, body_logits)
        joint = torch.cat([features, self.body_embedding(index)], dim=1)
        return self.fracture_head(joint).squeeze(1), body_logits

    def forward(
        self,
        x: torch.Tensor,
        body_part: torch.Tensor | Sequence[int] | int | None = None,
        *,
        with_cam: bool = False,
    ):
        """Images (B, C, H, W) -> ``(fracture_logit (B,), body_logits (B, P) or None)``.

        With ``with_cam`` a third item, the class-activation map (B, h, w): the
        fracture head's weights on the feature map before pooling, from the same
        pass (box-guided training uses it; under DDP it must come through
        ``forward`` so gradients are synchronised).

        Raises:
            ModelError: ``with_cam`` on a backbone without a spatial feature map.
        """
        if not with_cam:
            return self.forward_head(self.forward_features(x), body_part=body_part)
        fmap = self.feature_map(x)
        logit, body_logits = self.forward_head(self._pool(fmap), body_part=body_part)
        weight = self.fracture_head.weight[0, : fmap.shape[1]].to(fmap.dtype)
        return logit, body_logits, torch.einsum("c,bchw->bhw", weight, fmap)

    @property
    def has_feature_map(self) -> bool:
        """True when the backbone exposes its last feature map and its pooling separately."""
        backbone = self.backbone
        return hasattr(backbone, "forward_features") and (
            hasattr(backbone, "forward_head") or hasattr(backbone, "global_pool"))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map (B, F, h, w), before global pooling."""
        if not self.has_feature_map:
            raise ModelError(f"{self.arch}: its backbone exposes no spatial feature map")
        return self.backbone.forward_features(x)

    def _pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """Pooled features exactly as :meth:`forward_features` computes them."""
        if hasattr(self.backbone, "forward_head"):
            return self.backbone.forward_head(fmap, pre_logits=True)
        return self.backbone.global_pool(fmap).flatten(1)

    def _body_index(self, body_part, body_logits: torch.Tensor) -> torch.Tensor:
        predicted = body_logits.detach().argmax(dim=1)
        if body_part is None:
            return predicted
        given = torch.as_tensor(body_part, dtype=torch.long, device=body_logits.device)
        if given.ndim == 0:
            given = given.expand(body_logits.shape[0])
        if given.shape != predicted.shape:
            raise ModelError(
                f"body_part has shape {tuple(given.shape)}, expected ({body_logits.shape[0]},) for this batch"
            )
        if bool(((given < -1) | (given >= self.num_body_parts)).any()):
            raise ModelError(
                f"body_part indices must be -1 (unknown) or in [0, {self.num_body_parts}), "
                f"got {sorted(set(given.tolist()))}"
            )
        return torch.where(given < 0, predicted, given)

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, in_chans={self.in_chans}, num_features={self.num_features}, "
            f"num_body_parts={self.num_body_parts}"
        )


def model_normalization(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std the backbone was pretrained with (timm's pretrained_cfg), else 0.5/0.5."""
    backbone = getattr(model, "backbone", model)
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in cfg.get("std", (0.5, 0.5, 0.5)))
    return mean, std
