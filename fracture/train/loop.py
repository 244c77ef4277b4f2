"""The training loop: steps, epochs, validation.

One batch's flow is :meth:`TrainLoop.train_step`: fetched uint8 images (read
on the prefetch thread) -> to the device -> augmented -> channels matched and
normalised -> forward -> loss -> backward and optimiser step. In ``frozen``
mode the "images" are cached backbone features and only the heads run.

Under torchrun every rank walks the same epoch order and steps on its slice
of each global batch (:mod:`fracture.train.batches`); validation probabilities
are predicted per rank on a slice of the split and gathered, so every rank
computes the same metrics and takes the same early-stopping and schedule
decisions.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from fracture.serve.inference import (
    InputSpec, head_probs, iterate_batches, match_channels, normalize_batch, predict_batches, uint8_to_float,
)
from fracture.train.augment import BatchAugment
from fracture.train.box_guidance import box_loss
from fracture.train.batches import epoch_indices, pad_to_world, rank_slice
from fracture.recipes.config import TrainConfig
from fracture.train.data import TrainData
from fracture.train.distributed import DistContext
from fracture.train.loss import fracture_loss
from fracture.train.optim import Optimisation

STEP_EVENT_INTERVAL_S = 0.5


@dataclass
class TrainLoop:
    """A model, its data and its optimiser, stepping through epochs."""

    config: TrainConfig
    device: torch.device
    model: torch.nn.Module  # the plain model (checkpoints, validation)
    forward_model: torch.nn.Module  # what training calls: DDP- and/or compile-wrapped model
    input_spec: InputSpec
    data: TrainData
    optim: Optimisation
    augment: BatchAugment
    sampler: torch.Generator  # the epoch order's generator
    emit: Callable[..., Any]
    stop: threading.Event
    dist: DistContext = field(default_factory=DistContext)
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # frozen mode
    pos_weight: torch.Tensor | None = None
    sample_weights: np.ndarray | None = None
    box_masks: tuple[torch.Tensor, torch.Tensor] | None = None  # (masks, has_box) of the train split
    ema: Any = None  # timm ModelEmaV3 when ema_decay > 0

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validated and saved: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def frozen(self) -> bool:
        return self.config.mode == "frozen"

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.data.splits["train"]) // self.config.batch_size)

    # ----------------------------------------------------------- one batch
    def fetch(self, positions: np.ndarray) -> tuple:
        """One (rank's) training batch as uint8 images, read on the prefetch thread while the model steps.

        Only the memory-map copy happens here (numpy, no torch kernels): on a
        CPU, torch kernels on a second thread start a second OpenMP team that
        fights the step's threads for the same cores (20% of the loop's rate on
        2 cores, see ``fracture.bench.train_loop``). On CUDA the batch goes into
        pinned memory and crosses the bus as uint8.
        """
        split = self.data.splits["train"]
        labels = torch.from_numpy(split.labels[positions])
        body = torch.from_numpy(split.body[positions])
        if self.frozen:
            return self.features["train"][torch.from_numpy(positions).to(self.device)], labels, body, None
        images = torch.from_numpy(self.data.cache.get_batch(split.cache_pos[positions]))
        guide = None
        if self.box_masks is not None:  # box masks ride along with their images
            index = torch.from_numpy(positions)
            guide = (self.box_masks[0][index], self.box_masks[1][index])
        if self.device.type == "cuda":
            return images.pin_memory(), labels.pin_memory(), body.pin_memory(), guide
        return images, labels, body, guide

    def fetch_shard(self, positions: np.ndarray) -> tuple:
        """This rank's slice of a global batch, and ``(global size, rows)`` for the augmentation draw."""
        positions = pad_to_world(positions, self.dist.world_size)
        rows = rank_slice(len(positions), self.dist.rank, self.dist.world_size)
        return (*self.fetch(positions[rows]), (len(positions), rows))

    def to_device(self, inputs: torch.Tensor) -> torch.Tensor:
        """A fetched batch on the device; uint8 images become float in [0, 1] there, channels as cached."""
        inputs = inputs.to(self.device, non_blocking=True)
        return uint8_to_float(inputs) if inputs.dtype == torch.uint8 else inputs

    def prepare_inputs(self, inputs: torch.Tensor, *, draw: int | None = None, rows: slice | None = None,
                       masks: torch.Tensor | None = None):
        """Float images in [0, 1] -> training input: augmented, channels matched, normalised,
        channels_last on CUDA. Augmenting before a gray image becomes three channels does a third of the work.
        With box ``masks``, they get the same flip/affine and ``(inputs, masks)`` is returned."""
        if masks is not None:
            inputs, masks = self.augment(inputs, masks, draw=draw, rows=rows)
        else:
            inputs = self.augment(inputs, draw=draw, rows=rows)
        inputs = match_channels(inputs, self.config.in_chans)
        inputs = normalize_batch(inputs, self.input_spec.mean, self.input_spec.std)
        if self.device.type == "cuda" and self.config.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs if masks is None else (inputs, masks)

    def forward(self, inputs: torch.Tensor, body: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training forward of ready inputs (images, or features in frozen mode)."""
        return self.forward_model(inputs, body_part=body)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        opt = self.optim
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        if opt.step_scheduler is not None:
            opt.step_scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def train_step(self, inputs, labels, body, draw: tuple[int, slice] | None = None,
                   guide: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch flow: to device -> augment -> forward -> loss -> step.

        With ``guide`` (box masks and has-box flags), the forward also returns the
        class-activation map and the box-guidance term joins the loss.

        Returns:
            ``(loss, correct)``: the detached loss and the number of correct
            predictions at logit 0, both still on the device.
        """
        inputs = self.to_device(inputs)
        labels = labels.to(self.device, non_blocking=True)
        body = body.to(self.device, non_blocking=True)
        masks = None
        if not self.frozen:
            size, rows = draw if draw is not None else (None, None)
            if guide is not None:
                masks = guide[0].to(self.device, non_blocking=True).float()
                inputs, masks = self.prepare_inputs(inputs, draw=size, rows=rows, masks=masks)
            else:
                inputs = self.prepare_inputs(inputs, draw=size, rows=rows)
        amp = self.optim.amp_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            if masks is not None:
                logit, body_logits, cam = self.forward_model(inputs, body_part=body, with_cam=True)
                loss = fracture_loss(logit, body_logits, labels, body, pos_weight=self.pos_weight)
                loss = loss + self.config.box_loss_weight * box_loss(cam, masks, guide[1].to(self.device))
            else:
                logit, body_logits = self.forward(inputs, body)
                loss = fracture_loss(logit, body_logits, labels, body, pos_weight=self.pos_weight)
        self.optimizer_step(loss)
        return loss.detach(), ((logit.detach() > 0).float() == labels).sum()

    # ----------------------------------------------------------- one epoch
    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        """One pass over the training split; its loss and accuracy (over all ranks), None when stopped."""
        cfg = self.config
        self.model.train()
        if self.frozen:
            self.model.backbone.eval()
        n_train = len(self.data.splits["train"])
        order = epoch_indices(n_train, shuffle=True, generator=self.sampler, sample_weights=self.sample_weights)
        total_loss, total_correct, total_seen = 0.0, 0, 0
        last_event, ema_rate = 0.0, None
        step_start = time.perf_counter()
        batches = _global_batches(len(order), cfg.batch_size, self.dist.world_size)
        for step, (inputs, labels, body, guide, draw) in enumerate(
            iterate_batches(order, cfg.batch_size, self.fetch_shard), start=1
        ):
            if self.dist.any(self.stop.is_set(), self.device):
                return None
            loss, correct = self.train_step(inputs, labels, body, draw, guide)
            n = labels.shape[0]
            loss_value = float(loss)
            total_loss += loss_value * n
            total_correct += int(correct)
            total_seen += n
            now = time.perf_counter()
            rate = batches[step - 1] / max(1e-9, now - step_start)
            step_start = now
            ema_rate = rate if ema_rate is None else 0.8 * ema_rate + 0.2 * rate
            if now - last_event >= STEP_EVENT_INTERVAL_S or step == self.steps_per_epoch:
                last_event = now
                steps_left = (cfg.epochs - epoch) * self.steps_per_epoch - step
                self.emit(
                    "step", epoch=epoch, step=step, steps_per_epoch=self.steps_per_epoch, loss=loss_value,
                    images_per_s=round(ema_rate, 2), eta_s=round(steps_left * cfg.batch_size / max(ema_rate, 1e-9), 1),
                    lr=self.optim.lr,
                )
        total_loss, total_correct, total_seen = self.dist.sum([total_loss, total_correct, total_seen], self.device)
        return {"train_loss": total_loss / max(1, total_seen), "train_accuracy": total_correct / max(1, total_seen)}

    # ----------------------------------------------------------- prediction
    def predict_split(self, name: str, model: torch.nn.Module | None = None, *, shard: bool = True) -> np.ndarray:
        """Probabilities for one split with the current (or given) weights.

        With ``shard`` under torchrun each rank predicts a contiguous slice and
        the slices are gathered (every rank gets the whole array).
        """
        model = model or self.eval_model
        split = self.data.splits[name]
        rows = rank_slice(len(split), self.dist.rank, self.dist.world_size) if shard else slice(0, len(split))
        body = split.body[rows] if getattr(model, "num_body_parts", 0) else None
        n = len(split.labels[rows])
        if n == 0:
            probs = np.zeros(0)
        elif self.frozen:
            body_t = torch.from_numpy(body).to(self.device) if body is not None else None
            probs, _ = head_probs(model, self.features[name][rows], body_t)
        else:
            cache_pos = split.cache_pos[rows]
            probs, _ = predict_batches(
                model, lambda p: self.data.cache.get_batch(cache_pos[p]), n, self.input_spec,
                device=self.device, batch_size=max(self.config.batch_size, 32), body_parts=body,
                tta_hflip=self.config.tta_hflip, amp=self.config.amp,
            )
        return self.dist.concat(probs) if shard else probs

    def validate(self) -> tuple[dict[str, float], np.ndarray]:
        """Validation loss, accuracy, ROC AUC and kappa at 0.5 (the same numbers on every rank)."""
        from fracture.evaluate.metrics import binary_metrics

        self.dist.sync_buffers(self.model)
        labels = self.data.splits["val"].labels
        probs = self.predict_split("val")
        clipped = np.clip(probs, 1e-7, 1 - 1e-7)
        loss = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
        metrics = binary_metrics(labels.astype(int), probs, threshold=0.5)
        return {
            "val_loss": loss,
            "val_accuracy": metrics["accuracy"],
            "val_roc_auc": metrics["roc_auc"],  # None when val has one class
            "val_kappa": metrics["cohen_kappa"],
        }, probs


def _global_batches(n_items: int, batch_size: int, world_size: int) -> list[int]:
    """Images each step consumes over all ranks (a batch padded to one image per rank counts as padded)."""
    return [max(min(batch_size, n_items - i), world_size) for i in range(0, n_items, batch_size)]

