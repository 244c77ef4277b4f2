"""The trainer, set up the way ``train()`` sets it up, so a benchmark times its real loop.

The training benchmarks must measure the trainer's own data path (cache ->
prefetch thread -> tensor -> augmentation -> normalisation -> step), not a
copy of it that could drift. :func:`build_trainer` runs the same set-up steps
as :func:`fracture.train.trainer.train` (data, cache, model, optimiser) and
stops before the epoch loop; a benchmark then calls the trainer's epoch and
fetch methods directly.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fracture.train.config import TrainConfig
from fracture.train.events import EventLog
from fracture.train.trainer import SplitData, _Trainer


def build_trainer(config: TrainConfig, run_dir: Path, *, callback=None) -> _Trainer:
    """A trainer with data, image cache, model and optimiser ready (no epoch run yet).

    Raises:
        FractureError: as :func:`fracture.train.trainer.train` would.
    """
    from fracture.inference import resolve_device

    trainer = _Trainer(config, Path(run_dir), EventLog(run_dir, callback), threading.Event(), resume=False)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % (2**32))
    trainer.device = resolve_device(config.device)
    trainer._load_data()
    trainer._build_model()
    trainer._build_optimisation()
    return trainer


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


def set_train_images(trainer: _Trainer, n_images: int) -> None:
    """Make one training epoch exactly ``n_images`` long.

    The real training rows are cycled (a small benchmark subset is repeated
    to fill the epoch); the epoch's own shuffle still mixes them. Features of
    a frozen-mode trainer are cycled the same way.
    """
    split = trainer.splits["train"]
    take = np.resize(np.arange(len(split)), n_images)
    trainer.splits["train"] = SplitData(
        name="train",
        frame=split.frame.iloc[take].reset_index(drop=True),
        cache_pos=split.cache_pos[take],
        labels=split.labels[take],
        body=split.body[take],
    )
    if "train" in trainer.features:
        trainer.features["train"] = trainer.features["train"][torch.from_numpy(take).to(trainer.device)]
    trainer.sample_weights = None
    trainer.steps_per_epoch = math.ceil(n_images / trainer.config.batch_size)


def run_epoch(trainer: _Trainer) -> dict[str, float]:
    """One training epoch through the trainer's own loop; its metrics."""
    metrics = trainer._train_epoch(0)
    if metrics is None:
        raise RuntimeError("the benchmark epoch was cancelled")
    return metrics


def ready_batch(trainer: _Trainer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch exactly as the network receives it in training (augmented,
    normalised, on the device, channels_last on CUDA): the step-alone input."""
    size = trainer.config.batch_size
    positions = np.resize(np.arange(len(trainer.splits["train"])), size)
    inputs, labels, body = trainer._fetch_train(positions)
    return model_inputs(trainer, inputs), labels.to(trainer.device), body.to(trainer.device)


def model_inputs(trainer: _Trainer, fetched: torch.Tensor) -> torch.Tensor:
    """What the training loop does to a fetched finetune batch before the network:
    move it to the device, convert it to float, augment and normalise it."""
    return trainer._prepare_inputs(trainer._to_device(fetched), train=True)


def model_step(trainer: _Trainer, inputs: torch.Tensor, labels: torch.Tensor, body: torch.Tensor) -> float:
    """One optimiser step of the trainer's model on a ready batch; the loss.

    The same autocast, loss, scaler and optimiser as the training loop; the
    loss is read back (as the loop does every step), which also waits for CUDA.
    """
    with torch.autocast(trainer.device.type, dtype=trainer.amp_dtype or torch.float32,
                        enabled=trainer.amp_dtype is not None):
        if trainer.config.mode == "frozen":
            logit, body_logits = trainer.model.forward_head(inputs, body_part=body)
        else:
            logit, body_logits = trainer.forward_model(inputs, body_part=body)
        loss = trainer._loss(logit, body_logits, labels, body)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    return float(loss.detach())


def device_info(device: torch.device) -> dict[str, Any]:
    """Name and thread settings of the device a benchmark ran on."""
    info: dict[str, Any] = {"device": str(device), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info
