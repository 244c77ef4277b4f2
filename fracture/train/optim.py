"""Optimisation: which parameters train, the optimiser, the learning-rate schedule, mixed precision.

Stage freezing uses timm's parameter grouping (``model.group_matcher``: stem
first, then each block stage), so ``freeze_stages`` means the same thing for
EfficientNet, ResNet and DenseNet; networks without a matcher (the small CNN)
count their parameterised top-level children. The optimiser comes from timm's
``create_optimizer_v2``. The schedules stay torch's: timm's scheduler factory
has no equivalent of ``OneCycleLR``, which the shipped FracAtlas model was
trained with, and a recipe must keep reproducing its model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from fracture.errors import TrainingError
from fracture.recipes.config import TrainConfig


@dataclass
class Optimisation:
    """The optimiser and what steps with it."""

    optimizer: torch.optim.Optimizer
    step_scheduler: Any  # stepped every batch (cosine restarts, one-cycle) or None
    plateau: Any  # ReduceLROnPlateau stepped on the monitored metric, or None
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "step_scheduler": self.step_scheduler.state_dict() if self.step_scheduler else None,
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.step_scheduler and state["step_scheduler"]:
            self.step_scheduler.load_state_dict(state["step_scheduler"])
        if self.plateau and state["plateau"]:
            self.plateau.load_state_dict(state["plateau"])
        self.scaler.load_state_dict(state["scaler"])

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def backbone_stages(backbone: nn.Module) -> list[list[str]]:
    """Parameterised stages of a backbone in input order, as lists of module names.

    timm models group their modules with ``group_matcher(coarse=True)`` (stem,
    then each block stage; the head convolution last); others fall back to
    their parameterised top-level children.
    """
    matcher = getattr(backbone, "group_matcher", None)
    if callable(matcher):
        from timm.models import group_modules

        groups = group_modules(backbone, matcher(coarse=True))
        return [names for _, names in sorted(groups.items())]
    return [[name] for name, module in backbone.named_children() if any(True for _ in module.parameters())]


def freeze_stages(model: nn.Module, k: int) -> int:
    """Freeze the first ``k`` backbone stages (stem first); the number of frozen parameters.

    BatchNorm layers keep updating their running statistics (timm's
    ``freeze(..., include_bn_running_stats=False)``), as before.
    """
    from timm.utils import freeze

    stages = backbone_stages(model.backbone)[:k]
    names = [name for stage in stages for name in stage]
    if not names:
        return 0
    freeze(model.backbone, names, include_bn_running_stats=False)
    return sum(p.numel() for name in names for p in model.backbone.get_submodule(name).parameters())


def build_optimisation(
    model: nn.Module, cfg: TrainConfig, *, steps_per_epoch: int, monitor: str, device: torch.device,
    log: Callable[[str], None],
) -> Optimisation:
    """Optimiser over the trainable parameters, the configured schedule and the AMP scaler."""
    from timm.optim import create_optimizer_v2

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("no trainable parameters (all stages frozen?): lower freeze_stages")
    # filter_bias_and_bn=False: weight decay on every parameter, as the shipped recipes were trained
    optimizer = create_optimizer_v2(params, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    filter_bias_and_bn=False)
    total = steps_per_epoch * cfg.epochs
    step_scheduler = plateau = None
    if cfg.scheduler == "cosine_restarts":
        step_scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=max(1, cfg.restart_period * steps_per_epoch), eta_min=cfg.lr * 0.01
        )
    elif cfg.scheduler == "onecycle":
        if total < 4:
            log(f"one-cycle schedule needs at least 4 steps, this run has {total}: constant learning rate")
        else:
            # at least two warm-up and two annealing steps, whatever the fraction
            pct = min(max(cfg.warmup_fraction, 2.0 / total), 1.0 - 2.0 / total)
            step_scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total,
                                                                 pct_start=pct)
    elif cfg.scheduler == "plateau":
        mode = "min" if monitor == "val_loss" else "max"
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.3, patience=1)
    amp_dtype = None
    if device.type == "cuda" and cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return Optimisation(optimizer, step_scheduler, plateau, scaler, amp_dtype)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)
