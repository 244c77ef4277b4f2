"""Where a run's weights start from (another checkpoint) and the averaged copy it validates (EMA).

``init_checkpoint`` continues a trained model on the same task (a higher
resolution, box guidance) instead of starting again from ImageNet;
``ema_decay`` keeps timm's exponential moving average of the weights, which
is what validation, checkpoints and the finished run use.
"""
from __future__ import annotations

import torch

from fracture.errors import TrainingError
from fracture.recipes.config import TrainConfig


def init_from_checkpoint(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Load ``cfg.init_checkpoint``'s weights into ``model`` (same architecture, channels and heads).

    Raises:
        CheckpointError: the file is not a valid checkpoint.
        TrainingError: it is another architecture or its tensors do not fit.
    """
    from fracture.checkpoints.format import load_checkpoint

    source, meta = load_checkpoint(cfg.init_checkpoint)
    if meta.get("architecture") != cfg.model or int(meta.get("in_chans", 0)) != cfg.in_chans:
        raise TrainingError(
            f"{cfg.init_checkpoint}: init_checkpoint is {meta.get('architecture')} with {meta.get('in_chans')} "
            f"channel(s); this run trains {cfg.model} with {cfg.in_chans}: give a checkpoint of the same model"
        )
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        raise TrainingError(
            f"{cfg.init_checkpoint}: its weights do not fit this model (multi-task heads or body parts differ?): {exc}"
        ) from exc


def build_ema(model: torch.nn.Module, decay: float):
    """timm's ``ModelEmaV3`` of ``model`` (on its device), or None when ``decay`` is 0."""
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay)
