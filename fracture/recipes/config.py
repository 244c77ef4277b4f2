"""The one training configuration, shared by the CLI, the Train page and recipes.

A run directory always holds the resolved config as ``config.json`` so that a
run can be resumed, reproduced or compared without guessing its settings.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fracture.errors import ConfigError
from fracture.preprocess.ops import RESIZE_MODES  # noqa: F401  (owner: fracture.preprocess; re-exported)

MODES = ("finetune", "frozen")
OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("cosine_restarts", "plateau", "onecycle", "none")
BALANCING = ("none", "class_weights", "oversample")
MONITORS = ("val_roc_auc", "val_loss", "val_accuracy", "val_kappa", "last")
"""What picks the saved weights: the best epoch by a validation metric, or ``last`` (the final
epoch's weights, e.g. an EMA at the end of a schedule; validation is still computed and logged)."""
THRESHOLD_RULES = ("youden", "sensitivity", "f1")


@dataclass
class AugmentConfig:
    """Training-split augmentation; never applied to validation or test data."""

    hflip: bool = True
    vflip: bool = False
    rotation_deg: float = 15.0
    shift: float = 0.1
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    burn_ins: float = 0.0
    """Share of training images that get a random L/R lead marker or text label burnt in
    (fracture.preprocess.markers): teaches the network that such marks say nothing about the bone."""

    def validate(self) -> None:
        if not 0 <= self.rotation_deg <= 45:
            raise ConfigError(f"augment.rotation_deg={self.rotation_deg}: use 0..45 degrees")
        if not 0 <= self.burn_ins <= 1:
            raise ConfigError(f"augment.burn_ins={self.burn_ins}: use a share of images in 0..1")
        for name in ("shift", "zoom", "brightness", "contrast"):
            value = getattr(self, name)
            if not 0 <= value <= 0.5:
                raise ConfigError(f"augment.{name}={value}: use a fraction in 0..0.5")


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    ``data`` is a dataset root that :func:`fracture.data.open_dataset` can read.
    ``preprocess`` holds the enhancement steps only; the resize step
    (``image_size``, ``resize_mode``) is appended by the trainer, and the full
    pipeline is stored in every checkpoint.
    """

    data: str = ""
    model: str = "small_cnn"
    mode: str = "finetune"
    pretrained: bool | None = None  # None: on where offline weights exist (resolved by validate)
    weights_path: str | None = None
    in_chans: int = 3
    image_size: int = 224
    resize_mode: str = "letterbox"
    preprocess: list[dict[str, Any]] = field(default_factory=list)
    multitask: bool = False
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine_restarts"
    restart_period: int = 5
    warmup_fraction: float = 0.2
    balancing: str = "class_weights"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping_patience: int = 0
    monitor: str = "val_roc_auc"
    threshold_rule: str = "youden"
    target_sensitivity: float | None = None
    freeze_stages: int = 0
    tta_hflip: bool = False
    seed: int = 0
    split_seed: int = 0
    device: str = "auto"
    workers: int = 0
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    max_train_images: int | None = None
    eval_test: bool = True
    checkpoint_half: bool = False
    cache_dir: str | None = None
    box_loss_weight: float = 0.0
    ema_decay: float = 0.0
    init_checkpoint: str | None = None
    notes: str = ""
    recipe: str = ""

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first invalid field; return self."""
        choices = {
            "mode": MODES,
            "optimizer": OPTIMIZERS,
            "scheduler": SCHEDULERS,
            "balancing": BALANCING,
            "monitor": MONITORS,
            "threshold_rule": THRESHOLD_RULES,
            "resize_mode": RESIZE_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if not self.data:
            raise ConfigError("data is empty: give a dataset root (--data DIR)")
        self._check_weights()
        self._check_recipe()
        if self.in_chans not in (1, 3):
            raise ConfigError(f"in_chans={self.in_chans}: use 1 or 3")
        if not 32 <= self.image_size <= 1024:
            raise ConfigError(f"image_size={self.image_size}: use 32..1024 pixels")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")
        for name in ("seed", "split_seed"):  # numpy's generators take 0..2**32-1 (refused late, without a name)
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                raise ConfigError(f"{name}={value!r}: use a whole number in 0..{2**32 - 1} (--{name.replace('_', '-')})")
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr={self.lr}: use a learning rate in (0, 1)")
        if self.threshold_rule == "sensitivity" and not self.target_sensitivity:
            raise ConfigError("threshold_rule='sensitivity' needs target_sensitivity (e.g. 0.9)")
        if not 0.0 <= self.box_loss_weight <= 10.0:
            raise ConfigError(f"box_loss_weight={self.box_loss_weight}: use 0 (off) to 10")
        if not (self.ema_decay == 0.0 or 0.5 <= self.ema_decay < 1.0):
            raise ConfigError(f"ema_decay={self.ema_decay}: use 0 (off) or a decay in [0.5, 1), e.g. 0.995")
        if self.box_loss_weight and self.mode != "finetune":
            raise ConfigError("box_loss_weight needs mode 'finetune' (frozen features have no spatial map to guide)")
        self.augment.validate()
        return self

    def _check_weights(self) -> None:
        """Resolve ``pretrained=None`` (on where offline weights exist) and refuse frozen mode on
        random weights (its features carry no signal: it trains at chance). Whether asked-for
        weights exist is :meth:`check_weights_available`'s (a recipe may expect ``--weights-path``)."""
        from fracture.models import list_models

        infos = {info.name: info for info in list_models()}
        if self.model not in infos:
            raise ConfigError(f"model={self.model!r}: choose one of {', '.join(infos)}")
        offline = infos[self.model].offline_weights
        have = ", ".join(name for name, info in infos.items() if info.offline_weights) or "none"
        if self.pretrained is None:
            self.pretrained = bool(offline or self.weights_path)
        if self.mode == "frozen" and not self.pretrained and not self.weights_path:  # a weights file implies them
            raise ConfigError(
                f"mode=frozen with random {self.model} weights: frozen features carry no signal and the "
                f"heads train at chance. Use --pretrained (offline weights exist for: {have}), give "
                "--weights-path FILE, or train the whole network with --mode finetune"
            )

    def check_weights_available(self) -> None:
        """Refuse pretrained weights this server does not have, before a training process starts.

        Raises:
            WeightsUnavailableError: names the model and the models that have offline weights.
        """
        from fracture.errors import WeightsUnavailableError
        from fracture.models import list_models

        if not self.pretrained or self.weights_path:
            return
        infos = {info.name: info for info in list_models()}
        info = infos.get(self.model)
        if info is not None and not info.offline_weights:
            have = ", ".join(name for name, i in infos.items() if i.offline_weights) or "none"
            raise WeightsUnavailableError(
                f"{self.model}: no pretrained weights are available offline on this server (models with "
                f"offline weights: {have}); turn pretrained off, give a weights file, or pick one of those"
            )

    def _check_recipe(self) -> None:
        """``recipe`` names where a run came from: a file in fracture/recipes/ or a path, never a run's config."""
        if self.recipe and (not self.recipe.endswith(".json") or Path(self.recipe).name == "config.json"):
            raise ConfigError(
                f"recipe={self.recipe!r}: give the recipe file a run came from (NAME.json in fracture/recipes/, "
                "or a path), or leave it empty; a run's own config.json is not a recipe"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict (a recipe or config.json); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - {"$schema", "description"})
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {k: v for k, v in values.items() if k in known}
        augment = values.pop("augment", None)
        config = cls(**values)
        if isinstance(augment, dict):
            aug_known = {f.name for f in dataclasses.fields(AugmentConfig)}
            bad = sorted(set(augment) - aug_known)
            if bad:
                raise ConfigError(f"unknown augment option(s): {', '.join(bad)}; known: {', '.join(sorted(aug_known))}")
            config.augment = AugmentConfig(**augment)
        elif isinstance(augment, AugmentConfig):
            config.augment = augment
        return config

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        from fracture.util.jsonio import read_json

        try:
            values = read_json(path, max_bytes=1024 * 1024, error=ConfigError, what="(training config)")
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object of training options")
        return cls.from_dict(values)

    def save(self, path: str | Path) -> None:
        from fracture.util.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))
