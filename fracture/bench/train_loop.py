"""Training images/s: the trainer's whole loop vs the model step alone.

The loop is :meth:`TrainLoop.train_epoch` itself: batches come from the image
cache on the prefetch thread, are converted, augmented and normalised, and go
through forward, backward and the optimiser, with the loop's own bookkeeping
(loss read-back, accuracy, step events). The floor is the same model,
optimiser, loss and autocast stepping on one batch that was prepared
beforehand (augmented and normalised, on the device), so nothing but the
input pipeline and the loop's bookkeeping separates the two. Both sides run
the same number of steps per sample, interleaved.
"""
from __future__ import annotations

import logging
from typing import Any

from fracture.bench.harness import device_info, model_step, ready_batch, run_epoch, set_train_images
from fracture.bench.timing import interleaved, ratio, summarize

logger = logging.getLogger(__name__)

GOAL = 0.9  # loop rate at least 90% of the step-alone rate


def bench_train_loop(trainer, *, steps: int, repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Time ``steps`` training steps through the loop and on a ready batch.

    Args:
        trainer: from :func:`fracture.bench.harness.build_trainer` (finetune mode).
        steps: steps per timed sample (one epoch of ``steps * batch_size`` images).
        repeats: timed samples of each side.
        warmup: untimed samples of each side first.

    Returns:
        Rates (images/s), the ratio loop/step and the goal.
    """
    cfg = trainer.config
    n_images = steps * cfg.batch_size
    set_train_images(trainer, n_images)
    inputs, labels, body = ready_batch(trainer)
    trainer.model.train()

    def steps_alone() -> None:
        for _ in range(steps):
            model_step(trainer, inputs, labels, body)

    samples = interleaved(
        {"loop": lambda: run_epoch(trainer), "step": steps_alone},
        repeats=repeats, warmup=warmup, device=trainer.device,
    )
    loop, step = summarize(samples["loop"], items=n_images), summarize(samples["step"], items=n_images)
    value = ratio(loop["items_per_s"], step["items_per_s"])
    return {
        "model": cfg.model,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "steps": steps,
        "amp": str(trainer.optim.amp_dtype).replace("torch.", "") if trainer.optim.amp_dtype else None,
        "channels_last": bool(trainer.device.type == "cuda" and cfg.channels_last),
        **device_info(trainer.device),
        "loop": loop,
        "step": step,
        "ratio": value,
        "ratio_means": "training loop images/s / model step alone images/s (higher is better, 1 = no overhead)",
        "goal": f">= {GOAL}",
        "goal_met": bool(value >= GOAL),
    }
