"""Input-pipeline throughput vs the model's own training step.

The pipeline is everything the training loop does to a batch before the
network: :meth:`TrainLoop.fetch` (the uint8 copy out of the cache),
the move to the device, the conversion to float, the batch augmentation and
the normalisation, run back to back on one thread with nothing overlapped.
The prefetch thread hides the cache copy; the rest runs in the loop, so on
the CPU this ratio says how much a step pays for it (a ratio of 60 costs a
step 1/60 of its time).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fracture.bench.harness import model_inputs
from fracture.bench.timing import interleaved, ratio, summarize

GOAL = 1.0  # the pipeline must produce images at least as fast as the step eats them


def bench_input_pipeline(trainer, *, batches: int, repeats: int, step_images_per_s: float) -> dict[str, Any]:
    """Time ``batches`` batches of cache read + conversion + augmentation + normalisation.

    Args:
        trainer: a finetune trainer from :func:`fracture.bench.harness.build_trainer`.
        batches: batches per timed sample.
        repeats: timed samples.
        step_images_per_s: the model-step-alone rate measured in the same run.

    Returns:
        The pipeline rate, the ratio pipeline/step and the goal.
    """
    size = trainer.config.batch_size
    n_train = len(trainer.data.splits["train"])
    rng = np.random.default_rng(0)

    def run() -> None:
        for _ in range(batches):
            positions = rng.integers(0, n_train, size)
            inputs, _labels, _body, _guide = trainer.fetch(positions)
            model_inputs(trainer, inputs)

    samples = interleaved({"pipeline": run}, repeats=repeats, warmup=1, device=trainer.device)
    pipeline = summarize(samples["pipeline"], items=batches * size)
    value = ratio(pipeline["items_per_s"], step_images_per_s)
    return {
        "batch_size": size,
        "batches": batches,
        "device": str(trainer.device),
        "pipeline": pipeline,
        "step_images_per_s": step_images_per_s,
        "ratio": value,
        "ratio_means": "input pipeline images/s on one thread / model step alone images/s (>= 1: not the bottleneck)",
        "goal": f">= {GOAL}",
        "goal_met": bool(value >= GOAL),
    }
