"""The training loop, set up the way ``train()`` sets it up, so a benchmark times its real loop.

The training benchmarks must measure the trainer's own data path (cache ->
prefetch thread -> tensor -> augmentation -> normalisation -> step), not a
copy of it that could drift. :func:`build_trainer` runs the same set-up steps
as :func:`fracture.train.trainer.train` (data, cache, model, optimiser) and
stops before the epoch loop; a benchmark then calls the trainer's epoch and
fetch methods directly.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fracture.recipes.config import TrainConfig
from fracture.train.events import EventLog
from fracture.train.loop import TrainLoop
from fracture.train.loss import fracture_loss
from fracture.train.trainer import Trainer


def build_trainer(config: TrainConfig, run_dir: Path, *, callback=None) -> TrainLoop:
    """The training loop with data, image cache, model and optimiser ready (no epoch run yet),
    set up by the trainer's own :meth:`Trainer.setup`.

    Raises:
        FractureError: as :func:`fracture.train.trainer.train` would.
    """
    return Trainer(config, Path(run_dir), EventLog(run_dir, callback), threading.Event()).setup()


def warm_image_cache(config: TrainConfig, *, workers: int | None) -> None:
    """Build the image cache the trainer for ``config`` will open, as
    ``python -m fracture cache build`` would, so the trainer finds it warm.

    Args:
        workers: build processes (None: one per CPU; 0: in this process, which
            a TrainConfig cannot ask for).
    """
    from fracture.cache import ImageCache
    from fracture.data import open_dataset
    from fracture.preprocess.pipeline import Pipeline
    from fracture.settings import get_settings

    manifest = open_dataset(config.data, seed=config.split_seed)
    spec = Pipeline.from_spec(config.preprocess).with_resize(config.image_size, config.resize_mode).to_spec()
    cache_root = Path(config.cache_dir) if config.cache_dir else get_settings().cache_dir
    ImageCache.open_or_build(manifest.frame["path"].tolist(), spec, cache_root / "images", workers=workers)


def set_train_images(trainer: TrainLoop, n_images: int) -> None:
    """Make one training epoch exactly ``n_images`` long.

    The real training rows are cycled (a small benchmark subset is repeated
    to fill the epoch); the epoch's own shuffle still mixes them. Features of
    a frozen-mode trainer are cycled the same way.
    """
    splits = trainer.data.splits
    take = np.resize(np.arange(len(splits["train"])), n_images)
    splits["train"] = splits["train"].take(take)
    if "train" in trainer.features:
        trainer.features["train"] = trainer.features["train"][torch.from_numpy(take).to(trainer.device)]
    trainer.sample_weights = None


def run_epoch(trainer: TrainLoop) -> dict[str, float]:
    """One training epoch through the trainer's own loop; its metrics."""
    metrics = trainer.train_epoch(0)
    if metrics is None:
        raise RuntimeError("the benchmark epoch was cancelled")
    return metrics


def ready_batch(trainer: TrainLoop) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch exactly as the network receives it in training (augmented,
    normalised, on the device, channels_last on CUDA): the step-alone input."""
    size = trainer.config.batch_size
    positions = np.resize(np.arange(len(trainer.data.splits["train"])), size)
    inputs, labels, body, _guide = trainer.fetch(positions)
    return model_inputs(trainer, inputs), labels.to(trainer.device), body.to(trainer.device)


def model_inputs(trainer: TrainLoop, fetched: torch.Tensor) -> torch.Tensor:
    """What the training loop does to a fetched finetune batch before the network:
    move it to the device, convert it to float, augment and normalise it."""
    return trainer.prepare_inputs(trainer.to_device(fetched))


def model_step(trainer: TrainLoop, inputs: torch.Tensor, labels: torch.Tensor, body: torch.Tensor) -> float:
    """One optimiser step of the trainer's model on a ready batch; the loss.

    The same autocast, forward, loss, scaler and optimiser as the training
    loop; the loss is read back (as the loop does every step), which also
    waits for CUDA.
    """
    amp = trainer.optim.amp_dtype
    with torch.autocast(trainer.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logit, body_logits = trainer.forward(inputs, body)
        loss = fracture_loss(logit, body_logits, labels, body, pos_weight=trainer.pos_weight)
    trainer.optimizer_step(loss)
    return float(loss.detach())


def device_info(device: torch.device) -> dict[str, Any]:
    """Name and thread settings of the device a benchmark ran on."""
    info: dict[str, Any] = {"device": str(device), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info
