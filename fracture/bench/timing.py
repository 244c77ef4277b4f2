"""Shared timing helpers: warm-up excluded, repeats interleaved, medians reported.

Every benchmark compares a figure with its floor measured in the same run, so
both are timed by :func:`interleaved`: after the warm-up calls, one call of
each contender per round, round after round. A burst of background load then
hits both sides instead of one, and the ratio of the medians stays honest on a
shared machine.
"""
from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


def sync(device: Any = None) -> None:
    """Wait for queued CUDA work so a timer sees it finish; a no-op on CPU."""
    import torch

    if device is not None and getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: Any = None) -> float:
    """Seconds one ``fn()`` takes, by ``time.perf_counter`` (CUDA work included)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(
    contenders: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 1,
    device: Any = None,
) -> dict[str, list[float]]:
    """Time each contender ``repeats`` times, alternating between them.

    Args:
        contenders: name -> a call with no arguments (the thing to time).
        repeats: timed calls of each contender (at least 1).
        warmup: untimed calls of each contender first (allocators, caches,
            cuDNN autotuning, lazy imports).
        device: a CUDA device to synchronise around each call, or None.

    Returns:
        name -> the ``repeats`` durations in seconds, in call order.

    Raises:
        ValueError: ``repeats`` below 1 or ``warmup`` below 0.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            samples[name].append(time_call(fn, device))
    return samples


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished children: beside wall time, the fairer
    figure for a child process on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median(values: Sequence[float]) -> float:
    """The median; NaN for an empty sequence."""
    return float(np.median(values)) if len(values) else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation); NaN for an empty sequence."""
    return float(np.percentile(values, q)) if len(values) else math.nan


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when the denominator is 0 or either is NaN."""
    if denominator == 0 or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return float(numerator / denominator)


def summarize(samples: Sequence[float], *, items: int = 1) -> dict[str, Any]:
    """JSON-able summary of repeated timings of a call that handles ``items`` things.

    Returns:
        ``{"seconds": [...], "median_s", "min_s", "max_s", "items",
        "items_per_s"}``; ``items_per_s`` is ``items / median_s``.
    """
    med = median(samples)
    return {
        "seconds": [round(float(s), 6) for s in samples],
        "median_s": med,
        "min_s": float(min(samples)) if samples else math.nan,
        "max_s": float(max(samples)) if samples else math.nan,
        "items": int(items),
        "items_per_s": ratio(items, med),
    }
