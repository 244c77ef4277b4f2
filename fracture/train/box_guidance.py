"""Box-guided training: pull the class-activation map of fractured images into their boxes.

A classifier can reach a high AUC while looking at the wrong place (the other
hand, a marker, the cast). Where a positive training image has annotated
fracture boxes, this adds an auxiliary loss in the spirit of attention mining
and "CAM in box" guidance: the fracture head's class-activation map (its
weights applied to the last feature map, the same map the logit is the mean
of) is turned into a spatial distribution with a softmax, and the loss is the
negative log of the probability mass that falls inside the boxes. It is zero
for negatives and for images without boxes, so it never changes what a model
without boxes learns.

The boxes are rasterised once into masks at the cache's input geometry
(letterbox padding included) and go through the same random affine as their
images, so an augmented image's mask still covers its fracture.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fracture.data.boxes import Box, box_mask, boxes_to_input
from fracture.errors import ConfigError

MASK_SIZE = 64
"""Masks are stored at 64 x 64 (the feature maps are 7-16 cells wide): 4 KB an image."""


def build_box_masks(
    boxes: Sequence[Sequence[Box]],
    original_sizes: Sequence[tuple[int, int] | None],
    image_size: int,
    resize_mode: str,
    labels: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Masks (N, MASK_SIZE, MASK_SIZE) uint8 in model-input geometry and a bool ``has_box`` (N,).

    Only positive images with boxes and a known original size get a mask.
    """
    n = len(boxes)
    masks = np.zeros((n, MASK_SIZE, MASK_SIZE), dtype=np.uint8)
    has_box = np.zeros(n, dtype=bool)
    for i, (image_boxes, size, label) in enumerate(zip(boxes, original_sizes, labels)):
        if not image_boxes or size is None or label < 0.5:
            continue
        mapped = boxes_to_input(image_boxes, size, image_size, resize_mode)
        masks[i] = box_mask(mapped, MASK_SIZE, MASK_SIZE).astype(np.uint8)
        has_box[i] = bool(masks[i].any())
    return masks, has_box


def check_supported(model: torch.nn.Module) -> None:
    """Box guidance needs the spatial feature map.

    Raises:
        ConfigError: the backbone exposes none (set box_loss_weight to 0).
    """
    if not getattr(model, "has_feature_map", False):
        raise ConfigError(
            f"box_loss_weight > 0 needs a backbone with a spatial feature map; "
            f"{getattr(model, 'arch', type(model).__name__)} has none: set box_loss_weight to 0"
        )


def train_masks(split, cfg, emit) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(masks uint8 (N, MASK_SIZE, MASK_SIZE), has_box bool (N,))`` for a training split, or None
    when box guidance is off. Original sizes come from the image headers (no decoding)."""
    from fracture.data.imageio import read_image_header
    from fracture.errors import ImageLoadError

    if not cfg.box_loss_weight:
        return None
    frame = split.frame
    boxes = frame["boxes"].tolist() if "boxes" in frame.columns else [()] * len(frame)
    sizes: list[tuple[int, int] | None] = []
    for path, image_boxes, label in zip(frame["path"], boxes, split.labels):
        if not image_boxes or label < 0.5:
            sizes.append(None)
            continue
        try:
            header = read_image_header(path)
        except ImageLoadError:
            sizes.append(None)
            continue
        sizes.append((header.height, header.width))
    masks, has_box = build_box_masks(boxes, sizes, cfg.image_size, cfg.resize_mode, split.labels)
    n_pos = int((np.asarray(split.labels) > 0.5).sum())
    emit("log", message=f"box guidance: {int(has_box.sum())} of {n_pos} positive training images have boxes "
                        f"(weight {cfg.box_loss_weight})")
    if not has_box.any():
        emit("log", level="warning", message="box guidance is on but no training image has boxes: it has no effect")
    return torch.from_numpy(masks), torch.from_numpy(has_box)


def box_loss(cam: torch.Tensor, masks: torch.Tensor, has_box: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log(mass of softmax(CAM) inside the boxes)`` over images with boxes; 0 if none.

    Args:
        cam: (B, h, w) class-activation maps.
        masks: (B, H, W) float masks in [0, 1] in input geometry (augmented).
        has_box: (B,) bool.
    """
    if not bool(has_box.any()):
        return cam.sum() * 0.0
    cam = cam[has_box].float()
    masks = masks[has_box].float().unsqueeze(1)
    h, w = cam.shape[-2:]
    cell_in_box = F.adaptive_avg_pool2d(masks, (h, w)).flatten(1)  # share of each cell inside a box
    attention = torch.softmax(cam.flatten(1), dim=1)
    mass = (attention * cell_in_box).sum(dim=1)
    return -torch.log(mass.clamp_min(1e-6)).mean()
