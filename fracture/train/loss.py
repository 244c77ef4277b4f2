"""The training loss: weighted binary cross-entropy, plus the body-part term for multi-task models."""
from __future__ import annotations

import torch
import torch.nn.functional as F

BODY_PART_LOSS_WEIGHT = 0.5


def fracture_loss(
    logit: torch.Tensor,
    body_logits: torch.Tensor | None,
    labels: torch.Tensor,
    body: torch.Tensor,
    *,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE on the fracture logit (``pos_weight`` balances the classes), plus
    ``BODY_PART_LOSS_WEIGHT`` x cross-entropy on the known body parts (-1 ignored)."""
    loss = F.binary_cross_entropy_with_logits(logit.float(), labels, pos_weight=pos_weight)
    if body_logits is not None and bool((body >= 0).any()):
        loss = loss + BODY_PART_LOSS_WEIGHT * F.cross_entropy(body_logits.float(), body, ignore_index=-1)
    return loss
