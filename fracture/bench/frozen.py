"""Frozen-mode epoch time with a warm feature cache (only the heads train).

A frozen run computes the backbone's pooled features once and keeps them on
disk; a second run with the same model, weights and images loads them. Here
one trainer computes them (cold, timed once, for context), a second one
loads them (warm), and its epochs are timed against the floor: the same
head steps on the feature batches already in memory.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from fracture.bench.harness import build_trainer, device_info, model_step, run_epoch, set_train_images
from fracture.bench.timing import interleaved, ratio, summarize

_WARM_MESSAGE = "frozen features from cache"


def bench_frozen_epoch(config, work_dir: Path, *, repeats: int, epoch_images: int) -> dict[str, Any]:
    """Time frozen-mode epochs of ``epoch_images`` images with warm features.

    Args:
        config: a TrainConfig with ``mode="frozen"`` (image cache already warm).
        work_dir: scratch folder for the two runs' event logs.
        repeats: timed epochs.
        epoch_images: images per epoch (the train split is cycled to this size).

    Returns:
        Cold extraction and warm set-up times, epoch time, head-step floor, ratio.
    """
    started = time.perf_counter()
    build_trainer(config, Path(work_dir) / "frozen-cold")
    cold_s = time.perf_counter() - started

    messages: list[str] = []
    started = time.perf_counter()
    trainer = build_trainer(
        config, Path(work_dir) / "frozen-warm",
        callback=lambda event: messages.append(str(event.get("message", ""))),
    )
    warm_s = time.perf_counter() - started
    warm_hit = any(m.startswith(_WARM_MESSAGE) for m in messages)
    if not warm_hit:
        raise RuntimeError("the second frozen-mode trainer did not load its features from the cache")

    set_train_images(trainer, epoch_images)
    size = config.batch_size
    features = trainer.features["train"]
    split = trainer.data.splits["train"]
    labels = torch.from_numpy(split.labels).to(trainer.device)
    body = torch.from_numpy(split.body).to(trainer.device)
    batches = [
        (features[i : i + size], labels[i : i + size], body[i : i + size])
        for i in range(0, epoch_images, size)
    ]

    def head_steps() -> None:
        for batch in batches:
            model_step(trainer, *batch)

    trainer.model.train()
    trainer.model.backbone.eval()
    samples = interleaved(
        {"epoch": lambda: run_epoch(trainer), "head_steps": head_steps},
        repeats=repeats, warmup=1, device=trainer.device,
    )
    epoch, floor = summarize(samples["epoch"], items=epoch_images), summarize(samples["head_steps"], items=epoch_images)
    return {
        "model": config.model,
        "image_size": config.image_size,
        "batch_size": size,
        "epoch_images": epoch_images,
        "feature_dim": int(features.shape[1]),
        **device_info(trainer.device),
        "cold_setup_s": cold_s,
        "cold_setup_means": "trainer set-up that extracts the features (one run, not repeated)",
        "warm_setup_s": warm_s,
        "warm_setup_means": "trainer set-up that loads the features from the cache (one run)",
        "epoch": epoch,
        "head_steps": floor,
        "ratio": ratio(epoch["median_s"], floor["median_s"]),
        "ratio_means": "frozen epoch time / the same head steps on in-memory features (lower is better)",
    }
